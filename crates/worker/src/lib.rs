//! Stateless step execution: apalis workers whose backend claims jobs from
//! the store, run the step's agent with its per-attempt timeout, and report
//! the outcome back to the store (which schedules retries durably).
//!
//! A worker holds no state of its own: everything it needs comes with the
//! claimed job, and everything it learns goes back in one store transition.

mod backend;
mod runner;

use std::future::Future;
use std::sync::Arc;

use apalis::layers::WorkerBuilderExt;
use apalis_core::worker::builder::WorkerBuilder;
use baton_agents::Registry;
use baton_store::Store;

pub use backend::StepBackend;
pub use runner::{InsightHook, StepRunner};

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown in logs and passed to the store with each claim.
    pub name: String,
    /// Queues served, e.g. `["system"]`.
    pub queues: Vec<String>,
    /// Steps run at once.
    pub concurrency: usize,
    /// How long a claimed job stays ours without a heartbeat; a job of a
    /// dead worker comes back after this.
    pub lease_ms: u64,
    /// Longest idle wait between checks for work when nothing wakes us.
    pub idle_wait_ms: u64,
    /// Jobs claimed per store transaction (at most; never more than ready).
    pub claim_batch: usize,
    /// Told of every agent insight (e.g. rules that submit plans).
    pub insight_hook: Option<Hook>,
}

/// An [`InsightHook`] in a [`WorkerConfig`].
#[derive(Clone)]
pub struct Hook(pub Arc<dyn InsightHook>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

impl WorkerConfig {
    pub fn new(name: impl Into<String>, queues: Vec<String>) -> Self {
        WorkerConfig {
            name: name.into(),
            queues,
            concurrency: 64,
            lease_ms: 10_000,
            idle_wait_ms: 1_000,
            claim_batch: 8,
            insight_hook: None,
        }
    }
}

/// Runs a worker until `shutdown` resolves; in-flight steps then finish
/// (apalis's graceful shutdown) before this returns.
pub async fn run_worker<S, F>(
    store: S,
    registry: Arc<Registry>,
    cfg: WorkerConfig,
    shutdown: F,
) -> Result<(), apalis_core::error::WorkerError>
where
    S: Store,
    F: Future<Output = ()> + Send + 'static,
{
    let backend = StepBackend::new(store.clone(), &cfg);
    let hook = cfg.insight_hook.as_ref().map(|h| h.0.clone());
    let runner = Arc::new(StepRunner::new(store, registry, cfg.lease_ms, hook));
    let worker = WorkerBuilder::new(cfg.name.clone())
        .backend(backend)
        .data(runner)
        .concurrency(cfg.concurrency.max(1))
        .build(runner::run_step::<S>);
    worker
        .run_until(async move {
            shutdown.await;
            Ok::<(), std::io::Error>(())
        })
        .await
}
