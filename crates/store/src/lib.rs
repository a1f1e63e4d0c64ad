//! Coordination state: everything the planner, workers and coordinator share
//! lives behind the [`Store`] trait (plans, dependency counters, step states,
//! results, scheduled retries, leases, dead letters, events).
//!
//! Each method is one atomic transition, so the roles never hold state of
//! their own and a Redis implementation (one Lua script per transition) can
//! replace [`MemoryStore`] without touching them.

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
mod model;

use std::future::Future;
use std::sync::Arc;

pub use memory::MemoryStore;
pub use model::*;

use baton_plan::PlanErrors;
use serde_json::Value;

/// Why a store operation could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("plan '{0}' not found")]
    PlanNotFound(String),
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The shared state of a baton deployment. Every method is atomic.
pub trait Store: Clone + Send + Sync + Unpin + 'static {
    /// Stores an expanded plan, queues its ready steps and emits
    /// `plan:submitted` and `plan:started`. Returns `false` (and changes
    /// nothing) when a plan with this id already exists.
    fn create_plan(&self, plan: NewPlan) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Records a rejected plan: status `rejected`, its errors as the result,
    /// a `plan:rejected` event. Returns `false` when the id already exists.
    fn reject_plan(
        &self,
        plan_id: &str,
        errors: &PlanErrors,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Takes up to `max` ready jobs of `queues`, in queue order (promoting
    /// due retries first), marks their steps running under a lease of
    /// `lease_ms` and emits `step:started` for each. Empty when none is ready.
    fn claim(
        &self,
        queues: &[String],
        worker: &str,
        lease_ms: u64,
        max: usize,
    ) -> impl Future<Output = StoreResult<Vec<Job>>> + Send;

    /// Resolves when a job of `queues` may be ready: new work was queued, a
    /// scheduled retry fell due, or `max_wait_ms` passed.
    fn wait_for_work(&self, queues: &[String], max_wait_ms: u64)
        -> impl Future<Output = ()> + Send;

    /// Hands back a claimed job that never started (a worker shutting
    /// down): the step is ready again and the claim does not count as an
    /// attempt. `false` when the job is no longer this attempt's.
    fn release(&self, job: &JobKey) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Resolves once `job` no longer holds its step because its plan ended
    /// (timed out, cancelled, failFast), so a worker stops an abandoned agent
    /// call at once instead of at its next lease extension (which also
    /// catches a reaped attempt). Never resolves while the job holds the step.
    fn abandoned(&self, job: &JobKey) -> impl Future<Output = ()> + Send;

    /// Extends a running job's lease. `false` when the job is no longer
    /// this attempt's to run (completed, cancelled, timed out, reaped).
    fn extend_lease(
        &self,
        job: &JobKey,
        lease_ms: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Records a successful attempt: the step's result (exactly once), its
    /// dependents' counters, the dependents that became ready, the plan's
    /// end when it was the last step.
    fn complete(&self, job: &JobKey, data: Value) -> impl Future<Output = StoreResult<Ack>> + Send;

    /// Records a failed attempt. With `retry_in_ms` the step is scheduled to
    /// run again after that delay; without, it is dead-lettered and its
    /// dependents skipped (the whole plan stops when it is `failFast`).
    fn fail(
        &self,
        job: &JobKey,
        error: &str,
        retry_in_ms: Option<u64>,
    ) -> impl Future<Output = StoreResult<Ack>> + Send;

    /// Appends an event emitted on a plan's behalf (e.g. `agent:insight`).
    fn emit(&self, event: NewEvent) -> impl Future<Output = StoreResult<()>> + Send;

    /// Running jobs whose lease ended before `now_ms`.
    fn expired_leases(&self, now_ms: u64) -> impl Future<Output = StoreResult<Vec<Job>>> + Send;

    /// Ends every running plan whose deadline is before `now_ms` as
    /// `timed_out` (or hands it to its fallback). Returns the plans ended.
    fn expire_deadlines(
        &self,
        now_ms: u64,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Resolves when the coordinator has something to do: lifecycle work
    /// was queued, a plan with a deadline was created, the earliest deadline
    /// or lease end passed, or `max_wait_ms` passed.
    fn wait_for_coordinator_work(&self, max_wait_ms: u64) -> impl Future<Output = ()> + Send;

    /// Lifecycle work for the coordinator (fallbacks to start, child plans
    /// that ended). Items stay owned by the caller until acknowledged; items
    /// taken and never acknowledged are handed out again.
    fn take_lifecycle(
        &self,
        max: usize,
    ) -> impl Future<Output = StoreResult<Vec<LifecycleItem>>> + Send;

    /// Acknowledges lifecycle work done.
    fn ack_lifecycle(
        &self,
        items: &[LifecycleItem],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The stored plan definition of `plan_id` (with its fallback).
    fn plan_spec(
        &self,
        plan_id: &str,
    ) -> impl Future<Output = StoreResult<Option<baton_plan::ValidPlan>>> + Send;

    /// Records that `child_id` runs as `plan_id`'s fallback; emits
    /// `plan:fallback`. `false` when the plan is not awaiting a fallback.
    fn link_fallback(
        &self,
        plan_id: &str,
        child_id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Ends `plan_id` with the outcome of its fallback plan `child_id`.
    fn finish_from_fallback(
        &self,
        plan_id: &str,
        child_id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Cancels a plan that has not ended. Returns the outcome, including the
    /// fallback plan that must be cancelled too.
    fn cancel(&self, plan_id: &str) -> impl Future<Output = StoreResult<CancelOutcome>> + Send;

    /// Status of a plan, `None` when unknown.
    fn status(&self, plan_id: &str)
        -> impl Future<Output = StoreResult<Option<PlanStatus>>> + Send;

    /// The result of an ended plan.
    fn result(
        &self,
        plan_id: &str,
    ) -> impl Future<Output = StoreResult<Option<Arc<PlanResult>>>> + Send;

    /// Waits until the plan ends and returns its result.
    fn wait_result(
        &self,
        plan_id: &str,
    ) -> impl Future<Output = StoreResult<Arc<PlanResult>>> + Send;

    /// A plan's events with id greater than `after`, oldest first.
    fn events(
        &self,
        plan_id: &str,
        after: u64,
    ) -> impl Future<Output = StoreResult<Vec<Event>>> + Send;

    /// Dead-lettered steps, oldest first.
    fn dead_letters(&self) -> impl Future<Output = StoreResult<Vec<DeadLetter>>> + Send;

    /// Agent state under `key` (e.g. a learner's model) and its version;
    /// `None` when absent or expired.
    fn load_state(
        &self,
        key: &str,
    ) -> impl Future<Output = StoreResult<Option<(Value, u64)>>> + Send;

    /// Saves agent state if the version under `key` is still `expected` (0
    /// for absent): returns the new version, or `None` when another writer
    /// came first. The entry expires `ttl_ms` after this write.
    fn save_state(
        &self,
        key: &str,
        value: Value,
        expected: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send;

    /// Deletes ended plans that finished before `before_ms`; returns how many.
    fn purge_ended(&self, before_ms: u64) -> impl Future<Output = StoreResult<usize>> + Send;
}
