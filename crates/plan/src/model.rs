//! Plan types: the camelCase wire format users submit ([`PlanDoc`], [`StepDoc`],
//! [`RetryPolicyDoc`]) and the checked, executable form ([`ValidPlan`]).
//!
//! Wire numbers are signed so that a negative value is reported by validation
//! with its path and a readable reason instead of a serde type error.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An orchestration plan as submitted: a DAG of agent steps.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "baton orchestration plan")]
pub struct PlanDoc {
    /// Plan id; generated when absent. Letters, digits and `_-.:` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The steps, in listed order.
    pub steps: Vec<StepDoc>,
    /// `true` (default): a step starts as soon as its dependencies succeeded.
    /// `false`: one step at a time, in listed order.
    #[serde(default = "default_true")]
    pub parallel: bool,
    /// Deadline for the whole plan in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<i64>,
    /// Stop the whole plan as soon as one step fails for good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_fast: bool,
    /// Plan run when this one fails or times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_plan: Option<Box<PlanDoc>>,
}

fn default_true() -> bool {
    true
}

/// One step of a plan. A step without `agentId` and `action` is a join: its
/// result is the object of its dependencies' results.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepDoc {
    /// Unique within the plan. Letters, digits and `_-.:` only.
    pub id: String,
    /// The agent that runs the step (e.g. `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The agent's action (e.g. `noop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Input handed to the agent with the dependencies' results.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// Ids of steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Retries after a failed attempt; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicyDoc>,
    /// Per-attempt timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<i64>,
}

/// How a failed step is retried.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicyDoc {
    /// Retries after the first attempt.
    #[schemars(range(min = 0))]
    pub max_retries: i64,
    /// Base delay in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub backoff_ms: i64,
    /// How the delay grows with the retry number.
    #[serde(default)]
    pub strategy: BackoffStrategy,
    /// Upper bound of any one delay in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_backoff_ms: Option<i64>,
    /// Spread each delay uniformly over [delay/2, delay].
    #[serde(default)]
    pub jitter: bool,
}

/// Growth of the retry delay: before retry `n` (1-based) with base `b`,
/// exponential waits `b * 2^(n-1)`, linear `b * n`, fixed `b`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackoffStrategy {
    #[default]
    Exponential,
    Linear,
    Fixed,
}

/// A checked retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff_ms: u64,
    pub strategy: BackoffStrategy,
    pub max_backoff_ms: Option<u64>,
    pub jitter: bool,
}

impl RetryPolicy {
    /// No retries: the first failure is final.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        backoff_ms: 0,
        strategy: BackoffStrategy::Exponential,
        max_backoff_ms: None,
        jitter: false,
    };

    /// Total attempts the policy allows, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// The delay before the next attempt when attempt number `attempt`
    /// (1-based) failed, or `None` when the policy allows no more attempts.
    /// `unit` is a uniform sample in [0, 1) for jitter.
    pub fn retry_after(&self, attempt: u32, unit: f64) -> Option<u64> {
        (attempt <= self.max_retries).then(|| crate::retry_delay_ms(self, attempt, unit))
    }
}

/// What a step does when it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum StepKind {
    /// Call `action` on agent `agent_id`.
    Agent {
        agent_id: Arc<str>,
        action: Arc<str>,
    },
    /// Gather the dependencies' results; no agent involved.
    Join,
}

/// A checked step. Dependencies are indices into [`ValidPlan::steps`].
/// Ids are shared strings: events and results name steps without copying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidStep {
    pub id: Arc<str>,
    pub kind: StepKind,
    pub input: Value,
    pub dependencies: Vec<usize>,
    /// Steps that list this one as a dependency (the reverse edges).
    pub dependents: Vec<usize>,
    pub retry: RetryPolicy,
    pub timeout_ms: Option<u64>,
}

impl ValidStep {
    pub fn agent_id(&self) -> Option<&str> {
        self.shared_agent_id().map(|a| &**a)
    }

    /// The agent id as a shared string (for events, without copying).
    pub fn shared_agent_id(&self) -> Option<&Arc<str>> {
        match &self.kind {
            StepKind::Agent { agent_id, .. } => Some(agent_id),
            StepKind::Join => None,
        }
    }

    pub fn action(&self) -> Option<&str> {
        match &self.kind {
            StepKind::Agent { action, .. } => Some(action),
            StepKind::Join => None,
        }
    }
}

/// A plan that passed validation: ids unique, dependencies known and acyclic,
/// agents and actions known, numbers in range, nesting within limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidPlan {
    pub id: Option<String>,
    /// Shared, so that storing or copying a plan does not copy its steps.
    pub steps: Vec<Arc<ValidStep>>,
    pub parallel: bool,
    pub timeout_ms: Option<u64>,
    pub fail_fast: bool,
    pub fallback: Option<Box<ValidPlan>>,
}

impl ValidPlan {
    /// Index of the step with this id.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| &*s.id == id)
    }

    /// Depth of the fallback chain below this plan (0 when there is none).
    pub fn fallback_depth(&self) -> usize {
        self.fallback.as_ref().map_or(0, |f| 1 + f.fallback_depth())
    }
}
