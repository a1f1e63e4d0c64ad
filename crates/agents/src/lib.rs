//! Agents: what a step's `agentId` + `action` resolve to.
//!
//! An [`Agent`] answers calls; the [`Registry`] maps agent ids to agents and
//! serves as the plan validator's [`baton_plan::Catalog`], so a plan naming an
//! agent, action or input that cannot run is rejected before it is queued.

mod registry;
pub mod system;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

pub use registry::Registry;

/// Everything an agent gets for one attempt of one step.
pub struct AgentCall<'a> {
    pub plan_id: &'a str,
    pub step_id: &'a str,
    pub action: &'a str,
    pub input: &'a Value,
    /// Results of the step's dependencies, by step id.
    pub dependencies: &'a Map<String, Value>,
    /// 1 on the first attempt; counted durably by the store.
    pub attempt: u32,
    /// Where the agent reports insights while it works.
    pub events: &'a dyn EventSink,
}

/// Receives what an agent wants the world to know while a step runs; each
/// insight becomes an `agent:insight` event of the step's plan.
pub trait EventSink: Send + Sync {
    fn insight(&self, kind: &str, data: Value);
}

/// An event sink that drops everything (for direct calls outside a plan).
pub struct NoEvents;

impl EventSink for NoEvents {
    fn insight(&self, _kind: &str, _data: Value) {}
}

/// A failed attempt. `retryable: false` dead-letters the step at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub message: String,
    pub retryable: bool,
}

impl AgentError {
    /// A failure worth another attempt under the step's retry policy.
    pub fn retryable(message: impl Into<String>) -> Self {
        AgentError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        AgentError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// An agent: a named set of actions.
pub trait Agent: Send + Sync {
    /// The id plans use in `agentId`.
    fn id(&self) -> &str;

    /// The queue its steps are routed to (workers choose queues to serve).
    fn queue(&self) -> &str {
        self.id()
    }

    /// The actions it answers.
    fn actions(&self) -> &[&'static str];

    /// Checks a step's input before the plan is accepted.
    fn check_input(&self, _action: &str, _input: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Runs one attempt of `call.action`.
    fn call<'a>(&'a self, call: AgentCall<'a>) -> BoxFuture<'a, Result<Value, AgentError>>;
}
