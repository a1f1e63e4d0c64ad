//! The apalis backend over the store's step queues: `poll_next` claims a job
//! (atomically, under a lease) and, when none is ready, sleeps until the
//! store signals new work. apalis asks only when a concurrency slot is free,
//! so no job is claimed that no slot can run.

use std::collections::VecDeque;
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
    claim_batch: usize,
    claiming: Option<BoxFuture<'static, Vec<Job>>>,
    /// Jobs claimed in one batch, handed to apalis one per free slot.
    claimed: VecDeque<Job>,
    /// Hands unstarted claimed jobs back to the store on shutdown.
    releasing: Option<BoxFuture<'static, ()>>,
}

impl<S: Store> StepBackend<S> {
    pub fn new(store: S, cfg: &WorkerConfig) -> Self {
        StepBackend {
            store,
            queues: cfg.queues.clone().into(),
            worker: Arc::from(cfg.name.as_str()),
            lease_ms: cfg.lease_ms,
            idle_wait_ms: cfg.idle_wait_ms,
            claim_batch: cfg.claim_batch.max(1),
            claiming: None,
            claimed: VecDeque::new(),
            releasing: None,
        }
    }

    /// Claims the next jobs (up to a batch), waiting for one as long as it
    /// takes. Store errors are logged and retried: a worker outlives a
    /// broken connection.
    fn claim_next(&self) -> BoxFuture<'static, Vec<Job>> {
        let (store, queues, worker) =
            (self.store.clone(), self.queues.clone(), self.worker.clone());
        let (lease_ms, idle, batch) = (self.lease_ms, self.idle_wait_ms, self.claim_batch);
        async move {
            loop {
                // A store that always has work answers without ever returning
                // Pending, and apalis's loop would then never yield: tasks
                // woken on this thread (result waiters, the coordinator)
                // would starve. Spending tokio's cooperative budget makes
                // the worker yield every so often.
                tokio::task::consume_budget().await;
                match store.claim(&queues, &worker, lease_ms, batch).await {
                    Ok(jobs) if !jobs.is_empty() => return jobs,
                    Ok(_) => store.wait_for_work(&queues, idle).await,
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
        if let Some(job) = self.claimed.pop_front() {
            return Poll::Ready(Some(Ok(Task::new(job))));
        }
        let claiming = match &mut self.claiming {
            Some(f) => f,
            None => self.claiming.insert(self.claim_next()),
        };
        match claiming.as_mut().poll(cx) {
            Poll::Ready(jobs) => {
                self.claiming = None;
                self.claimed.extend(jobs);
                let job = self.claimed.pop_front().expect("a claim returns jobs");
                Poll::Ready(Some(Ok(Task::new(job))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _w: &WorkerContext) -> Poll<Result<(), Never>> {
        // A claim cut short leaves at most a batch leased to us; the leases
        // lapse and the coordinator hands the jobs out again.
        self.claiming = None;
        if self.releasing.is_none() && !self.claimed.is_empty() {
            let (store, jobs) = (self.store.clone(), std::mem::take(&mut self.claimed));
            self.releasing = Some(
                async move {
                    for job in jobs {
                        if let Err(e) = store.release(&job.key).await {
                            tracing::warn!(error = %e, "could not hand a job back; its lease will lapse");
                        }
                    }
                }
                .boxed(),
            );
        }
        match &mut self.releasing {
            Some(f) => f.as_mut().poll(cx).map(|()| {
                self.releasing = None;
                Ok(())
            }),
            None => Poll::Ready(Ok(())),
        }
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
