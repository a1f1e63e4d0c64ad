//! The `system` agent: small, deterministic actions for tests, demos and
//! benchmarks. Its id and action names are part of baton's public contract.
//!
//! - `noop`: returns `null`.
//! - `echo`: returns `{"input": ..., "dependencies": {...}}`.
//! - `sleep`: input `{"ms": N}`; waits N ms, returns `{"sleptMs": N}`.
//! - `fail`: input `{"times": N, "permanent": false, "message": "..."}`; fails
//!   the first N attempts of the step, then returns `{"attempts": K}`;
//!   `permanent: true` fails for good on the first attempt.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::{Agent, AgentCall, AgentError};

/// Longest `sleep` accepted: a day, far past any sane demo.
const MAX_SLEEP_MS: u64 = 86_400_000;

pub struct SystemAgent;

impl Agent for SystemAgent {
    fn id(&self) -> &str {
        "system"
    }

    fn actions(&self) -> Vec<&str> {
        vec!["noop", "echo", "sleep", "fail"]
    }

    fn check_input(&self, action: &str, input: &Value) -> Result<(), String> {
        match action {
            "sleep" => sleep_ms(input).map(|_| ()),
            "fail" => FailSpec::parse(input).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn call<'a>(&'a self, call: AgentCall<'a>) -> BoxFuture<'a, Result<Value, AgentError>> {
        // noop and echo need no await: skip the boxed async state machine's
        // timer and allocation work beyond the one Box.
        match call.action {
            "noop" => Box::pin(std::future::ready(Ok(Value::Null))),
            "echo" => Box::pin(std::future::ready(Ok(json!({
                "input": call.input,
                "dependencies": call.dependencies,
            })))),
            "sleep" => Box::pin(async move {
                let ms = sleep_ms(call.input).map_err(AgentError::permanent)?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!({ "sleptMs": ms }))
            }),
            "fail" => Box::pin(std::future::ready(fail(&call))),
            other => Box::pin(std::future::ready(Err(AgentError::permanent(format!(
                "system agent has no action '{other}'"
            ))))),
        }
    }
}

fn sleep_ms(input: &Value) -> Result<u64, String> {
    let ms = input
        .get("ms")
        .ok_or("expected {\"ms\": N} with N a non-negative integer")?;
    let ms = ms
        .as_u64()
        .ok_or_else(|| format!("`ms` must be a non-negative integer, got {ms}"))?;
    if ms > MAX_SLEEP_MS {
        return Err(format!("`ms` is {ms}, over the limit of {MAX_SLEEP_MS}"));
    }
    Ok(ms)
}

struct FailSpec {
    times: u64,
    permanent: bool,
    message: Option<String>,
}

impl FailSpec {
    fn parse(input: &Value) -> Result<FailSpec, String> {
        let obj = match input {
            Value::Null => {
                return Ok(FailSpec {
                    times: 1,
                    permanent: false,
                    message: None,
                })
            }
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "expected an object like {{\"times\": 1}}, got {other}"
                ))
            }
        };
        let times = match obj.get("times") {
            None => 1,
            Some(t) => t
                .as_u64()
                .ok_or_else(|| format!("`times` must be a non-negative integer, got {t}"))?,
        };
        let permanent = match obj.get("permanent") {
            None => false,
            Some(p) => p
                .as_bool()
                .ok_or_else(|| format!("`permanent` must be a boolean, got {p}"))?,
        };
        let message = match obj.get("message") {
            None => None,
            Some(Value::String(m)) => Some(m.clone()),
            Some(m) => return Err(format!("`message` must be a string, got {m}")),
        };
        Ok(FailSpec {
            times,
            permanent,
            message,
        })
    }
}

fn fail(call: &AgentCall<'_>) -> Result<Value, AgentError> {
    let spec = FailSpec::parse(call.input).map_err(AgentError::permanent)?;
    let attempt = u64::from(call.attempt);
    let message = || {
        spec.message.clone().unwrap_or_else(|| {
            format!(
                "system.fail: attempt {attempt} of step '{}' failed as asked",
                call.step_id
            )
        })
    };
    if spec.permanent {
        return Err(AgentError::permanent(message()));
    }
    if attempt <= spec.times {
        return Err(AgentError::retryable(message()));
    }
    Ok(json!({ "attempts": attempt }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoEvents;

    fn run(action: &str, input: Value, attempt: u32) -> Result<Value, AgentError> {
        let deps = [(std::sync::Arc::from("a"), json!(1))];
        let call = AgentCall {
            plan_id: "p",
            step_id: "s",
            action,
            input: &input,
            dependencies: crate::Dependencies(&deps),
            attempt,
            events: &NoEvents,
            state: &crate::LocalState::default(),
        };
        futures::executor::block_on(SystemAgent.call(call))
    }

    #[test]
    fn noop_returns_null() {
        assert_eq!(run("noop", Value::Null, 1), Ok(Value::Null));
    }

    #[test]
    fn echo_returns_input_and_dependencies() {
        let out = run("echo", json!({"x": 2}), 1).unwrap();
        assert_eq!(out, json!({"input": {"x": 2}, "dependencies": {"a": 1}}));
    }

    #[test]
    fn fail_fails_the_first_n_attempts_then_reports_the_attempt() {
        let input = json!({"times": 2, "message": "boom"});
        let e = run("fail", input.clone(), 1).unwrap_err();
        assert_eq!(e, AgentError::retryable("boom"));
        assert!(run("fail", input.clone(), 2).unwrap_err().retryable);
        assert_eq!(run("fail", input, 3).unwrap(), json!({"attempts": 3}));
    }

    #[test]
    fn fail_permanent_is_not_retryable() {
        let e = run("fail", json!({"times": 5, "permanent": true}), 1).unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("attempt 1 of step 's'"), "{}", e.message);
    }

    #[test]
    fn inputs_are_checked() {
        let a = SystemAgent;
        assert!(a.check_input("sleep", &json!({"ms": 5})).is_ok());
        assert!(a
            .check_input("sleep", &json!({}))
            .unwrap_err()
            .contains("ms"));
        assert!(a
            .check_input("sleep", &json!({"ms": -1}))
            .unwrap_err()
            .contains("non-negative"));
        assert!(a
            .check_input("fail", &json!({"times": "x"}))
            .unwrap_err()
            .contains("times"));
        assert!(a.check_input("fail", &json!([1])).is_err());
        assert!(a.check_input("noop", &json!([1])).is_ok());
    }
}
