//! The `tutor` agent: a conversation per learner with any OpenAI-compatible
//! chat-completions endpoint (`POST {base_url}/chat/completions`).
//!
//! The conversation is kept in the store (agent state, so any worker can
//! continue it) and trimmed to the last `max_history` messages after the
//! system prompt. With `stream = true` the answer is read as server-sent
//! events and each token is emitted as an `agent:insight` of type
//! `tutor_token` while it arrives. HTTP 408/425/429/5xx, timeouts and
//! connection errors are retryable; other 4xx are permanent.
//!
//! Actions (every input names its `learnerId`):
//! - `prepare_conversation` `{learnerId, subject?, gradeLevel?}`: starts (or
//!   restarts) the conversation and asks for an opening message;
//! - `send_message` `{learnerId, message}`: the learner speaks, the tutor answers;
//! - `provide_feedback` `{learnerId, answer?, correct?, skill?}`: feedback on an
//!   answer, with the step's dependencies' results (e.g. the learning
//!   agent's update) as context.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{read_limited, retryable_status};
use crate::state::{self, learner_id};
use crate::{Agent, AgentCall, AgentError};

/// The `[tutor]` table of the agents file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TutorConfig {
    /// Base URL of the API, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key (sent as a bearer token);
    /// no key is sent when it is unset.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Read answers as a stream of tokens.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Messages kept after the system prompt.
    #[serde(default = "default_history")]
    pub max_history: usize,
    /// Largest answer accepted, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_response_bytes: usize,
}

fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn default_true() -> bool {
    true
}
fn default_history() -> usize {
    20
}
fn default_max_bytes() -> usize {
    1 << 20
}

/// How long a conversation lives after its last message.
const STATE_TTL_MS: u64 = 24 * 3_600_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Conversation {
    messages: Vec<Message>,
}

pub struct TutorAgent {
    cfg: TutorConfig,
    client: reqwest::Client,
}

impl TutorAgent {
    pub fn new(cfg: TutorConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("tutor: cannot build its HTTP client: {e}"))?;
        Ok(TutorAgent { cfg, client })
    }

    /// Sends the conversation, returns the assistant's answer (streamed
    /// tokens are emitted as they come).
    async fn complete(
        &self,
        call: &AgentCall<'_>,
        messages: &[Message],
    ) -> Result<String, AgentError> {
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let mut request = self.client.post(&url).json(&json!({
            "model": self.cfg.model,
            "messages": messages,
            "stream": self.cfg.stream,
        }));
        if let Ok(key) = std::env::var(&self.cfg.api_key_env) {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                AgentError::retryable(format!(
                    "tutor: {url} timed out after {} ms",
                    self.cfg.timeout_ms
                ))
            } else {
                AgentError::retryable(format!("tutor: {url} could not be reached: {e}"))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(AgentError {
                message: format!("tutor: {url} answered {status}: {detail}"),
                retryable: retryable_status(status),
            });
        }
        if self.cfg.stream {
            self.read_stream(call, response, &url).await
        } else {
            let context = format!("tutor: {url}");
            let bytes = read_limited(response, self.cfg.max_response_bytes, &context).await?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                AgentError::permanent(format!("tutor: {url} answered invalid JSON: {e}"))
            })?;
            v["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| {
                    AgentError::permanent(format!(
                        "tutor: {url} answered no choices[0].message.content"
                    ))
                })
        }
    }

    /// Reads `data: {...}` server-sent events up to `data: [DONE]`.
    async fn read_stream(
        &self,
        call: &AgentCall<'_>,
        response: reqwest::Response,
        url: &str,
    ) -> Result<String, AgentError> {
        let mut answer = String::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut read = 0usize;
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                AgentError::retryable(format!("tutor: {url}: stream cut short: {e}"))
            })?;
            read += chunk.len();
            if read > self.cfg.max_response_bytes {
                return Err(AgentError::permanent(format!(
                    "tutor: {url} streamed more than {} bytes",
                    self.cfg.max_response_bytes
                )));
            }
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(answer);
                }
                let event: Value = serde_json::from_str(data).map_err(|e| {
                    AgentError::permanent(format!("tutor: {url} streamed invalid JSON: {e}"))
                })?;
                if let Some(delta) = event["choices"][0]["delta"]["content"].as_str() {
                    if !delta.is_empty() {
                        call.events
                            .insight("tutor_token", json!({ "delta": delta }));
                        answer.push_str(delta);
                    }
                }
            }
        }
        // Some servers close without [DONE]; what arrived is the answer.
        Ok(answer)
    }

    /// Runs one exchange: read the conversation, add `said` (and, for a new
    /// conversation, the system prompt), ask the model, save both turns. A
    /// failed exchange saves nothing; one that lost a race runs again.
    async fn exchange(
        &self,
        call: &AgentCall<'_>,
        learner: &str,
        restart_with: Option<String>,
        said: String,
    ) -> Result<(String, usize), AgentError> {
        let key = format!("tutor:conversation:{learner}");
        state::update(call.state, &key, STATE_TTL_MS, |found: Option<Conversation>| {
            let (restart_with, said) = (restart_with.clone(), said.clone());
            async move {
                let mut convo = match (found, restart_with) {
                    // A restart replaces whatever was there.
                    (_, Some(system)) => Conversation {
                        messages: vec![Message {
                            role: "system".into(),
                            content: system,
                        }],
                    },
                    (Some(convo), None) => convo,
                    (None, None) => {
                        return Err(AgentError::permanent(format!(
                            "learner '{learner}' has no conversation: run prepare_conversation first"
                        )))
                    }
                };
                convo.messages.push(Message {
                    role: "user".into(),
                    content: said,
                });
                let answer = self.complete(call, &convo.messages).await?;
                convo.messages.push(Message {
                    role: "assistant".into(),
                    content: answer.clone(),
                });
                // Keep the system prompt and the last `max_history` messages.
                let keep = self.cfg.max_history;
                if convo.messages.len() > keep + 1 {
                    let cut = convo.messages.len() - keep;
                    convo.messages.drain(1..cut);
                }
                let n = convo.messages.len();
                Ok((convo, (answer, n)))
            }
        })
        .await
    }
}

impl Agent for TutorAgent {
    fn id(&self) -> &str {
        "tutor"
    }

    fn actions(&self) -> Vec<&str> {
        vec!["prepare_conversation", "send_message", "provide_feedback"]
    }

    fn check_input(&self, action: &str, input: &Value) -> Result<(), String> {
        learner_id(input)?;
        if action == "send_message"
            && input
                .get("message")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            return Err("`message` must be a non-empty string".into());
        }
        Ok(())
    }

    fn call<'a>(&'a self, call: AgentCall<'a>) -> BoxFuture<'a, Result<Value, AgentError>> {
        Box::pin(async move {
            self.check_input(call.action, call.input)
                .map_err(AgentError::permanent)?;
            let input = call.input;
            let learner = learner_id(input)
                .map_err(AgentError::permanent)?
                .to_string();
            match call.action {
                "prepare_conversation" => {
                    let subject = input["subject"].as_str().unwrap_or("any subject");
                    let grade = match &input["gradeLevel"] {
                        Value::Null => "a young learner".to_string(),
                        g => format!("a learner in grade {g}"),
                    };
                    let system = format!(
                        "You are a patient tutor for {grade}, teaching {subject}. \
                         Keep answers short, encouraging and at the learner's level."
                    );
                    let opening = "Greet me and ask what I would like to practise.".to_string();
                    let (greeting, n) = self
                        .exchange(&call, &learner, Some(system.clone()), opening)
                        .await?;
                    Ok(
                        json!({"learnerId": learner, "systemPrompt": system, "greeting": greeting, "messages": n}),
                    )
                }
                "send_message" => {
                    let message = input["message"].as_str().unwrap_or_default().to_string();
                    let (reply, n) = self.exchange(&call, &learner, None, message).await?;
                    Ok(json!({"learnerId": learner, "reply": reply, "messages": n}))
                }
                "provide_feedback" => {
                    let context = json!({
                        "answer": input.get("answer"),
                        "correct": input.get("correct"),
                        "skill": input.get("skill"),
                        "fromEarlierSteps": call.dependencies,
                    });
                    let ask = format!(
                        "Give me short feedback on my last answer. Context (JSON): {context}"
                    );
                    let (feedback, n) = self.exchange(&call, &learner, None, ask).await?;
                    Ok(json!({"learnerId": learner, "feedback": feedback, "messages": n}))
                }
                other => Err(AgentError::permanent(format!(
                    "tutor agent has no action '{other}'"
                ))),
            }
        })
    }
}
