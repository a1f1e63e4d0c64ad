//! The coordinator: everything that happens to plans without a worker's
//! help. It ends plans whose deadline passed (even when no worker is alive),
//! takes back jobs whose lease lapsed (a dead or stalled worker) and counts
//! them as failed attempts, starts fallback plans and folds their outcome
//! into the parent's result, cancels, and deletes ended plans after the
//! retention period.
//!
//! Every action is an idempotent store transition, so running two
//! coordinators at once does no harm.

use std::future::Future;

use baton_planner::Planner;
use baton_store::{
    now_ms, CancelOutcome, LifecycleItem, PlanStatus, Store, StoreError, StoreResult,
};

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Ended plans are deleted this long after they end.
    pub retention_ms: u64,
    /// Longest sleep between checks when nothing wakes us.
    pub max_tick_ms: u64,
    /// How often ended plans are purged.
    pub purge_every_ms: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            retention_ms: 24 * 3_600_000,
            max_tick_ms: 1_000,
            purge_every_ms: 60_000,
        }
    }
}

pub struct Coordinator<S> {
    store: S,
    planner: Planner<S>,
    cfg: CoordinatorConfig,
}

impl<S: Store> Coordinator<S> {
    pub fn new(store: S, planner: Planner<S>, cfg: CoordinatorConfig) -> Self {
        Coordinator {
            store,
            planner,
            cfg,
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next_purge = now_ms() + self.cfg.purge_every_ms;
        loop {
            if let Err(e) = self.tick(&mut next_purge).await {
                tracing::warn!(error = %e, "coordinator tick failed; retrying");
                // Whatever was due is still due: pause rather than spin.
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.store.wait_for_coordinator_work(self.cfg.max_tick_ms) => {}
            }
        }
    }

    /// One round of every duty; returns once nothing is due.
    pub async fn tick(&self, next_purge: &mut u64) -> StoreResult<()> {
        self.handle_lifecycle().await?;
        let now = now_ms();
        for plan in self.store.expire_deadlines(now).await? {
            tracing::info!(plan = %plan, "plan deadline passed");
        }
        self.reap_leases(now).await?;
        // Deadlines can queue fallbacks: start them in the same round.
        self.handle_lifecycle().await?;
        if now >= *next_purge {
            let purged = self
                .store
                .purge_ended(now.saturating_sub(self.cfg.retention_ms))
                .await?;

            if purged > 0 {
                tracing::debug!(purged, "ended plans deleted");
            }
            *next_purge = now + self.cfg.purge_every_ms;
        }
        Ok(())
    }

    /// Jobs whose lease lapsed count as failed attempts: retried under the
    /// step's policy, dead-lettered once it is spent (so a step that kills
    /// every worker it runs on ends instead of looping).
    async fn reap_leases(&self, now: u64) -> StoreResult<()> {
        for job in self.store.expired_leases(now).await? {
            let attempt = job.key.attempt;
            let error = format!("lease expired on attempt {attempt}: the worker died or stalled");
            let retry = job.retry_policy().retry_after(attempt, fastrand::f64());
            tracing::warn!(plan = %job.key.plan_id, step = %job.spec.id, attempt, "lease expired");
            self.store.fail(&job.key, &error, retry).await?;
        }
        Ok(())
    }

    /// Handles lifecycle items one by one: each is acknowledged once done
    /// (or once it turns out to concern a plan that no longer exists), so a
    /// failing item is retried later without holding up the others.
    async fn handle_lifecycle(&self) -> StoreResult<()> {
        loop {
            let items = self.store.take_lifecycle(64).await?;
            if items.is_empty() {
                return Ok(());
            }
            let mut done = Vec::with_capacity(items.len());
            let mut failed = None;
            for item in &items {
                let handled = match item {
                    LifecycleItem::StartFallback { plan_id } => self.start_fallback(plan_id).await,
                    LifecycleItem::FallbackEnded {
                        parent_id,
                        child_id,
                    } => self
                        .store
                        .finish_from_fallback(parent_id, child_id)
                        .await
                        .map(drop),
                };
                match handled {
                    Ok(()) => done.push(item.clone()),
                    Err(StoreError::PlanNotFound(id)) => {
                        tracing::info!(plan = %id, ?item, "lifecycle work for a plan that is gone");
                        done.push(item.clone());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, ?item, "lifecycle work failed; will retry");
                        failed = Some(e);
                    }
                }
            }
            self.store.ack_lifecycle(&done).await?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }

    /// Starts `plan_id`'s fallback as a plan of its own (see [`fallback_id`]).
    /// The link is recorded before the child exists, so the child's end
    /// always finds its parent waiting; both steps are idempotent.
    async fn start_fallback(&self, plan_id: &str) -> StoreResult<()> {
        let Some(spec) = self.store.plan_spec(plan_id).await? else {
            return Ok(());
        };
        let Some(fallback) = spec.fallback else {
            return Ok(());
        };
        let child_id = fallback_id(plan_id);
        if !self.store.link_fallback(plan_id, &child_id).await? {
            return Ok(());
        }
        let child = self.planner.expand(&child_id, *fallback, Some(plan_id));
        self.store.create_plan(child).await?;
        // A cancel that came between the link and the child's creation found
        // no child to cancel: cancel it now.
        if self.store.status(plan_id).await? == Some(PlanStatus::Cancelled) {
            self.store.cancel(&child_id).await?;
        }
        tracing::info!(plan = %plan_id, fallback = %child_id, "fallback plan started");
        Ok(())
    }
}

/// Cancels a plan and, when it is waiting on a fallback, the fallback too.
pub async fn cancel_plan<S: Store>(store: &S, plan_id: &str) -> StoreResult<bool> {
    let mut id = plan_id.to_string();
    let mut first = None;
    loop {
        let CancelOutcome {
            cancelled,
            fallback_child,
        } = match store.cancel(&id).await {
            Err(StoreError::PlanNotFound(_)) if first.is_some() => break,
            other => other?,
        };
        first.get_or_insert(cancelled);
        match fallback_child {
            Some(child) => id = child,
            None => break,
        }
    }
    Ok(first.unwrap_or(false))
}

/// The id of `plan_id`'s fallback plan: `<id>/fallback`. Submitted ids
/// cannot contain `/`, so a user's plan never takes a fallback's id.
pub fn fallback_id(plan_id: &str) -> String {
    format!("{plan_id}/fallback")
}
