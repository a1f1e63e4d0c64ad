//! Live progress of `baton run`: a bar of steps done / total with running
//! steps and retries on a terminal, and optionally every event as a JSON line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_engine::MemoryStore;
use baton_store::{Event, EventKind};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Follows the store's live events for one plan and its fallbacks.
pub struct Watcher {
    root: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Default)]
struct Counts {
    total: u64,
    done: u64,
    running: i64,
    retries: u64,
}

impl Watcher {
    pub fn start(store: &MemoryStore, show: bool, print_events: bool) -> Watcher {
        let mut rx = store.subscribe();
        let root: Arc<Mutex<Option<String>>> = Arc::default();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let bar = show.then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        let follow = root.clone();
        let task = tokio::spawn(async move {
            let mut counts = Counts::default();
            // Events before `follow` names the plan are kept and replayed.
            let mut early: Vec<Arc<Event>> = Vec::new();
            let mut stopping = false;
            loop {
                let event = if stopping {
                    // Drain what is already buffered, then stop.
                    match rx.try_recv() {
                        Ok(e) => Ok(e),
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        biased;
                        e = rx.recv() => e,
                        _ = &mut stopped => {
                            stopping = true;
                            continue;
                        }
                    }
                };
                let event = match event {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                let root = follow.lock().expect("watcher lock").clone();
                let Some(root) = root else {
                    early.push(event);
                    continue;
                };
                for e in early.drain(..).chain(std::iter::once(event)) {
                    if !belongs(&e, &root) {
                        continue;
                    }
                    if print_events {
                        eprintln!("{}", serde_json::to_string(&e).unwrap_or_default());
                    }
                    counts.apply(&e);
                    if let Some(b) = &bar {
                        b.set_length(counts.total);
                        b.set_position(counts.done);
                        b.set_message(format!(
                            "running {}  retries {}",
                            counts.running.max(0),
                            counts.retries
                        ));
                    }
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Watcher { root, task, stop }
    }

    /// Names the plan to follow (its fallback plans are followed too).
    pub fn follow(&self, plan_id: &str) {
        *self.root.lock().expect("watcher lock") = Some(plan_id.to_string());
    }

    /// Stops following and clears the display.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn belongs(e: &Event, root: &str) -> bool {
    let id = &*e.plan_id;
    id == root
        || id
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with("/fallback"))
}

impl Counts {
    fn apply(&mut self, e: &Event) {
        match e.kind {
            EventKind::PlanStarted => {
                self.total += e.data.get("steps").and_then(|s| s.as_u64()).unwrap_or(0)
            }
            EventKind::StepStarted => self.running += 1,
            EventKind::StepCompleted => {
                self.running -= 1;
                self.done += 1;
            }
            EventKind::StepFailed => self.running -= 1,
            EventKind::StepRetrying => self.retries += 1,
            EventKind::StepDeadLettered => self.done += 1,
            EventKind::StepSkipped => {
                self.done += 1;
                if e.data.get("wasRunning").and_then(|v| v.as_bool()) == Some(true) {
                    self.running -= 1;
                }
            }
            _ => {}
        }
    }
}
