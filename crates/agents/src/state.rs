//! Helpers for agents that keep state in the store: the learner id every
//! learner-scoped action names, and the optimistic read-change-save loop.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::{AgentError, StateStore};

/// Saves tried before a state update gives up (retryable) on contention.
const SAVE_ATTEMPTS: usize = 8;

/// The `learnerId` of an action's input.
pub fn learner_id(input: &Value) -> Result<&str, String> {
    match input.get("learnerId") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => Ok(s),
        Some(other) => Err(format!(
            "`learnerId` must be a non-empty string, got {other}"
        )),
        None => Err("`learnerId` is required".into()),
    }
}

/// Reads the entry under `key` (`None` when absent), lets `change` produce
/// the new value and a result, and saves it only if nobody wrote in between;
/// otherwise starts over (so `change` may run more than once).
pub async fn update<T, R, Fut>(
    state: &dyn StateStore,
    key: &str,
    ttl_ms: u64,
    mut change: impl FnMut(Option<T>) -> Fut,
) -> Result<R, AgentError>
where
    T: Serialize + DeserializeOwned,
    Fut: Future<Output = Result<(T, R), AgentError>>,
{
    for _ in 0..SAVE_ATTEMPTS {
        let found = state.load(key).await.map_err(AgentError::retryable)?;
        let (current, version) = match found {
            Some((value, version)) => (Some(read(key, value)?), version),
            None => (None, 0),
        };
        let (next, out) = change(current).await?;
        let value = serde_json::to_value(&next)
            .map_err(|e| AgentError::permanent(format!("state '{key}': cannot be stored: {e}")))?;
        let saved = state
            .save(key, value, version, ttl_ms)
            .await
            .map_err(AgentError::retryable)?;
        if saved.is_some() {
            return Ok(out);
        }
    }
    Err(AgentError::retryable(format!(
        "state '{key}': too many concurrent updates"
    )))
}

/// Reads the entry under `key`, `None` when absent.
pub async fn load<T: DeserializeOwned>(
    state: &dyn StateStore,
    key: &str,
) -> Result<Option<T>, AgentError> {
    match state.load(key).await.map_err(AgentError::retryable)? {
        Some((value, _)) => read(key, value).map(Some),
        None => Ok(None),
    }
}

fn read<T: DeserializeOwned>(key: &str, value: Value) -> Result<T, AgentError> {
    serde_json::from_value(value)
        .map_err(|e| AgentError::permanent(format!("state '{key}': stored value unreadable: {e}")))
}
