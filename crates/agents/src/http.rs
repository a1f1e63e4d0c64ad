//! The `http` agent kind: an agent service in any language, reached over
//! HTTP. Each action is `POST {url}/{action}` with a JSON body
//! `{planId, stepId, action, input, dependencies, attempt}`; the service
//! answers `{"data": ..., "insights": [{"type": ..., "data": ...}]}`
//! (`insights` optional).
//!
//! Failures are classified for the retry policy: timeouts, connection
//! errors, 408, 425, 429 and 5xx are retryable; other 4xx, an answer that
//! is not the JSON envelope, and an answer over the size limit are
//! permanent.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{Agent, AgentCall, AgentError};

/// Settings of one HTTP agent (an `[[agents]]` entry with `kind = "http"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAgentConfig {
    pub id: String,
    /// Base URL; actions are posted to `{url}/{action}`.
    pub url: String,
    /// Actions the service answers (plans naming others are rejected).
    pub actions: Vec<String>,
    /// Queue its steps go to; the agent id when absent.
    #[serde(default)]
    pub queue: Option<String>,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest answer accepted, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_max_response_bytes() -> usize {
    1 << 20
}

/// An agent served over HTTP.
pub struct HttpAgent {
    cfg: HttpAgentConfig,
    client: reqwest::Client,
}

impl HttpAgent {
    /// Builds the agent. The caller checked the URL against the allow-list.
    pub fn new(cfg: HttpAgentConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            // Redirects could leave the allow-list.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("agent '{}': cannot build its HTTP client: {e}", cfg.id))?;
        Ok(HttpAgent { cfg, client })
    }

    fn endpoint(&self, action: &str) -> String {
        format!("{}/{}", self.cfg.url.trim_end_matches('/'), action)
    }

    async fn post(&self, call: &AgentCall<'_>) -> Result<Value, AgentError> {
        let url = self.endpoint(call.action);
        let body = json!({
            "planId": call.plan_id,
            "stepId": call.step_id,
            "action": call.action,
            "input": call.input,
            "dependencies": call.dependencies,
            "attempt": call.attempt,
        });
        let response = self
            .client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                let what = if e.is_timeout() {
                    format!("timed out after {} ms", self.cfg.timeout_ms)
                } else {
                    format!("could not be reached: {e}")
                };
                AgentError::retryable(format!("agent '{}' at {url} {what}", self.cfg.id))
            })?;
        let status = response.status();
        let context = format!("agent '{}' at {url}", self.cfg.id);
        let bytes = read_limited(response, self.cfg.max_response_bytes, &context).await?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            let message = format!(
                "agent '{}' at {url} answered {status}: {detail}",
                self.cfg.id
            );
            let retryable = retryable_status(status);
            return Err(AgentError { message, retryable });
        }
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
            AgentError::permanent(format!(
                "agent '{}' at {url} answered something other than {{\"data\": ...}}: {e}",
                self.cfg.id
            ))
        })?;
        for insight in envelope.insights {
            call.events.insight(&insight.kind, insight.data);
        }
        Ok(envelope.data)
    }
}

/// Reads a response body, refusing one over `limit` bytes without
/// buffering it; `context` starts each error message.
pub(crate) async fn read_limited(
    response: reqwest::Response,
    limit: usize,
    context: &str,
) -> Result<Vec<u8>, AgentError> {
    let too_big = || AgentError::permanent(format!("{context} answered more than {limit} bytes"));
    if response
        .content_length()
        .is_some_and(|n| n as usize > limit)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| AgentError::retryable(format!("{context}: answer cut short: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether a failed HTTP status is worth another attempt: the server is
/// overloaded or broken (408, 425, 429, 5xx); any other 4xx will not change.
pub fn retryable_status(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429)
}

#[derive(Deserialize)]
struct Envelope {
    data: Value,
    #[serde(default)]
    insights: Vec<Insight>,
}

#[derive(Deserialize)]
struct Insight {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

impl Agent for HttpAgent {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn queue(&self) -> &str {
        self.cfg.queue.as_deref().unwrap_or(&self.cfg.id)
    }

    fn actions(&self) -> Vec<&str> {
        self.cfg.actions.iter().map(String::as_str).collect()
    }

    fn call<'a>(&'a self, call: AgentCall<'a>) -> BoxFuture<'a, Result<Value, AgentError>> {
        Box::pin(async move { self.post(&call).await })
    }
}
