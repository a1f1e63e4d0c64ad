//! The apalis backend over the store's step queues: `poll_next` claims a job
//! (atomically, under a lease) and, when none is ready, sleeps until the
//! store signals new work. apalis asks only when a concurrency slot is free,
//! so no job is claimed that no slot can run.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::task_id::RandomId;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use baton_store::{Job, Store};
use futures::future::BoxFuture;
use futures::FutureExt;
use tower_layer::Identity;

use crate::WorkerConfig;

/// Pause after a store error before claiming again.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// Step queues of a [`Store`], as an apalis task source.
pub struct StepBackend<S> {
    store: S,
    queues: Arc<[String]>,
    worker: Arc<str>,
    lease_ms: u64,
    idle_wait_ms: u64,
    claiming: Option<BoxFuture<'static, Job>>,
}

impl<S: Store> StepBackend<S> {
    pub fn new(store: S, cfg: &WorkerConfig) -> Self {
        StepBackend {
            store,
            queues: cfg.queues.clone().into(),
            worker: Arc::from(cfg.name.as_str()),
            lease_ms: cfg.lease_ms,
            idle_wait_ms: cfg.idle_wait_ms,
            claiming: None,
        }
    }

    /// Claims the next job, waiting for one as long as it takes. Store errors
    /// are logged and retried: a worker outlives a broken connection.
    fn claim_next(&self) -> BoxFuture<'static, Job> {
        let (store, queues, worker) =
            (self.store.clone(), self.queues.clone(), self.worker.clone());
        let (lease_ms, idle) = (self.lease_ms, self.idle_wait_ms);
        async move {
            loop {
                // A store that always has work answers without ever returning
                // Pending, and apalis's loop would then never yield: tasks
                // woken on this thread (result waiters, the coordinator)
                // would starve. Spending tokio's cooperative budget makes
                // the worker yield every so often.
                tokio::task::consume_budget().await;
                match store.claim(&queues, &worker, lease_ms).await {
                    Ok(Some(job)) => return job,
                    Ok(None) => store.wait_for_work(&queues, idle).await,
                    Err(e) => {
                        tracing::warn!(worker = %worker, error = %e, "claim failed; retrying");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                }
            }
        }
        .boxed()
    }
}

/// The backend never fails: errors are retried inside the claim loop.
#[derive(Debug, thiserror::Error)]
#[error("unreachable")]
pub enum Never {}

impl<S: Store> Backend for StepBackend<S> {
    type Task = Task<Job>;
    type Error = Never;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _w: &WorkerContext) -> Poll<Result<(), Never>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _w: &WorkerContext,
    ) -> Poll<Option<Result<Task<Job>, Never>>> {
        let claiming = match &mut self.claiming {
            Some(f) => f,
            None => self.claiming.insert(self.claim_next()),
        };
        match claiming.as_mut().poll(cx) {
            Poll::Ready(job) => {
                self.claiming = None;
                Poll::Ready(Some(Ok(Task::new(job))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>, _w: &WorkerContext) -> Poll<Result<(), Never>> {
        // A claim cut short leaves at most one job leased to us; its lease
        // lapses and the coordinator hands it out again.
        self.claiming = None;
        Poll::Ready(Ok(()))
    }
}

impl<S> BackendConfig for StepBackend<S> {
    type Args = Job;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}
