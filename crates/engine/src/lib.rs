//! The engine: one process running the planner, workers and a coordinator
//! over one store. With the in-memory store this is baton's embedded default
//! (`baton run`, no Redis); the roles talk only through the store, exactly as
//! they do when they run as separate processes.

use std::sync::Arc;

use baton_agents::Registry;
use baton_coordinator::{cancel_plan, Coordinator, CoordinatorConfig};
use baton_plan::{Limits, PlanErrors};
use baton_planner::templates::TemplateSet;
use baton_planner::{Planner, Submission, SubmitError};
use baton_store::NewEvent;
use baton_store::{PlanResult, Store, StoreError};
use baton_worker::{run_worker, Hook, InsightHook, WorkerConfig};
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use baton_store::MemoryStore;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// apalis workers started; each serves every queue of the registry.
    pub workers: usize,
    /// Steps each worker runs at once.
    pub concurrency: usize,
    pub lease_ms: u64,
    pub limits: Limits,
    pub coordinator: CoordinatorConfig,
    /// Plan templates; those with `triggers` are submitted when an agent
    /// reports a matching insight.
    pub templates: Option<Arc<TemplateSet>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 2,
            concurrency: 256,
            lease_ms: 30_000,
            limits: Limits::default(),
            coordinator: CoordinatorConfig::default(),
            templates: None,
        }
    }
}

/// Why a plan could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid plan:\n{0}")]
    Invalid(PlanErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SubmitError> for RunError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Store(s) => RunError::Store(s),
        }
    }
}

/// A running planner + workers + coordinator.
pub struct Engine<S> {
    store: S,
    planner: Planner<S>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl<S: Store> Engine<S> {
    /// Starts the roles on the current tokio runtime. On a current-thread
    /// runtime every store transition happens on one core, with no lock
    /// contention and no cache lines bouncing between cores: on the 2-core
    /// machines measured that runs more steps per second than a
    /// multi-thread runtime (see the `embedded` benchmark). Agents with
    /// CPU-heavy work hand it to `spawn_blocking` either way.
    pub fn start(store: S, registry: Registry, cfg: EngineConfig) -> Self {
        let registry = Arc::new(registry);
        let planner = Planner::new(store.clone(), registry.clone(), cfg.limits.clone());
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();

        let coordinator = Coordinator::new(store.clone(), planner.clone(), cfg.coordinator.clone());
        let signal = stop.clone().cancelled_owned();
        tasks.push(tokio::spawn(coordinator.run(signal)));

        for n in 0..cfg.workers.max(1) {
            let mut wcfg = WorkerConfig::new(format!("embedded-{n}"), registry.queues());
            wcfg.concurrency = cfg.concurrency;
            wcfg.lease_ms = cfg.lease_ms;
            wcfg.insight_hook = cfg.templates.clone().map(|templates| {
                Hook(Arc::new(InsightRules {
                    planner: planner.clone(),
                    templates,
                }))
            });
            let (store, registry, signal) = (
                store.clone(),
                registry.clone(),
                stop.clone().cancelled_owned(),
            );
            tasks.push(tokio::spawn(async move {
                if let Err(e) = run_worker(store, registry, wcfg, signal).await {
                    tracing::error!(error = %e, "worker stopped with an error");
                }
            }));
        }
        Engine {
            store,
            planner,
            stop,
            tasks,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn planner(&self) -> &Planner<S> {
        &self.planner
    }

    /// Submits plan JSON; returns at once with the plan's id.
    pub async fn submit_text(&self, text: &str) -> Result<Submission, SubmitError> {
        self.planner.submit_text(text, None).await
    }

    /// Submits plan JSON and waits for the plan to end.
    pub async fn run_text(&self, text: &str) -> Result<Arc<PlanResult>, RunError> {
        match self.submit_text(text).await? {
            Submission::Accepted { id, .. } => Ok(self.store.wait_result(&id).await?),
            Submission::Rejected { errors, .. } => Err(RunError::Invalid(errors)),
        }
    }

    /// Cancels a plan (and its running fallback).
    pub async fn cancel(&self, plan_id: &str) -> Result<bool, StoreError> {
        cancel_plan(&self.store, plan_id).await
    }

    /// Stops every role: workers finish their in-flight steps first.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl<S> Drop for Engine<S> {
    /// An engine dropped without `shutdown` still stops its roles.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Rules: an insight whose type a template lists in `triggers` submits that
/// template, with the insight's data as its parameters. The plan id names
/// the template and the attempt that reported the insight, so a repeated
/// report of one attempt submits once.
struct InsightRules<S> {
    planner: Planner<S>,
    templates: Arc<TemplateSet>,
}

impl<S: Store> InsightHook for InsightRules<S> {
    fn on_insight<'a>(&'a self, event: &'a NewEvent) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let kind = event.data["type"].as_str().unwrap_or_default();
            let data = &event.data["data"];
            for template in self.templates.triggered_by(kind) {
                let id = format!(
                    "{}.{}.{}.{}",
                    template.name,
                    event.plan_id.replace('/', "."),
                    event.step_id.as_deref().unwrap_or("-"),
                    event.attempt.unwrap_or(0)
                );
                let plan = match template.instantiate(&template.params_from(data)) {
                    Ok(plan) => plan,
                    Err(e) => {
                        tracing::warn!(template = %template.name, error = %e, "rule not applied");
                        continue;
                    }
                };
                match self.planner.submit_text(&plan.to_string(), Some(&id)).await {
                    Ok(s) => {
                        tracing::info!(template = %template.name, plan = %s.id(), "rule submitted a plan")
                    }
                    Err(e) => {
                        tracing::warn!(template = %template.name, error = %e, "rule could not submit")
                    }
                }
            }
        })
    }
}
