//! Plan validation: turns submitted JSON into a [`ValidPlan`] or into every
//! error it holds at once, each naming its JSON path and the reason.
//!
//! Structure errors are collected per field and per step (one bad step does not
//! hide the others), then the semantic checks (ids, dependencies, cycles,
//! agents, numbers, sizes, nesting) run over everything that parsed.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::*;

/// Knows which agents and actions exist and what input an action accepts.
/// Implemented by the agent registry; validation stays free of I/O.
pub trait Catalog {
    /// `Err(problem)` when the agent or action is unknown or the input is
    /// unacceptable.
    fn check(&self, agent_id: &str, action: &str, input: &Value) -> Result<(), ActionProblem>;
}

/// Why a catalog refused a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionProblem {
    UnknownAgent { known: Vec<String> },
    UnknownAction { known: Vec<String> },
    BadInput(String),
}

/// Size and range limits a plan must stay within.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_steps: usize,
    pub max_plan_bytes: usize,
    pub max_input_bytes: usize,
    pub max_fallback_depth: usize,
    pub max_timeout_ms: u64,
    pub max_retries: u32,
    pub max_backoff_ms: u64,
    pub max_id_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 1_000,
            max_plan_bytes: 4 << 20,
            max_input_bytes: 256 << 10,
            max_fallback_depth: 3,
            max_timeout_ms: 7 * 24 * 3_600_000,
            max_retries: 100,
            max_backoff_ms: 24 * 3_600_000,
            max_id_len: 128,
        }
    }
}

/// One thing wrong with a plan, at a JSON path such as `$.steps[2].timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every error found in a plan (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl PlanErrors {
    fn single(path: &str, message: impl Into<String>) -> Self {
        PlanErrors(vec![PlanError {
            path: path.to_string(),
            message: message.into(),
        }])
    }
}

/// Parses plan JSON text and validates it.
pub fn parse_and_validate(
    text: &str,
    catalog: &dyn Catalog,
    limits: &Limits,
) -> Result<ValidPlan, PlanErrors> {
    if text.len() > limits.max_plan_bytes {
        return Err(PlanErrors::single(
            "$",
            format!(
                "plan is {} bytes, over the limit of {} bytes",
                text.len(),
                limits.max_plan_bytes
            ),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        PlanErrors::single(
            "$",
            format!(
                "malformed JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ),
        )
    })?;
    validate_value(&value, catalog, limits)
}

/// Validates a plan already parsed into a JSON value.
pub fn validate_value(
    value: &Value,
    catalog: &dyn Catalog,
    limits: &Limits,
) -> Result<ValidPlan, PlanErrors> {
    let mut errs = Vec::new();
    let plan = check_plan_value(value, "$", 0, catalog, limits, &mut errs);
    match plan {
        Some(p) if errs.is_empty() => Ok(p),
        _ => Err(PlanErrors(errs)),
    }
}

/// Validates a typed plan document (for plans built in Rust).
pub fn validate(
    doc: &PlanDoc,
    catalog: &dyn Catalog,
    limits: &Limits,
) -> Result<ValidPlan, PlanErrors> {
    let value = serde_json::to_value(doc).expect("a PlanDoc always serialises");
    validate_value(&value, catalog, limits)
}

fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

fn push(errs: &mut Vec<PlanError>, path: impl Into<String>, message: impl Into<String>) {
    errs.push(PlanError {
        path: path.into(),
        message: message.into(),
    });
}

/// Deserialises `value` as `T`, reporting a failure at `base` + serde's inner path.
fn parse_at<T: for<'de> Deserialize<'de>>(
    value: &Value,
    base: &str,
    errs: &mut Vec<PlanError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                base.to_string()
            } else if inner.starts_with('[') {
                format!("{base}{inner}")
            } else {
                format!("{base}.{inner}")
            };
            push(errs, path, e.into_inner().to_string());
            None
        }
    }
}

fn check_plan_value(
    value: &Value,
    path: &str,
    depth: usize,
    catalog: &dyn Catalog,
    limits: &Limits,
    errs: &mut Vec<PlanError>,
) -> Option<ValidPlan> {
    let Some(obj) = value.as_object() else {
        push(
            errs,
            path,
            format!("a plan must be a JSON object, got {}", kind_of(value)),
        );
        return None;
    };

    // Parse the header on its own so that step errors are reported per step.
    let mut header = obj.clone();
    header.insert("steps".into(), Value::Array(vec![]));
    header.remove("fallbackPlan");
    let header: Option<PlanDoc> = parse_at(&Value::Object(header), path, errs);

    let raw_steps: &[Value] = match obj.get("steps") {
        None => {
            push(
                errs,
                format!("{path}.steps"),
                "missing: a plan needs a `steps` array",
            );
            &[]
        }
        Some(Value::Array(a)) => a,
        Some(other) => {
            push(
                errs,
                format!("{path}.steps"),
                format!("must be an array of steps, got {}", kind_of(other)),
            );
            &[]
        }
    };
    if obj
        .get("steps")
        .is_some_and(|s| s.as_array().is_some_and(|a| a.is_empty()))
    {
        push(
            errs,
            format!("{path}.steps"),
            "a plan needs at least one step",
        );
    }
    if raw_steps.len() > limits.max_steps {
        push(
            errs,
            format!("{path}.steps"),
            format!(
                "{} steps, over the limit of {}",
                raw_steps.len(),
                limits.max_steps
            ),
        );
        return None;
    }

    let mut steps: Vec<Option<StepDoc>> = Vec::with_capacity(raw_steps.len());
    for (i, raw) in raw_steps.iter().enumerate() {
        steps.push(parse_at(raw, &format!("{path}.steps[{i}]"), errs));
    }

    let fallback = match obj.get("fallbackPlan") {
        None | Some(Value::Null) => None,
        Some(fb) => {
            let fb_path = format!("{path}.fallbackPlan");
            if depth + 1 > limits.max_fallback_depth {
                push(
                    errs,
                    fb_path,
                    format!(
                        "fallback plans nested {} deep, over the limit of {}",
                        depth + 1,
                        limits.max_fallback_depth
                    ),
                );
                None
            } else {
                check_plan_value(fb, &fb_path, depth + 1, catalog, limits, errs).map(Box::new)
            }
        }
    };

    // A header that failed to parse is already reported; keep checking the
    // steps (with `parallel` read from the raw value when it is a boolean) so
    // that its error does not hide theirs.
    let parallel = match &header {
        Some(h) => h.parallel,
        None => obj.get("parallel").and_then(Value::as_bool).unwrap_or(true),
    };
    let mut timeout_ms = None;
    if let Some(header) = &header {
        if let Some(id) = &header.id {
            check_id(id, &format!("{path}.id"), limits, errs);
        }
        timeout_ms = header.timeout.and_then(|t| {
            check_ms(
                t,
                1,
                limits.max_timeout_ms,
                &format!("{path}.timeout"),
                errs,
            )
        });
    }

    // Ids that exist, even in steps that failed to parse, so that a bad step
    // does not turn every reference to it into a second, misleading error.
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in raw_steps.iter().enumerate() {
        let Some(id) = raw.get("id").and_then(Value::as_str) else {
            continue;
        };
        if let Some(first) = index_of.get(id) {
            push(
                errs,
                format!("{path}.steps[{i}].id"),
                format!("duplicate step id '{id}' (first used at {path}.steps[{first}])"),
            );
        } else {
            index_of.insert(id, i);
        }
    }

    let mut valid_steps = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let Some(step) = step else { continue };
        let sp = format!("{path}.steps[{i}]");
        if let Some(v) = check_step(step, i, &sp, parallel, &index_of, catalog, limits, errs) {
            valid_steps.push(v);
        }
    }

    // Look for cycles over every step's known dependencies, including steps
    // with other errors, so that a cycle is not revealed only after those are
    // fixed. Unknown, self and repeated dependencies are reported above.
    let edges: Vec<Vec<usize>> = raw_steps
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let mut deps = Vec::new();
            let names = raw.get("dependencies").and_then(Value::as_array);
            for dep in names.into_iter().flatten().filter_map(Value::as_str) {
                if let Some(&d) = index_of.get(dep) {
                    if d != i && !deps.contains(&d) {
                        deps.push(d);
                    }
                }
            }
            deps
        })
        .collect();
    let ids: Vec<&str> = raw_steps
        .iter()
        .map(|raw| raw.get("id").and_then(Value::as_str).unwrap_or(""))
        .collect();
    report_cycles(&edges, &ids, path, errs);

    let header = header?;
    if valid_steps.len() != raw_steps.len() {
        return None;
    }
    for i in 0..valid_steps.len() {
        for j in 0..valid_steps[i].dependencies.len() {
            let d = valid_steps[i].dependencies[j];
            valid_steps[d].dependents.push(i);
        }
    }

    Some(ValidPlan {
        id: header.id,
        steps: valid_steps.into_iter().map(Arc::new).collect(),
        parallel: header.parallel,
        timeout_ms,
        fail_fast: header.fail_fast,
        fallback,
    })
}

#[allow(clippy::too_many_arguments)]
fn check_step(
    step: &StepDoc,
    index: usize,
    sp: &str,
    parallel: bool,
    index_of: &HashMap<&str, usize>,
    catalog: &dyn Catalog,
    limits: &Limits,
    errs: &mut Vec<PlanError>,
) -> Option<ValidStep> {
    let before = errs.len();
    check_id(&step.id, &format!("{sp}.id"), limits, errs);

    let kind = match (&step.agent_id, &step.action) {
        (Some(agent_id), Some(action)) => {
            match catalog.check(agent_id, action, &step.input) {
                Ok(()) => {}
                Err(ActionProblem::UnknownAgent { known }) => push(
                    errs,
                    format!("{sp}.agentId"),
                    format!("unknown agent '{agent_id}' (known: {})", known.join(", ")),
                ),
                Err(ActionProblem::UnknownAction { known }) => push(
                    errs,
                    format!("{sp}.action"),
                    format!(
                        "agent '{agent_id}' has no action '{action}' (its actions: {})",
                        known.join(", ")
                    ),
                ),
                Err(ActionProblem::BadInput(why)) => push(
                    errs,
                    format!("{sp}.input"),
                    format!("bad input for {agent_id}.{action}: {why}"),
                ),
            }
            StepKind::Agent {
                agent_id: Arc::from(agent_id.as_str()),
                action: Arc::from(action.as_str()),
            }
        }
        (None, None) => StepKind::Join,
        (Some(_), None) => {
            push(
                errs,
                format!("{sp}.action"),
                "missing: a step with an agentId needs an action (a join step has neither)",
            );
            StepKind::Join
        }
        (None, Some(_)) => {
            push(
                errs,
                format!("{sp}.agentId"),
                "missing: a step with an action needs an agentId (a join step has neither)",
            );
            StepKind::Join
        }
    };

    let input_bytes = serde_json::to_vec(&step.input).map_or(0, |v| v.len());
    if input_bytes > limits.max_input_bytes {
        push(
            errs,
            format!("{sp}.input"),
            format!(
                "input is {input_bytes} bytes, over the limit of {} bytes",
                limits.max_input_bytes
            ),
        );
    }

    let mut dependencies = Vec::with_capacity(step.dependencies.len());
    for (j, dep) in step.dependencies.iter().enumerate() {
        let dp = format!("{sp}.dependencies[{j}]");
        match index_of.get(dep.as_str()) {
            None => push(errs, dp, format!("unknown step '{dep}'")),
            Some(&d) if d == index => push(errs, dp, format!("step '{dep}' depends on itself")),
            Some(&d) if dependencies.contains(&d) => {
                push(errs, dp, format!("step '{dep}' is listed twice"))
            }
            Some(&d) => {
                if !parallel && d > index {
                    push(
                        errs,
                        dp,
                        format!(
                            "in a sequential plan (parallel: false) a step can only depend on steps listed before it; '{dep}' comes after"
                        ),
                    );
                }
                dependencies.push(d);
            }
        }
    }

    let retry = match &step.retry_policy {
        None => RetryPolicy::NONE,
        Some(r) => {
            let rp = format!("{sp}.retryPolicy");
            let max_retries = check_ms(
                r.max_retries,
                0,
                u64::from(limits.max_retries),
                &format!("{rp}.maxRetries"),
                errs,
            )
            .unwrap_or(0) as u32;
            let backoff_ms = check_ms(
                r.backoff_ms,
                0,
                limits.max_backoff_ms,
                &format!("{rp}.backoffMs"),
                errs,
            )
            .unwrap_or(0);
            let max_backoff_ms = r.max_backoff_ms.and_then(|m| {
                check_ms(
                    m,
                    0,
                    limits.max_backoff_ms,
                    &format!("{rp}.maxBackoffMs"),
                    errs,
                )
            });
            RetryPolicy {
                max_retries,
                backoff_ms,
                strategy: r.strategy,
                max_backoff_ms,
                jitter: r.jitter,
            }
        }
    };
    let timeout_ms = step
        .timeout
        .and_then(|t| check_ms(t, 1, limits.max_timeout_ms, &format!("{sp}.timeout"), errs));

    (errs.len() == before).then(|| ValidStep {
        id: Arc::from(step.id.as_str()),
        kind,
        input: step.input.clone(),
        dependencies,
        dependents: Vec::new(),
        retry,
        timeout_ms,
    })
}

fn check_ms(value: i64, min: u64, max: u64, path: &str, errs: &mut Vec<PlanError>) -> Option<u64> {
    if value < 0 || (value as u64) < min || (value as u64) > max {
        push(
            errs,
            path,
            format!("must be between {min} and {max}, got {value}"),
        );
        None
    } else {
        Some(value as u64)
    }
}

fn check_id(id: &str, path: &str, limits: &Limits, errs: &mut Vec<PlanError>) {
    if id.is_empty() {
        push(errs, path, "must not be empty");
    } else if id.chars().count() > limits.max_id_len {
        push(
            errs,
            path,
            format!(
                "is {} characters, over the limit of {}",
                id.chars().count(),
                limits.max_id_len
            ),
        );
    } else if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        push(
            errs,
            path,
            format!("'{id}' contains {bad:?}; ids use letters, digits and _ - . : only"),
        );
    }
}

/// Reports each dependency cycle once, naming its steps in order. `deps[i]`
/// holds the indices step `i` depends on, `ids[i]` its id.
fn report_cycles(deps: &[Vec<usize>], ids: &[&str], path: &str, errs: &mut Vec<PlanError>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    let mut stack: Vec<usize> = Vec::new();
    for root in 0..deps.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS over dependency edges: (node, next edge to look at).
        let mut frames: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnStack;
        stack.push(root);
        while let Some(&mut (node, ref mut edge)) = frames.last_mut() {
            if let Some(&dep) = deps[node].get(*edge) {
                *edge += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::OnStack;
                        stack.push(dep);
                        frames.push((dep, 0));
                    }
                    Mark::OnStack => {
                        let start = stack.iter().position(|&n| n == dep).unwrap_or(0);
                        // The stack runs against the dependency arrows; print
                        // the cycle in execution order: a -> b means b needs a.
                        let mut names = vec![ids[dep]];
                        names.extend(stack[start + 1..].iter().rev().map(|&n| ids[n]));
                        names.push(ids[dep]);
                        let first = stack[start..].iter().min().copied().unwrap_or(dep);
                        push(
                            errs,
                            format!("{path}.steps[{first}].dependencies"),
                            format!("dependency cycle: {}", names.join(" -> ")),
                        );
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
                frames.pop();
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
