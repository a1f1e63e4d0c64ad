//! Data the store keeps and hands out: statuses, jobs, events, results,
//! dead letters and the coordinator's lifecycle work items.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use baton_plan::{RetryPolicy, ValidPlan, ValidStep};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch: the one clock every role and every
/// process agrees on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lifecycle of a plan. Terminal: succeeded, failed, timed_out, cancelled,
/// rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    Submitted,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Rejected,
}

impl PlanStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, PlanStatus::Submitted | PlanStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Submitted => "submitted",
            PlanStatus::Running => "running",
            PlanStatus::Succeeded => "succeeded",
            PlanStatus::Failed => "failed",
            PlanStatus::TimedOut => "timed_out",
            PlanStatus::Cancelled => "cancelled",
            PlanStatus::Rejected => "rejected",
        }
    }
}

/// Lifecycle of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for dependencies (or, in a sequential plan, for its turn).
    Pending,
    /// Queued for a worker.
    Ready,
    /// Claimed by a worker under a lease.
    Running,
    /// A retry waits for its backoff to pass.
    Scheduled,
    Succeeded,
    /// Failed for good and dead-lettered.
    Failed,
    /// Not run: a dependency failed, or the plan ended first.
    Skipped,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped
        )
    }
}

/// A plan ready to be stored: validated, with an id and each step's queue.
#[derive(Debug, Clone)]
pub struct NewPlan {
    pub id: String,
    pub plan: ValidPlan,
    /// Queue of each step (aligned with `plan.steps`); `None` for joins.
    pub queues: Vec<Option<Arc<str>>>,
    /// The plan this one runs as a fallback for.
    pub parent: Option<String>,
    pub submitted_at: u64,
}

/// Names one attempt of one step: completions and failures are accepted only
/// from the attempt that holds the step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub plan_id: Arc<str>,
    /// Which incarnation of the plan id: an id can be used again once its
    /// plan is purged, and a late report of the old plan must not count.
    pub run: u64,
    pub step: u32,
    pub attempt: u32,
}

/// A claimed step attempt, with everything a worker needs to run it.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: JobKey,
    pub spec: Arc<ValidStep>,
    /// Results of the step's dependencies, by step id, in listed order.
    pub dependencies: Vec<(Arc<str>, Value)>,
    pub lease_until: u64,
}

impl Job {
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.spec.retry
    }
}

/// What became of a completion or failure report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Recorded; `plan_ended` when it ended its plan.
    Recorded { plan_ended: bool },
    /// Ignored: this attempt no longer holds the step (already recorded,
    /// reaped, cancelled, or its plan ended).
    Stale,
}

/// Result of a cancellation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOutcome {
    /// The plan was open and is now cancelled.
    pub cancelled: bool,
    /// Its running fallback plan, which must be cancelled too.
    pub fallback_child: Option<String>,
}

/// Work the coordinator does outside any one plan's atomic scope (a plan's
/// fallback is another plan; in Redis Cluster, another slot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LifecycleItem {
    /// `plan_id` failed or timed out and has a fallback plan to start.
    StartFallback { plan_id: String },
    /// `child_id`, the fallback of `parent_id`, ended.
    FallbackEnded { parent_id: String, child_id: String },
}

/// Event types of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "plan:submitted")]
    PlanSubmitted,
    #[serde(rename = "plan:rejected")]
    PlanRejected,
    #[serde(rename = "plan:started")]
    PlanStarted,
    #[serde(rename = "step:started")]
    StepStarted,
    #[serde(rename = "step:completed")]
    StepCompleted,
    #[serde(rename = "step:failed")]
    StepFailed,
    #[serde(rename = "step:retrying")]
    StepRetrying,
    #[serde(rename = "step:skipped")]
    StepSkipped,
    #[serde(rename = "step:dead_lettered")]
    StepDeadLettered,
    #[serde(rename = "agent:insight")]
    AgentInsight,
    #[serde(rename = "agent:error")]
    AgentError,
    #[serde(rename = "plan:completed")]
    PlanCompleted,
    #[serde(rename = "plan:failed")]
    PlanFailed,
    #[serde(rename = "plan:timeout")]
    PlanTimeout,
    #[serde(rename = "plan:fallback")]
    PlanFallback,
    #[serde(rename = "plan:cancelled")]
    PlanCancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PlanSubmitted => "plan:submitted",
            EventKind::PlanRejected => "plan:rejected",
            EventKind::PlanStarted => "plan:started",
            EventKind::StepStarted => "step:started",
            EventKind::StepCompleted => "step:completed",
            EventKind::StepFailed => "step:failed",
            EventKind::StepRetrying => "step:retrying",
            EventKind::StepSkipped => "step:skipped",
            EventKind::StepDeadLettered => "step:dead_lettered",
            EventKind::AgentInsight => "agent:insight",
            EventKind::AgentError => "agent:error",
            EventKind::PlanCompleted => "plan:completed",
            EventKind::PlanFailed => "plan:failed",
            EventKind::PlanTimeout => "plan:timeout",
            EventKind::PlanFallback => "plan:fallback",
            EventKind::PlanCancelled => "plan:cancelled",
        }
    }

    /// The event that ends a plan with `status`.
    pub fn terminal_for(status: PlanStatus) -> EventKind {
        match status {
            PlanStatus::Succeeded => EventKind::PlanCompleted,
            PlanStatus::TimedOut => EventKind::PlanTimeout,
            PlanStatus::Cancelled => EventKind::PlanCancelled,
            PlanStatus::Rejected => EventKind::PlanRejected,
            _ => EventKind::PlanFailed,
        }
    }
}

/// An event emitted on behalf of a running step.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub plan_id: Arc<str>,
    pub step_id: Option<Arc<str>>,
    pub agent_id: Option<Arc<str>>,
    pub attempt: Option<u32>,
    pub data: Value,
}

/// A recorded event. `id` grows with every event of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub plan_id: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Epoch milliseconds.
    pub timestamp: u64,
    /// Milliseconds taken, on events that end a step or a plan.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration: Option<u64>,
    #[serde(skip_serializing_if = "Value::is_null", default)]
    pub data: Value,
}

/// Outcome of one step, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    pub success: bool,
    pub status: StepStatus,
    pub data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: u32,
    /// Milliseconds from the first attempt's start to the step's end
    /// (backoff included); 0 for steps that never ran.
    pub duration: u64,
}

/// Outcome of a plan: the seed's `{success, duration, results, errors}`
/// plus status, timestamps and the fallback's outcome when one ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanResult {
    pub plan_id: String,
    pub status: PlanStatus,
    pub success: bool,
    /// Milliseconds from start to end (the fallback's run included).
    pub duration: u64,
    /// Outcome of each step, by step id, in listed order.
    pub results: IndexMap<Arc<str>, StepResult>,
    /// Error message by step id, absent when no step failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<IndexMap<Arc<str>, String>>,
    pub submitted_at: u64,
    pub started_at: u64,
    pub finished_at: u64,
    pub fallback_used: bool,
    /// How the plan's own steps ended when a fallback ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_status: Option<PlanStatus>,
    /// The fallback plan's full result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Arc<PlanResult>>,
    /// Validation errors of a rejected plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<baton_plan::PlanErrors>,
}

/// A step that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub plan_id: String,
    pub step_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub error: String,
    pub attempts: u32,
    pub at: u64,
}
