//! The in-memory store: all coordination state behind one mutex, for the
//! embedded engine (`baton run`) and as the reference the Redis store must
//! match (both run one conformance suite).
//!
//! Queue and schedule entries are deleted lazily: a transition that makes
//! one obsolete (a plan ending with steps still queued) leaves it in place,
//! and whoever later pops it checks it against the step's current state, so
//! every transition stays O(affected steps) instead of O(queue length).
//! Lease and deadline entries leave their indexes as steps and plans end, so
//! those indexes hold only what is live.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_plan::{PlanErrors, StepKind, ValidPlan, ValidStep};
use indexmap::IndexMap;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, oneshot, Notify};

use crate::model::*;
use crate::{Store, StoreError, StoreResult};

/// Tuning of the in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Events kept in the global ring (the capped `baton:events` stream).
    pub global_events: usize,
    /// Capacity of the live event channel; slow subscribers skip ahead.
    pub live_events: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            global_events: 10_000,
            live_events: 4_096,
        }
    }
}

/// In-process [`Store`]. Cheap to clone: clones share state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Woken when a job is queued or a retry is scheduled.
    work: Notify,
    /// Workers currently waiting on `work`.
    idle: AtomicUsize,
    /// Woken when running steps are taken from their workers.
    abandon: Notify,
    /// Woken when lifecycle work is queued.
    lifecycle: Notify,
    live: broadcast::Sender<Arc<Event>>,
}

#[derive(Default)]
struct State {
    /// Boxed, so that growing the table moves pointers, not records (a
    /// rehash of 50k inline records held the lock for 60 ms). foldhash is
    /// randomly seeded, so user-chosen plan ids cannot force collisions.
    plans: HashMap<Arc<str>, Box<PlanRec>, foldhash::fast::RandomState>,
    sched: Sched,
    log: EventLog,
    lifecycle: VecDeque<LifecycleItem>,
    lifecycle_taken: Vec<LifecycleItem>,
    /// Agent state: key -> (value, version, expires at).
    agent_state: HashMap<String, (Value, u64, u64)>,
    /// Ended plans in the order they ended, for retention.
    ended: VecDeque<(u64, Arc<str>, u64)>,
    /// Incarnations handed out so far.
    runs: u64,
}

/// A retry waiting for its due time: (plan id, incarnation, step, attempt
/// that failed).
type ScheduledRetry = (Arc<str>, u64, u32, u32);

/// A queued step: (plan id, plan incarnation, step index).
type StepRef = (Arc<str>, u64, u32);

#[derive(Default)]
struct Sched {
    queues: HashMap<Arc<str>, VecDeque<StepRef>, foldhash::fast::RandomState>,
    /// (due, sequence) -> the retry
    scheduled: BTreeMap<(u64, u64), ScheduledRetry>,
    /// (lease end, plan, incarnation, step, attempt)
    leases: BTreeSet<(u64, Arc<str>, u64, u32, u32)>,
    deadlines: BTreeSet<(u64, Arc<str>)>,
    seq: u64,
}

impl Sched {
    /// Forgets the lease of a step leaving `Running`, so the lease index
    /// holds only running jobs.
    fn release_lease(&mut self, plan: &PlanRec, step: usize) {
        let st = &plan.steps[step];
        if st.status == StepStatus::Running {
            self.leases.remove(&(
                st.lease_until,
                plan.id.clone(),
                plan.run,
                step as u32,
                st.attempts,
            ));
        }
    }

    /// Queues a step of `plan` on its queue (at the back, or at the front
    /// for a job handed back).
    fn enqueue(&mut self, plan: &PlanRec, step: usize, front: bool) {
        let queue = plan.queues[step]
            .clone()
            .unwrap_or_else(|| Arc::from("default"));
        let q = self.queues.entry(queue).or_default();
        let entry = (plan.id.clone(), plan.run, step as u32);
        if front {
            q.push_front(entry);
        } else {
            q.push_back(entry);
        }
    }
}

#[derive(Default)]
struct EventLog {
    seq: u64,
    ring: VecDeque<Arc<Event>>,
    cap: usize,
    live: Option<broadcast::Sender<Arc<Event>>>,
}

/// What a transition asks for once the lock is released.
#[derive(Default)]
struct Effects {
    wake_work: bool,
    wake_lifecycle: bool,
    wake_abandoned: bool,
    finished: Vec<(Vec<ResultWaiter>, Arc<PlanResult>)>,
}

struct PlanRec {
    id: Arc<str>,
    /// This incarnation of the id (see [`JobKey::run`]).
    run: u64,
    spec: ValidPlan,
    steps: Vec<StepRec>,
    queues: Vec<Option<Arc<str>>>,
    status: PlanStatus,
    /// Steps not yet in a terminal state.
    remaining: usize,
    /// Sequential plans: index of the step whose turn it is.
    cursor: usize,
    submitted_at: u64,
    started_at: u64,
    deadline: Option<u64>,
    parent: Option<Arc<str>>,
    awaiting_fallback: bool,
    fallback_child: Option<Arc<str>>,
    primary: Option<PlanResult>,
    result: Option<Arc<PlanResult>>,
    /// Steps of this plan that failed for good.
    dead: Vec<DeadLetter>,
    /// Shared with the global ring and live subscribers: one allocation
    /// per event, however many places hold it.
    events: Vec<Arc<Event>>,
    waiters: Vec<ResultWaiter>,
}

/// Someone blocked in `wait_result` for a plan.
type ResultWaiter = oneshot::Sender<Arc<PlanResult>>;

#[derive(Clone)]
struct StepRec {
    status: StepStatus,
    attempts: u32,
    deps_left: u32,
    data: Option<Value>,
    error: Option<String>,
    first_started: Option<u64>,
    finished: Option<u64>,
    lease_until: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    pub fn with_config(cfg: MemoryConfig) -> Self {
        let (live, _) = broadcast::channel(cfg.live_events.max(16));
        let state = State {
            log: EventLog {
                cap: cfg.global_events,
                live: Some(live.clone()),
                ..EventLog::default()
            },
            ..State::default()
        };
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                work: Notify::new(),
                idle: AtomicUsize::new(0),
                abandon: Notify::new(),
                lifecycle: Notify::new(),
                live,
            }),
        }
    }

    /// Live events of every plan, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.live.subscribe()
    }

    /// The newest events of all plans (the capped global stream), oldest first.
    pub fn global_events(&self) -> Vec<Event> {
        self.inner
            .state
            .lock()
            .log
            .ring
            .iter()
            .map(|e| (**e).clone())
            .collect()
    }

    /// Number of plans held (ended ones included until purged).
    pub fn plan_count(&self) -> usize {
        self.inner.state.lock().plans.len()
    }

    /// Runs `f` on the state and carries out the effects it asked for.
    fn transact<T>(&self, f: impl FnOnce(&mut State, &mut Effects) -> T) -> T {
        let mut fx = Effects::default();
        let out = {
            let mut st = self.inner.state.lock();
            f(&mut st, &mut fx)
        };
        if fx.wake_work && self.inner.idle.load(Ordering::SeqCst) > 0 {
            self.inner.work.notify_waiters();
        }
        if fx.wake_lifecycle {
            self.inner.lifecycle.notify_waiters();
        }
        if fx.wake_abandoned {
            self.inner.abandon.notify_waiters();
        }
        for (waiters, result) in fx.finished {
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
        out
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    fn push(
        &mut self,
        plan: &mut PlanRec,
        kind: EventKind,
        step: Option<u32>,
        attempt: Option<u32>,
        data: Value,
        now: u64,
    ) {
        self.push_timed(plan, kind, step, attempt, data, None, now);
    }

    /// Like [`EventLog::push`], for events that end something that took
    /// `duration` ms (a step, a plan).
    #[allow(clippy::too_many_arguments)]
    fn push_timed(
        &mut self,
        plan: &mut PlanRec,
        kind: EventKind,
        step: Option<u32>,
        attempt: Option<u32>,
        data: Value,
        duration: Option<u64>,
        now: u64,
    ) {
        let (step_id, agent_id) = match step {
            Some(i) => {
                let spec = &plan.spec.steps[i as usize];
                (Some(spec.id.clone()), spec.shared_agent_id().cloned())
            }
            None => (None, None),
        };
        self.record(
            &mut plan.events,
            Event {
                id: 0,
                kind,
                plan_id: plan.id.clone(),
                step_id,
                agent_id,
                attempt,
                timestamp: now,
                duration,
                data,
            },
        );
    }

    fn record(&mut self, plan_events: &mut Vec<Arc<Event>>, mut event: Event) {
        self.seq += 1;
        event.id = self.seq;
        let event = Arc::new(event);
        if self.cap > 0 {
            if self.ring.len() >= self.cap {
                self.ring.pop_front();
            }
            self.ring.push_back(event.clone());
        }
        if let Some(live) = &self.live {
            if live.receiver_count() > 0 {
                let _ = live.send(event.clone());
            }
        }
        plan_events.push(event);
    }
}

impl PlanRec {
    fn new(p: NewPlan, run: u64, now: u64) -> PlanRec {
        let n = p.plan.steps.len();
        let steps = p
            .plan
            .steps
            .iter()
            .map(|s| StepRec {
                status: StepStatus::Pending,
                attempts: 0,
                deps_left: s.dependencies.len() as u32,
                data: None,
                error: None,
                first_started: None,
                finished: None,
                lease_until: 0,
            })
            .collect();
        PlanRec {
            id: Arc::from(p.id.as_str()),
            run,
            queues: p.queues,
            steps,
            status: PlanStatus::Running,
            remaining: n,
            cursor: 0,
            submitted_at: p.submitted_at,
            started_at: now,
            deadline: p.plan.timeout_ms.map(|t| now.saturating_add(t)),
            parent: p.parent.as_deref().map(Arc::from),
            awaiting_fallback: false,
            fallback_child: None,
            primary: None,
            result: None,
            dead: Vec::new(),
            // Every step starts and ends, plus the plan's own events.
            events: Vec::with_capacity(2 * n + 4),
            waiters: Vec::new(),
            spec: p.plan,
        }
    }

    /// Open: running its own steps (not ended, not handed to a fallback).
    fn is_open(&self) -> bool {
        self.status == PlanStatus::Running && !self.awaiting_fallback
    }

    fn holds(&self, key: &JobKey) -> bool {
        self.is_open()
            && self.run == key.run
            && self
                .steps
                .get(key.step as usize)
                .is_some_and(|s| s.status == StepStatus::Running && s.attempts == key.attempt)
    }

    fn spec(&self, step: usize) -> &Arc<ValidStep> {
        &self.spec.steps[step]
    }

    fn dependency_results(&self, step: usize) -> Vec<(Arc<str>, Value)> {
        self.spec(step)
            .dependencies
            .iter()
            .map(|&d| {
                let data = self.steps[d].data.clone().unwrap_or(Value::Null);
                (self.spec(d).id.clone(), data)
            })
            .collect()
    }

    fn job(&self, step: usize) -> Job {
        Job {
            key: JobKey {
                plan_id: self.id.clone(),
                run: self.run,
                step: step as u32,
                attempt: self.steps[step].attempts,
            },
            spec: self.spec(step).clone(),
            dependencies: self.dependency_results(step),
            lease_until: self.steps[step].lease_until,
        }
    }

    /// The plan's result. Called once, when the plan's own steps are done:
    /// step data moves into the result instead of being copied.
    fn build_result(&mut self, status: PlanStatus, now: u64) -> PlanResult {
        let mut results = IndexMap::with_capacity(self.steps.len());
        let mut errors = IndexMap::new();
        for (spec, st) in self.spec.steps.iter().zip(&mut self.steps) {
            let duration = match (st.first_started, st.finished) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => 0,
            };
            let r = StepResult {
                success: st.status == StepStatus::Succeeded,
                status: st.status,
                data: st.data.take().unwrap_or(Value::Null),
                error: st.error.clone(),
                attempts: st.attempts,
                duration,
            };
            if let Some(e) = &st.error {
                errors.insert(spec.id.clone(), e.clone());
            }
            results.insert(spec.id.clone(), r);
        }
        PlanResult {
            plan_id: self.id.to_string(),
            status,
            success: status == PlanStatus::Succeeded,
            duration: now.saturating_sub(self.started_at),
            results,
            errors: (!errors.is_empty()).then_some(errors),
            submitted_at: self.submitted_at,
            started_at: self.started_at,
            finished_at: now,
            fallback_used: false,
            primary_status: None,
            fallback: None,
            rejection: None,
        }
    }
}

impl State {
    /// Makes a step whose dependencies succeeded runnable: an agent step
    /// goes to its queue; a join is started and its data (its dependencies'
    /// results) returned for the caller to record.
    fn activate(
        &mut self,
        pid: &Arc<str>,
        step: usize,
        now: u64,
        fx: &mut Effects,
    ) -> Option<Value> {
        let plan = self.plans.get_mut(pid).expect("plan of a live transition");
        if plan.steps[step].status != StepStatus::Pending {
            return None;
        }
        match plan.spec(step).kind {
            StepKind::Join => {
                let st = &mut plan.steps[step];
                st.status = StepStatus::Running;
                st.attempts = 1;
                st.first_started = Some(now);
                self.log.push(
                    plan,
                    EventKind::StepStarted,
                    Some(step as u32),
                    Some(1),
                    Value::Null,
                    now,
                );
                let joined: Map<String, Value> = plan
                    .dependency_results(step)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                Some(Value::Object(joined))
            }
            StepKind::Agent { .. } => {
                plan.steps[step].status = StepStatus::Ready;
                self.sched.enqueue(plan, step, false);
                fx.wake_work = true;
                None
            }
        }
    }

    /// Records a step's success; returns the dependents it made ready
    /// (parallel plans; sequential ones move on in [`State::next_turn`]).
    fn mark_succeeded(&mut self, pid: &Arc<str>, step: usize, data: Value, now: u64) -> Vec<usize> {
        let plan = self.plans.get_mut(pid).expect("plan of a live transition");
        let st = &mut plan.steps[step];
        st.status = StepStatus::Succeeded;
        st.data = Some(data);
        st.error = None;
        st.finished = Some(now);
        let duration = now.saturating_sub(st.first_started.unwrap_or(now));
        let attempt = st.attempts;
        plan.remaining -= 1;
        self.log.push_timed(
            plan,
            EventKind::StepCompleted,
            Some(step as u32),
            Some(attempt),
            Value::Null,
            Some(duration),
            now,
        );
        let mut ready = Vec::new();
        let parallel = plan.spec.parallel;
        let PlanRec { spec, steps, .. } = &mut **plan;
        for &d in &spec.steps[step].dependents {
            let dep = &mut steps[d];
            dep.deps_left -= 1;
            if dep.deps_left == 0 && dep.status == StepStatus::Pending && parallel {
                ready.push(d);
            }
        }
        ready
    }

    /// Carries a plan forward from `ready` steps until it waits on workers:
    /// joins complete on the spot, sequential plans take their next turn,
    /// and the plan ends when no step is left. A work list, not recursion,
    /// so a chain of a thousand joins costs no stack.
    fn drive(
        &mut self,
        pid: &Arc<str>,
        ready: impl IntoIterator<Item = usize>,
        now: u64,
        fx: &mut Effects,
    ) {
        let mut ready: VecDeque<usize> = ready.into_iter().collect();
        loop {
            while let Some(i) = ready.pop_front() {
                if let Some(data) = self.activate(pid, i, now, fx) {
                    ready.extend(self.mark_succeeded(pid, i, data, now));
                }
            }
            match self.next_turn(pid, now, fx) {
                Some(i) => ready.push_back(i),
                None => return,
            }
        }
    }

    /// Records a step's success and carries its plan forward.
    fn succeed(&mut self, pid: &Arc<str>, step: usize, data: Value, now: u64, fx: &mut Effects) {
        let ready = self.mark_succeeded(pid, step, data, now);
        self.drive(pid, ready, now, fx);
    }

    /// A step failed for good: dead-letter it, skip what depended on it.
    fn fail_for_good(
        &mut self,
        pid: &Arc<str>,
        step: usize,
        error: &str,
        now: u64,
        fx: &mut Effects,
    ) {
        let plan = self.plans.get_mut(pid).expect("plan of a live transition");
        let st = &mut plan.steps[step];
        st.status = StepStatus::Failed;
        st.error = Some(error.to_string());
        st.finished = Some(now);
        let attempts = st.attempts;
        plan.remaining -= 1;
        let spec = plan.spec(step);
        let letter = DeadLetter {
            plan_id: pid.to_string(),
            step_id: spec.id.to_string(),
            agent_id: spec.agent_id().map(str::to_string),
            action: spec.action().map(str::to_string),
            error: error.to_string(),
            attempts,
            at: now,
        };
        plan.dead.push(letter);
        self.log.push(
            plan,
            EventKind::StepDeadLettered,
            Some(step as u32),
            Some(attempts),
            json!({ "error": error }),
            now,
        );
        // Skip every step that needs this one, transitively.
        let mut stack: Vec<(usize, usize)> = plan
            .spec(step)
            .dependents
            .iter()
            .map(|&d| (d, step))
            .collect();
        while let Some((d, because)) = stack.pop() {
            if plan.steps[d].status != StepStatus::Pending {
                continue;
            }
            plan.steps[d].status = StepStatus::Skipped;
            plan.steps[d].finished = Some(now);
            plan.remaining -= 1;
            let reason = format!("dependency '{}' did not succeed", plan.spec(because).id);
            self.log.push(
                plan,
                EventKind::StepSkipped,
                Some(d as u32),
                None,
                json!({ "reason": reason }),
                now,
            );
            stack.extend(plan.spec(d).dependents.iter().map(|&x| (x, d)));
        }
        if plan.spec.fail_fast {
            let reason = format!(
                "step '{}' failed and the plan is failFast",
                plan.spec(step).id
            );
            self.finish(pid, PlanStatus::Failed, &reason, now, fx);
        } else {
            self.drive(pid, [], now, fx);
        }
    }

    /// Ends the plan when no step is left; in a sequential plan, returns
    /// the step whose turn has come.
    fn next_turn(&mut self, pid: &Arc<str>, now: u64, fx: &mut Effects) -> Option<usize> {
        let plan = self.plans.get_mut(pid).expect("plan of a live transition");
        if !plan.is_open() {
            return None;
        }
        if plan.remaining == 0 {
            let ok = plan.steps.iter().all(|s| s.status == StepStatus::Succeeded);
            let status = if ok {
                PlanStatus::Succeeded
            } else {
                PlanStatus::Failed
            };
            self.finish(pid, status, "a step failed", now, fx);
            return None;
        }
        if plan.spec.parallel {
            return None;
        }
        while plan.cursor < plan.steps.len() && plan.steps[plan.cursor].status.is_terminal() {
            plan.cursor += 1;
        }
        let c = plan.cursor;
        (c < plan.steps.len() && plan.steps[c].status == StepStatus::Pending).then(|| {
            debug_assert_eq!(
                plan.steps[c].deps_left, 0,
                "sequential order honours dependencies"
            );
            c
        })
    }

    /// Ends the plan's own run with `status`: steps still open are skipped;
    /// a failed or timed-out plan with a fallback waits for it, any other
    /// ends for good.
    fn finish(
        &mut self,
        pid: &Arc<str>,
        status: PlanStatus,
        reason: &str,
        now: u64,
        fx: &mut Effects,
    ) {
        let plan = self.plans.get_mut(pid).expect("plan of a live transition");
        if !plan.is_open() {
            return;
        }
        for i in 0..plan.steps.len() {
            if plan.steps[i].status.is_terminal() {
                continue;
            }
            let was_running = plan.steps[i].status == StepStatus::Running;
            fx.wake_abandoned |= was_running;
            self.sched.release_lease(plan, i);
            let st = &mut plan.steps[i];
            st.status = StepStatus::Skipped;
            st.finished = Some(now);
            if was_running {
                st.error = Some(format!("abandoned: {reason}"));
            }
            self.log.push(
                plan,
                EventKind::StepSkipped,
                Some(i as u32),
                None,
                json!({ "reason": reason, "wasRunning": was_running }),
                now,
            );
        }
        plan.remaining = 0;
        if let Some(d) = plan.deadline {
            self.sched.deadlines.remove(&(d, pid.clone()));
        }
        let wants_fallback = plan.spec.fallback.is_some()
            && matches!(status, PlanStatus::Failed | PlanStatus::TimedOut);
        if wants_fallback {
            plan.awaiting_fallback = true;
            plan.primary = Some(plan.build_result(status, now));
            self.lifecycle.push_back(LifecycleItem::StartFallback {
                plan_id: pid.to_string(),
            });
            fx.wake_lifecycle = true;
            return;
        }
        let result = plan.build_result(status, now);
        self.end(pid, result, now, fx);
    }

    /// Records the final result of a plan and tells whoever waits for it.
    fn end(&mut self, pid: &Arc<str>, result: PlanResult, now: u64, fx: &mut Effects) {
        let plan = self.plans.get_mut(pid).expect("plan of a live transition");
        plan.status = result.status;
        plan.awaiting_fallback = false;
        let data = json!({
            "success": result.success,
            "fallbackUsed": result.fallback_used,
        });
        self.log.push_timed(
            plan,
            EventKind::terminal_for(result.status),
            None,
            None,
            data,
            Some(result.duration),
            now,
        );
        let result = Arc::new(result);
        let waiters = std::mem::take(&mut plan.waiters);
        if !waiters.is_empty() {
            fx.finished.push((waiters, result.clone()));
        }
        plan.result = Some(result);
        self.ended.push_back((now, pid.clone(), plan.run));
        if let Some(parent) = plan.parent.clone() {
            self.lifecycle.push_back(LifecycleItem::FallbackEnded {
                parent_id: parent.to_string(),
                child_id: pid.to_string(),
            });
            fx.wake_lifecycle = true;
        }
    }

    /// Moves retries that fell due to their queues.
    fn promote_due(&mut self, now: u64, fx: &mut Effects) {
        while let Some(entry) = self.sched.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (pid, run, step, attempt) = entry.remove();
            let Some(plan) = self.plans.get_mut(&pid) else {
                continue;
            };
            // An entry of an earlier plan under the same id is stale.
            let open = plan.is_open() && plan.run == run;
            let Some(st) = plan.steps.get_mut(step as usize) else {
                continue;
            };
            if !open || st.status != StepStatus::Scheduled || st.attempts != attempt {
                continue;
            }
            st.status = StepStatus::Pending;
            self.drive(&pid, [step as usize], now, fx);
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.sched.scheduled.keys().next().map(|k| k.0)
    }
}

/// Uncounts an idle worker however its wait ends (woken, timed out, dropped).
struct IdleGuard<'a>(&'a AtomicUsize);

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn wait_ms(until: Option<u64>, max_wait_ms: u64) -> u64 {
    until.map_or(max_wait_ms, |t| t.saturating_sub(now_ms()).min(max_wait_ms))
}

impl Store for MemoryStore {
    async fn create_plan(&self, plan: NewPlan) -> StoreResult<bool> {
        let now = now_ms();
        self.transact(|st, fx| {
            if st.plans.contains_key(plan.id.as_str()) {
                return Ok(false);
            }
            st.runs += 1;
            let mut rec = PlanRec::new(plan, st.runs, now);
            let pid = rec.id.clone();
            let n = rec.steps.len();
            let data = json!({ "steps": n, "parent": rec.parent.as_deref() });
            let submitted_at = rec.submitted_at;
            st.log.push(
                &mut rec,
                EventKind::PlanSubmitted,
                None,
                None,
                data.clone(),
                submitted_at,
            );
            st.log
                .push(&mut rec, EventKind::PlanStarted, None, None, data, now);
            if let Some(d) = rec.deadline {
                st.sched.deadlines.insert((d, pid.clone()));
                fx.wake_lifecycle = true;
            }
            // Sequential plans start from their first step in next_turn.
            let roots: Vec<usize> = if rec.spec.parallel {
                (0..n).filter(|&i| rec.steps[i].deps_left == 0).collect()
            } else {
                Vec::new()
            };
            st.plans.insert(pid.clone(), Box::new(rec));
            st.drive(&pid, roots, now, fx);
            Ok(true)
        })
    }

    async fn reject_plan(&self, plan_id: &str, errors: &PlanErrors) -> StoreResult<bool> {
        let now = now_ms();
        self.transact(|st, fx| {
            if st.plans.contains_key(plan_id) {
                return Ok(false);
            }
            let empty = ValidPlan {
                id: Some(plan_id.to_string()),
                steps: vec![],
                parallel: true,
                timeout_ms: None,
                fail_fast: false,
                fallback: None,
            };
            st.runs += 1;
            let mut rec = PlanRec::new(
                NewPlan {
                    id: plan_id.to_string(),
                    plan: empty,
                    queues: vec![],
                    parent: None,
                    submitted_at: now,
                },
                st.runs,
                now,
            );
            let mut result = rec.build_result(PlanStatus::Rejected, now);
            result.rejection = Some(errors.clone());
            let pid = rec.id.clone();
            let data = json!({ "errors": errors });
            st.log.push(
                &mut rec,
                EventKind::PlanSubmitted,
                None,
                None,
                Value::Null,
                now,
            );
            st.plans.insert(pid.clone(), Box::new(rec));
            let plan = st.plans.get_mut(&pid).expect("just inserted");
            plan.status = PlanStatus::Rejected;
            st.log
                .push(plan, EventKind::PlanRejected, None, None, data, now);
            let result = Arc::new(result);
            fx.finished
                .push((std::mem::take(&mut plan.waiters), result.clone()));
            plan.result = Some(result);
            let run = plan.run;
            st.ended.push_back((now, pid, run));
            Ok(true)
        })
    }

    async fn claim(
        &self,
        queues: &[String],
        _worker: &str,
        lease_ms: u64,
        max: usize,
    ) -> StoreResult<Vec<Job>> {
        let now = now_ms();
        Ok(self.transact(|st, fx| {
            let mut jobs = Vec::new();
            if st
                .sched
                .scheduled
                .first_key_value()
                .is_some_and(|(k, _)| k.0 <= now)
            {
                st.promote_due(now, fx);
            }
            for q in queues {
                while jobs.len() < max {
                    let Some((pid, run, step)) = st
                        .sched
                        .queues
                        .get_mut(q.as_str())
                        .and_then(VecDeque::pop_front)
                    else {
                        break;
                    };
                    let Some(plan) = st.plans.get_mut(&pid) else {
                        continue;
                    };
                    let i = step as usize;
                    // Stale: the plan ended, or an earlier plan of that id.
                    let ready = plan.run == run
                        && plan.is_open()
                        && plan
                            .steps
                            .get(i)
                            .is_some_and(|s| s.status == StepStatus::Ready);
                    if !ready {
                        continue;
                    }
                    let s = &mut plan.steps[i];
                    s.status = StepStatus::Running;
                    s.attempts += 1;
                    s.first_started.get_or_insert(now);
                    s.lease_until = now.saturating_add(lease_ms);
                    let attempt = s.attempts;
                    st.sched
                        .leases
                        .insert((s.lease_until, pid.clone(), run, step, attempt));
                    st.log.push(
                        plan,
                        EventKind::StepStarted,
                        Some(step),
                        Some(attempt),
                        Value::Null,
                        now,
                    );
                    jobs.push(plan.job(i));
                }
            }
            jobs
        }))
    }

    async fn wait_for_work(&self, queues: &[String], max_wait_ms: u64) {
        let notified = self.inner.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Counted while registered, so transactions notify only when
        // someone listens (Notify takes a lock even with no waiter).
        self.inner.idle.fetch_add(1, Ordering::SeqCst);
        let _idle = IdleGuard(&self.inner.idle);
        let (ready, due) = {
            let st = self.inner.state.lock();
            let ready = queues.iter().any(|q| {
                st.sched
                    .queues
                    .get(q.as_str())
                    .is_some_and(|d| !d.is_empty())
            });
            (ready, st.next_due())
        };
        if ready {
            return;
        }
        let wait = wait_ms(due, max_wait_ms);
        if wait == 0 {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }

    async fn release(&self, job: &JobKey) -> StoreResult<bool> {
        Ok(self.transact(|st, fx| {
            let Some(plan) = st.plans.get_mut(&*job.plan_id) else {
                return false;
            };
            if !plan.holds(job) {
                return false;
            }
            let i = job.step as usize;
            st.sched.release_lease(plan, i);
            let s = &mut plan.steps[i];
            s.status = StepStatus::Ready;
            s.attempts -= 1;
            if s.attempts == 0 {
                s.first_started = None;
            }
            // First in line again: it was already at the head once.
            st.sched.enqueue(plan, i, true);
            fx.wake_work = true;
            true
        }))
    }

    async fn abandoned(&self, job: &JobKey) {
        loop {
            let notified = self.inner.abandon.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let held = {
                let st = self.inner.state.lock();
                st.plans.get(&*job.plan_id).is_some_and(|p| p.holds(job))
            };
            if !held {
                return;
            }
            notified.await;
        }
    }

    async fn extend_lease(&self, job: &JobKey, lease_ms: u64) -> StoreResult<bool> {
        let now = now_ms();
        Ok(self.transact(|st, _| {
            let Some(plan) = st.plans.get_mut(&*job.plan_id) else {
                return false;
            };
            if !plan.holds(job) {
                return false;
            }
            st.sched.release_lease(plan, job.step as usize);
            let s = &mut plan.steps[job.step as usize];
            s.lease_until = now.saturating_add(lease_ms);
            st.sched.leases.insert((
                s.lease_until,
                plan.id.clone(),
                plan.run,
                job.step,
                job.attempt,
            ));
            true
        }))
    }

    async fn complete(&self, job: &JobKey, data: Value) -> StoreResult<Ack> {
        let now = now_ms();
        Ok(self.transact(|st, fx| {
            let Some(plan) = st.plans.get(&*job.plan_id) else {
                return Ack::Stale;
            };
            if !plan.holds(job) {
                return Ack::Stale;
            }
            st.sched.release_lease(plan, job.step as usize);
            let pid = plan.id.clone();
            st.succeed(&pid, job.step as usize, data, now, fx);
            Ack::Recorded {
                plan_ended: !st.plans[&pid].is_open(),
            }
        }))
    }

    async fn fail(&self, job: &JobKey, error: &str, retry_in_ms: Option<u64>) -> StoreResult<Ack> {
        let now = now_ms();
        Ok(self.transact(|st, fx| {
            let Some(plan) = st.plans.get_mut(&*job.plan_id) else {
                return Ack::Stale;
            };
            if !plan.holds(job) {
                return Ack::Stale;
            }
            let pid = plan.id.clone();
            let i = job.step as usize;
            st.sched.release_lease(plan, i);
            let will_retry = retry_in_ms.is_some();
            st.log.push(
                plan,
                EventKind::StepFailed,
                Some(job.step),
                Some(job.attempt),
                json!({ "error": error, "willRetry": will_retry }),
                now,
            );
            match retry_in_ms {
                Some(delay) => {
                    let s = &mut plan.steps[i];
                    s.status = StepStatus::Scheduled;
                    s.error = Some(error.to_string());
                    let due = now.saturating_add(delay);
                    st.log.push(
                        plan,
                        EventKind::StepRetrying,
                        Some(job.step),
                        Some(job.attempt),
                        json!({ "delayMs": delay, "nextAttempt": job.attempt + 1, "error": error }),
                        now,
                    );
                    st.sched.seq += 1;
                    st.sched
                        .scheduled
                        .insert((due, st.sched.seq), (pid, job.run, job.step, job.attempt));
                    fx.wake_work = true;
                }
                None => st.fail_for_good(&pid, i, error, now, fx),
            }
            Ack::Recorded {
                plan_ended: !st.plans[&*job.plan_id].is_open(),
            }
        }))
    }

    async fn emit(&self, event: NewEvent) -> StoreResult<()> {
        let now = now_ms();
        self.transact(|st, _| {
            let Some(plan) = st.plans.get_mut(&*event.plan_id) else {
                return Err(StoreError::PlanNotFound(event.plan_id.to_string()));
            };
            let e = Event {
                id: 0,
                kind: event.kind,
                plan_id: plan.id.clone(),
                step_id: event.step_id,
                agent_id: event.agent_id,
                attempt: event.attempt,
                timestamp: now,
                duration: None,
                data: event.data,
            };
            st.log.record(&mut plan.events, e);
            Ok(())
        })
    }

    async fn expired_leases(&self, now_ms: u64) -> StoreResult<Vec<Job>> {
        // Lapsed leases stay indexed until the step leaves `Running` (the
        // caller's `fail`), so a reaper that fails half-way finds them again.
        Ok(self.transact(|st, _| {
            let mut out = Vec::new();
            let mut stale = Vec::new();
            for entry in st.sched.leases.iter() {
                let (until, pid, run, step, attempt) = entry;
                if *until > now_ms {
                    break;
                }
                let key = JobKey {
                    plan_id: pid.clone(),
                    run: *run,
                    step: *step,
                    attempt: *attempt,
                };
                match st.plans.get(pid) {
                    Some(plan)
                        if plan.holds(&key) && plan.steps[*step as usize].lease_until == *until =>
                    {
                        out.push(plan.job(*step as usize))
                    }
                    _ => stale.push(entry.clone()),
                }
            }
            for entry in stale {
                st.sched.leases.remove(&entry);
            }
            out
        }))
    }

    async fn expire_deadlines(&self, now_ms: u64) -> StoreResult<Vec<String>> {
        Ok(self.transact(|st, fx| {
            let mut ended = Vec::new();
            while let Some(first) = st.sched.deadlines.first() {
                if first.0 > now_ms {
                    break;
                }
                let (deadline, pid) = st.sched.deadlines.pop_first().expect("peeked");
                let Some(plan) = st.plans.get(&pid) else {
                    continue;
                };
                if !plan.is_open() || plan.deadline != Some(deadline) {
                    continue;
                }
                let reason = format!(
                    "plan timed out after {} ms",
                    plan.spec.timeout_ms.unwrap_or_default()
                );
                st.finish(&pid, PlanStatus::TimedOut, &reason, now_ms, fx);
                ended.push(pid.to_string());
            }
            ended
        }))
    }

    async fn wait_for_coordinator_work(&self, max_wait_ms: u64) {
        let notified = self.inner.lifecycle.notified();
        tokio::pin!(notified);
        // Listen before looking, so work queued in between still wakes us.
        notified.as_mut().enable();
        let next_timer = {
            let st = self.inner.state.lock();
            if !st.lifecycle.is_empty() {
                return;
            }
            let d = st.sched.deadlines.first().map(|e| e.0);
            let l = st.sched.leases.first().map(|e| e.0);
            match (d, l) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let wait = wait_ms(next_timer, max_wait_ms);
        if wait == 0 {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }

    async fn take_lifecycle(&self, max: usize) -> StoreResult<Vec<LifecycleItem>> {
        // Items taken but never acknowledged (their handling failed) come
        // first, again: lifecycle work is retried until done.
        let mut st = self.inner.state.lock();
        let mut items: Vec<LifecycleItem> = st.lifecycle_taken.iter().take(max).cloned().collect();
        let n = (max - items.len()).min(st.lifecycle.len());
        let fresh: Vec<LifecycleItem> = st.lifecycle.drain(..n).collect();
        st.lifecycle_taken.extend(fresh.iter().cloned());
        items.extend(fresh);
        Ok(items)
    }

    async fn ack_lifecycle(&self, items: &[LifecycleItem]) -> StoreResult<()> {
        let mut st = self.inner.state.lock();
        st.lifecycle_taken.retain(|i| !items.contains(i));
        Ok(())
    }

    async fn plan_spec(&self, plan_id: &str) -> StoreResult<Option<ValidPlan>> {
        Ok(self
            .inner
            .state
            .lock()
            .plans
            .get(plan_id)
            .map(|p| p.spec.clone()))
    }

    async fn link_fallback(&self, plan_id: &str, child_id: &str) -> StoreResult<bool> {
        let now = now_ms();
        self.transact(|st, _| {
            let plan = st
                .plans
                .get_mut(plan_id)
                .ok_or_else(|| StoreError::PlanNotFound(plan_id.to_string()))?;
            if plan.status != PlanStatus::Running || !plan.awaiting_fallback {
                return Ok(false);
            }
            if let Some(existing) = &plan.fallback_child {
                return Ok(&**existing == child_id);
            }
            plan.fallback_child = Some(Arc::from(child_id));
            let reason = plan.primary.as_ref().map(|p| p.status);
            st.log.push(
                plan,
                EventKind::PlanFallback,
                None,
                None,
                json!({ "reason": reason, "fallbackPlanId": child_id }),
                now,
            );
            Ok(true)
        })
    }

    async fn finish_from_fallback(&self, plan_id: &str, child_id: &str) -> StoreResult<bool> {
        let now = now_ms();
        self.transact(|st, fx| {
            let child = st
                .plans
                .get(child_id)
                .and_then(|c| c.result.clone())
                .ok_or_else(|| StoreError::PlanNotFound(child_id.to_string()))?;
            let plan = st
                .plans
                .get_mut(plan_id)
                .ok_or_else(|| StoreError::PlanNotFound(plan_id.to_string()))?;
            if plan.status != PlanStatus::Running
                || !plan.awaiting_fallback
                || plan.fallback_child.as_deref() != Some(child_id)
            {
                return Ok(false);
            }
            let Some(mut result) = plan.primary.take() else {
                return Ok(false);
            };
            let primary = result.status;
            result.primary_status = Some(primary);
            result.status = if child.success {
                PlanStatus::Succeeded
            } else {
                primary
            };
            result.success = child.success;
            result.fallback_used = true;
            result.finished_at = now;
            result.duration = now.saturating_sub(result.started_at);
            result.fallback = Some(child);
            let pid = plan.id.clone();
            st.end(&pid, result, now, fx);
            Ok(true)
        })
    }

    async fn cancel(&self, plan_id: &str) -> StoreResult<CancelOutcome> {
        let now = now_ms();
        self.transact(|st, fx| {
            let plan = st
                .plans
                .get_mut(plan_id)
                .ok_or_else(|| StoreError::PlanNotFound(plan_id.to_string()))?;
            if plan.status.is_terminal() {
                return Ok(CancelOutcome {
                    cancelled: false,
                    fallback_child: None,
                });
            }
            let pid = plan.id.clone();
            if plan.awaiting_fallback {
                let child = plan.fallback_child.as_deref().map(str::to_string);
                let mut result = plan
                    .primary
                    .take()
                    .unwrap_or_else(|| plan.build_result(PlanStatus::Cancelled, now));
                result.primary_status = Some(result.status);
                result.status = PlanStatus::Cancelled;
                result.success = false;
                result.fallback_used = child.is_some();
                result.finished_at = now;
                result.duration = now.saturating_sub(result.started_at);
                st.end(&pid, result, now, fx);
                return Ok(CancelOutcome {
                    cancelled: true,
                    fallback_child: child,
                });
            }
            st.finish(&pid, PlanStatus::Cancelled, "plan cancelled", now, fx);
            Ok(CancelOutcome {
                cancelled: true,
                fallback_child: None,
            })
        })
    }

    async fn status(&self, plan_id: &str) -> StoreResult<Option<PlanStatus>> {
        Ok(self.inner.state.lock().plans.get(plan_id).map(|p| p.status))
    }

    async fn result(&self, plan_id: &str) -> StoreResult<Option<Arc<PlanResult>>> {
        Ok(self
            .inner
            .state
            .lock()
            .plans
            .get(plan_id)
            .and_then(|p| p.result.clone()))
    }

    async fn wait_result(&self, plan_id: &str) -> StoreResult<Arc<PlanResult>> {
        let rx = {
            let mut st = self.inner.state.lock();
            let plan = st
                .plans
                .get_mut(plan_id)
                .ok_or_else(|| StoreError::PlanNotFound(plan_id.to_string()))?;
            if let Some(r) = &plan.result {
                return Ok(r.clone());
            }
            let (tx, rx) = oneshot::channel();
            plan.waiters.push(tx);
            rx
        };
        rx.await
            .map_err(|_| StoreError::PlanNotFound(plan_id.to_string()))
    }

    async fn events(&self, plan_id: &str, after: u64) -> StoreResult<Vec<Event>> {
        let st = self.inner.state.lock();
        let plan = st
            .plans
            .get(plan_id)
            .ok_or_else(|| StoreError::PlanNotFound(plan_id.to_string()))?;
        // Ids grow, so the tail after `after` is found by bisection: a
        // follower reading a long plan's events piecewise stays linear.
        let start = plan.events.partition_point(|e| e.id <= after);
        Ok(plan.events[start..].iter().map(|e| (**e).clone()).collect())
    }

    async fn dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        let st = self.inner.state.lock();
        let mut all: Vec<DeadLetter> = st
            .plans
            .values()
            .flat_map(|p| p.dead.iter().cloned())
            .collect();
        all.sort_by_key(|d| d.at);
        Ok(all)
    }

    async fn load_state(&self, key: &str) -> StoreResult<Option<(Value, u64)>> {
        let now = now_ms();
        let st = self.inner.state.lock();
        Ok(st
            .agent_state
            .get(key)
            .filter(|(_, _, expires)| *expires > now)
            .map(|(v, version, _)| (v.clone(), *version)))
    }

    async fn save_state(
        &self,
        key: &str,
        value: Value,
        expected: u64,
        ttl_ms: u64,
    ) -> StoreResult<Option<u64>> {
        let now = now_ms();
        let mut st = self.inner.state.lock();
        // An expired entry counts as absent, but versions keep growing so a
        // writer holding a version from before the expiry cannot win.
        let (live, version) = match st.agent_state.get(key) {
            Some((_, v, expires)) => (*expires > now, *v),
            None => (false, 0),
        };
        let current = if live { version } else { 0 };
        if current != expected {
            return Ok(None);
        }
        let next = version + 1;
        st.agent_state
            .insert(key.to_string(), (value, next, now.saturating_add(ttl_ms)));
        Ok(Some(next))
    }

    async fn purge_ended(&self, before_ms: u64) -> StoreResult<usize> {
        {
            // Expired agent state goes with the retention sweep.
            let now = now_ms();
            self.inner
                .state
                .lock()
                .agent_state
                .retain(|_, (_, _, expires)| *expires > now);
        }
        // In small batches, dropping the records after the lock is released:
        // a purge of many plans never stalls the workers for long.
        const BATCH: usize = 256;
        let mut purged = 0;
        loop {
            let mut removed = Vec::with_capacity(BATCH);
            let more = {
                let mut st = self.inner.state.lock();
                while removed.len() < BATCH {
                    match st.ended.front() {
                        Some((at, _, _)) if *at < before_ms => {
                            let (_, pid, run) = st.ended.pop_front().expect("peeked");
                            // The plan goes with its fallback chain (a fallback
                            // left behind could otherwise hold the id of the
                            // next plan's fallback).
                            let mut next = Some((pid, run));
                            while let Some((id, run)) = next.take() {
                                if st.plans.get(&id).is_some_and(|p| p.run == run) {
                                    let p = st.plans.remove(&id).expect("checked");
                                    next = p.fallback_child.clone().and_then(|child| {
                                        let run = st.plans.get(&child)?.run;
                                        Some((child, run))
                                    });
                                    removed.push(p);
                                }
                            }
                        }
                        _ => break,
                    }
                }
                removed.len() == BATCH
            };
            purged += removed.len();
            drop(removed);
            if !more {
                return Ok(purged);
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_plan::{validate_value, Limits};

    struct Any;
    impl baton_plan::Catalog for Any {
        fn check(&self, _: &str, _: &str, _: &Value) -> Result<(), baton_plan::ActionProblem> {
            Ok(())
        }
    }

    fn plan(id: &str) -> NewPlan {
        let doc = json!({"steps": [{"id": "a", "agentId": "system", "action": "noop"}]});
        NewPlan {
            id: id.to_string(),
            plan: validate_value(&doc, &Any, &Limits::default()).unwrap(),
            queues: vec![Some(Arc::from("q"))],
            parent: None,
            submitted_at: now_ms(),
        }
    }

    #[tokio::test]
    async fn the_global_event_ring_keeps_the_newest_events_up_to_its_cap() {
        let store = MemoryStore::with_config(MemoryConfig {
            global_events: 5,
            live_events: 16,
        });
        for i in 0..3 {
            assert!(store.create_plan(plan(&format!("p{i}"))).await.unwrap());
        }
        assert_eq!(store.plan_count(), 3);
        // Each plan records plan:submitted and plan:started: 6 events, 5 kept.
        let ring = store.global_events();
        assert_eq!(ring.len(), 5);
        let ids: Vec<u64> = ring.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![2, 3, 4, 5, 6], "the oldest event went first");
        assert_eq!(&*ring[4].plan_id, "p2");
        assert_eq!(ring[4].kind, EventKind::PlanStarted);
        // The plan's own log is not capped by the ring.
        assert_eq!(store.events("p0", 0).await.unwrap().len(), 2);
    }
}
