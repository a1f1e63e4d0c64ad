//! Live progress of `baton run`: a bar of steps done / total with running
//! steps and retries on a terminal, and optionally every event as a JSON line.
//!
//! The store's recorded events are the source of truth; the live event
//! channel only says "something happened". So a slow terminal can make the
//! display lag, but never lose an event.

use std::time::Duration;

use baton_engine::MemoryStore;
use baton_store::{Event, EventKind, Store};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Follows one plan and its fallback plans.
pub struct Watcher {
    root: watch::Sender<Option<String>>,
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
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
        let mut doorbell = store.subscribe();
        let store = store.clone();
        let (root, mut followed) = watch::channel::<Option<String>>(None);
        let (stop, mut stopped) = oneshot::channel();
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
        let task = tokio::spawn(async move {
            // Wait until we know which plan to follow (or are told to stop).
            let mut stopping = false;
            tokio::select! {
                _ = followed.wait_for(Option::is_some) => {}
                _ = &mut stopped => stopping = true,
            }
            let root = followed.borrow().clone();
            let Some(root) = root else { return };
            let mut counts = Counts::default();
            // Each plan of the family with the id of the last event seen.
            let mut family: Vec<(String, u64)> = vec![(root, 0)];
            loop {
                let mut fresh: Vec<Event> = Vec::new();
                for (id, last) in &mut family {
                    if let Ok(evs) = store.events(id, *last).await {
                        if let Some(e) = evs.last() {
                            *last = e.id;
                        }
                        fresh.extend(evs);
                    }
                }
                fresh.sort_by_key(|e| e.id);
                for e in &fresh {
                    if e.kind == EventKind::PlanFallback {
                        if let Some(child) = e.data.get("fallbackPlanId").and_then(|c| c.as_str()) {
                            family.push((child.to_string(), 0));
                        }
                    }
                    if print_events {
                        let line = serde_json::to_string(e).unwrap_or_default();
                        match &bar {
                            // Above the bar, never through it.
                            Some(b) => b.suspend(|| eprintln!("{line}")),
                            None => eprintln!("{line}"),
                        }
                    }
                    counts.apply(e);
                }
                if let Some(b) = &bar {
                    b.set_length(counts.total);
                    b.set_position(counts.done);
                    b.set_message(format!(
                        "running {}  retries {}",
                        counts.running.max(0),
                        counts.retries
                    ));
                }
                if stopping {
                    // A fallback found in the last pass has events to read.
                    if fresh.iter().any(|e| e.kind == EventKind::PlanFallback) {
                        continue;
                    }
                    break;
                }
                tokio::select! {
                    _ = doorbell.recv() => {}
                    _ = &mut stopped => stopping = true,
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
        let _ = self.root.send(Some(plan_id.to_string()));
    }

    /// Shows what is left to show, then clears the display.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
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
