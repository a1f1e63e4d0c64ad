//! Agents: what a step's `agentId` + `action` resolve to.
//!
//! An [`Agent`] answers calls; the [`Registry`] maps agent ids to agents and
//! serves as the plan validator's [`baton_plan::Catalog`], so a plan naming an
//! agent, action or input that cannot run is rejected before it is queued.

mod config;
pub mod http;
pub mod learning;
mod registry;
pub mod state;
pub mod system;
pub mod tutor;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

pub use config::{AgentsConfig, ConfigError};
pub use registry::Registry;

/// Everything an agent gets for one attempt of one step.
pub struct AgentCall<'a> {
    pub plan_id: &'a str,
    pub step_id: &'a str,
    pub action: &'a str,
    pub input: &'a Value,
    /// Results of the step's dependencies, by step id.
    pub dependencies: Dependencies<'a>,
    /// 1 on the first attempt; counted durably by the store.
    pub attempt: u32,
    /// Where the agent reports insights while it works.
    pub events: &'a dyn EventSink,
    /// Where the agent keeps state across steps (e.g. a learner's model).
    pub state: &'a dyn StateStore,
}

/// Durable agent state, shared by every worker: a JSON value per key with a
/// version for optimistic updates (read, change, save if unchanged).
pub trait StateStore: Send + Sync {
    /// The value under `key` and its version; `None` when absent or expired.
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(Value, u64)>, String>>;

    /// Saves `value` if the version under `key` is still `expected` (0 for
    /// absent); returns the new version, or `None` when someone else wrote
    /// first. The entry expires `ttl_ms` after this write.
    fn save<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        expected: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, String>>;
}

/// A process-local [`StateStore`] for agents called outside a worker (tests,
/// `baton` commands that try an agent directly).
#[derive(Default)]
pub struct LocalState(std::sync::Mutex<std::collections::HashMap<String, (Value, u64)>>);

impl StateStore for LocalState {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(Value, u64)>, String>> {
        let found = self.0.lock().expect("state lock").get(key).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        expected: u64,
        _ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, String>> {
        let mut map = self.0.lock().expect("state lock");
        let current = map.get(key).map_or(0, |(_, v)| *v);
        let saved = (current == expected).then(|| {
            map.insert(key.to_string(), (value, current + 1));
            current + 1
        });
        Box::pin(std::future::ready(Ok(saved)))
    }
}

/// The results of a step's dependencies, in the order they are listed.
/// A borrowed view: building a JSON map costs only an agent that wants one.
#[derive(Clone, Copy, Debug)]
pub struct Dependencies<'a>(pub &'a [(Arc<str>, Value)]);

impl<'a> Dependencies<'a> {
    /// The result of dependency `step_id`.
    pub fn get(&self, step_id: &str) -> Option<&'a Value> {
        self.0
            .iter()
            .find(|(id, _)| &**id == step_id)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.0.iter().map(|(id, v)| (&**id, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The results as a JSON object keyed by step id.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

impl Serialize for Dependencies<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
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
    fn actions(&self) -> Vec<&str>;

    /// Checks a step's input before the plan is accepted.
    fn check_input(&self, _action: &str, _input: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Runs one attempt of `call.action`.
    fn call<'a>(&'a self, call: AgentCall<'a>) -> BoxFuture<'a, Result<Value, AgentError>>;
}
