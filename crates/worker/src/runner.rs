//! Running one claimed job: look up the agent, call it under the step's
//! per-attempt timeout while keeping the lease alive, and report the outcome
//! (result, retry with the plan's backoff, or dead letter) to the store.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use baton_agents::{AgentCall, AgentError, Dependencies, EventSink, Registry, StateStore};
use baton_store::{EventKind, Job, NewEvent, Store};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Shared by every step a worker runs.
pub struct StepRunner<S> {
    store: S,
    registry: Arc<Registry>,
    lease_ms: u64,
    /// Agent events go through one ordered channel to the store, so an agent
    /// emitting from synchronous code never waits on the store.
    events: mpsc::UnboundedSender<EventMsg>,
}

/// What the event forwarder receives.
enum EventMsg {
    Event(NewEvent),
    /// Answered once every event sent before it is recorded.
    Flush(oneshot::Sender<()>),
}

impl<S: Store> StepRunner<S> {
    pub fn new(
        store: S,
        registry: Arc<Registry>,
        lease_ms: u64,
        hook: Option<Arc<dyn InsightHook>>,
    ) -> Self {
        let (events, mut rx) = mpsc::unbounded_channel::<EventMsg>();
        let sink_store = store.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    EventMsg::Event(e) => {
                        let told = hook
                            .as_ref()
                            .filter(|_| e.kind == EventKind::AgentInsight)
                            .map(|h| (h.clone(), e.clone()));
                        match sink_store.emit(e).await {
                            Ok(()) => {
                                if let Some((hook, e)) = told {
                                    hook.on_insight(&e).await;
                                }
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "could not record an agent event")
                            }
                        }
                    }
                    EventMsg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        StepRunner {
            store,
            registry,
            lease_ms,
            events,
        }
    }

    /// Runs one attempt and records its outcome.
    pub async fn run(&self, job: Job) {
        let emitted = AtomicBool::new(false);
        let outcome = self.attempt(&job, &emitted).await;
        if emitted.load(Ordering::Relaxed) {
            // The step's insights are recorded before its outcome.
            self.flush_events().await;
        }
        let key = &job.key;
        let recorded = match outcome {
            Attempt::Succeeded(data) => self.store.complete(key, data).await,
            Attempt::Failed(err) => {
                let retry = if err.retryable {
                    job.retry_policy().retry_after(key.attempt, fastrand::f64())
                } else {
                    None
                };
                let event = new_event(
                    &job,
                    EventKind::AgentError,
                    json!({
                        "error": err.message,
                        "retryable": err.retryable,
                    }),
                );
                if let Err(e) = self.store.emit(event).await {
                    tracing::warn!(error = %e, "could not record an agent error");
                }
                self.store.fail(key, &err.message, retry).await
            }
            Attempt::Abandoned => return,
        };
        if let Err(e) = recorded {
            // The lease lapses and the job runs again: at least once.
            tracing::error!(plan = %key.plan_id, step = %job.spec.id, error = %e,
                "could not record a step outcome; it will run again after its lease");
        }
    }

    async fn attempt(&self, job: &Job, emitted: &AtomicBool) -> Attempt {
        let Some(agent_id) = job.spec.agent_id() else {
            // Joins complete inside the store; a join here is a store bug,
            // reported rather than silently completed.
            return Attempt::Failed(AgentError::permanent("join steps are not run by workers"));
        };
        let Some(agent) = self.registry.get(agent_id) else {
            return Attempt::Failed(AgentError::retryable(format!(
                "agent '{agent_id}' is not available on this worker"
            )));
        };
        let sink = StepEvents {
            job,
            tx: &self.events,
            emitted,
        };
        let call = AgentCall {
            plan_id: &job.key.plan_id,
            step_id: &job.spec.id,
            action: job.spec.action().unwrap_or_default(),
            input: &job.spec.input,
            dependencies: Dependencies(&job.dependencies),
            attempt: job.key.attempt,
            events: &sink,
            state: &StoreState(&self.store),
        };
        let agent_call = AssertUnwindSafe(agent.call(call)).catch_unwind();
        let timed = async {
            match job.spec.timeout_ms {
                Some(ms) => tokio::time::timeout(Duration::from_millis(ms), agent_call)
                    .await
                    .map_err(|_| AgentError::retryable(format!("step timed out after {ms} ms"))),
                None => Ok(agent_call.await),
            }
        };
        tokio::pin!(timed);
        let heartbeat = Duration::from_millis((self.lease_ms / 3).max(1));
        loop {
            tokio::select! {
                biased;
                out = &mut timed => return match out {
                    Ok(Ok(Ok(data))) => Attempt::Succeeded(data),
                    Ok(Ok(Err(e))) | Err(e) => Attempt::Failed(e),
                    Ok(Err(panic)) => Attempt::Failed(AgentError::retryable(format!(
                        "agent '{agent_id}' panicked: {}", panic_message(&panic)
                    ))),
                },
                // The plan ended or the attempt was reaped: stop now.
                _ = self.store.abandoned(&job.key) => return Attempt::Abandoned,
                _ = tokio::time::sleep(heartbeat) => {
                    match self.store.extend_lease(&job.key, self.lease_ms).await {
                        Ok(true) => {}
                        // The step is no longer ours (plan ended, cancelled,
                        // or reaped): stop working on it.
                        Ok(false) => return Attempt::Abandoned,
                        Err(e) => tracing::warn!(error = %e, "lease extension failed"),
                    }
                }
            }
        }
    }

    async fn flush_events(&self) {
        let (done, flushed) = oneshot::channel();
        if self.events.send(EventMsg::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

enum Attempt {
    Succeeded(Value),
    Failed(AgentError),
    /// The step was taken from us while it ran; nothing to record.
    Abandoned,
}

fn new_event(job: &Job, kind: EventKind, data: Value) -> NewEvent {
    NewEvent {
        kind,
        plan_id: job.key.plan_id.clone(),
        step_id: Some(job.spec.id.clone()),
        agent_id: job.spec.shared_agent_id().cloned(),
        attempt: Some(job.key.attempt),
        data,
    }
}

/// Told of each agent insight once it is recorded (rules that submit plans
/// when an insight arrives hang here).
pub trait InsightHook: Send + Sync {
    fn on_insight<'a>(&'a self, event: &'a NewEvent) -> BoxFuture<'a, ()>;
}

/// Agent state kept in the store, so every worker sees the same.
struct StoreState<'a, S>(&'a S);

impl<S: Store> StateStore for StoreState<'_, S> {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(Value, u64)>, String>> {
        Box::pin(async move { self.0.load_state(key).await.map_err(|e| e.to_string()) })
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        expected: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, String>> {
        Box::pin(async move {
            self.0
                .save_state(key, value, expected, ttl_ms)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

struct StepEvents<'a> {
    job: &'a Job,
    tx: &'a mpsc::UnboundedSender<EventMsg>,
    emitted: &'a AtomicBool,
}

impl EventSink for StepEvents<'_> {
    fn insight(&self, kind: &str, data: Value) {
        let data = json!({ "type": kind, "data": data });
        self.emitted.store(true, Ordering::Relaxed);
        let _ = self.tx.send(EventMsg::Event(new_event(
            self.job,
            EventKind::AgentInsight,
            data,
        )));
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The apalis handler: every outcome is recorded in the store, so apalis
/// itself never retries (its retries would not be durable). Steps run inside
/// the worker's task rather than as tasks of their own: a spawn per step
/// cost throughput, and agents with CPU-heavy work use `spawn_blocking`.
pub async fn run_step<S: Store>(
    job: Job,
    runner: Data<Arc<StepRunner<S>>>,
) -> Result<(), BoxDynError> {
    runner.run(job).await;
    Ok(())
}
