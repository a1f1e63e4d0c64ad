//! The store conformance suite: generic checks every [`Store`]
//! implementation must pass (the in-memory store today, the Redis store
//! tomorrow), written against the trait alone.
//!
//! Each check is `pub async fn name<S: Store>(store: &S, prefix: &str)` and
//! panics with a message naming the broken rule. `prefix` is put in front of
//! every plan id and queue name a check uses, so checks can share one store
//! (one Redis database) and run concurrently, provided each gets its own
//! prefix. Some operations of the trait are store-wide, so a few checks
//! touch more than their own plans:
//!
//! - [`purge_removes_only_ended_plans`] and [`purged_ids_start_afresh`]
//!   purge every ended plan of the store: run them alone, or last (as
//!   [`run_all`] does);
//! - [`deadlines_time_plans_out`] and [`timed_out_plan_runs_its_fallback`]
//!   are the only checks whose plans have a deadline; each ignores the other
//!   plans `expire_deadlines` returns, and the second does not rely on its
//!   own call being the one that expires its plan;
//! - [`fallback_lifecycle`], [`timed_out_plan_runs_its_fallback`] and
//!   [`cancel_during_fallback`] are the only checks whose plans produce
//!   lifecycle work, and `take_lifecycle` hands out any plan's items: run
//!   these three one after another, never concurrently with each other, on
//!   one store (the other checks may run alongside);
//! - `expired_leases` and `dead_letters` are store-wide too; the checks
//!   filter their answers by plan id, and only [`leases_expire_and_extend`]
//!   claims with a lease short enough to lapse.
//!
//! [`run_all`] runs the whole suite on one store that way. Enabled by the
//! `conformance` cargo feature.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baton_plan::{
    validate_value, ActionProblem, Catalog, Limits, PlanError, PlanErrors, StepKind, ValidPlan,
};
use serde_json::{json, Value};

use crate::{
    now_ms, Ack, Event, EventKind, Job, JobKey, LifecycleItem, NewEvent, NewPlan, PlanStatus,
    StepStatus, Store, StoreError,
};

/// Lease given to jobs the checks claim: long enough never to lapse.
const LEASE_MS: u64 = 60_000;

/// How long a check waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- fixtures

/// The one agent plans of the suite use: `system`, with the built-in actions.
struct SystemCatalog;

const ACTIONS: [&str; 4] = ["noop", "echo", "sleep", "fail"];

impl Catalog for SystemCatalog {
    fn check(&self, agent_id: &str, action: &str, _input: &Value) -> Result<(), ActionProblem> {
        if agent_id != "system" {
            return Err(ActionProblem::UnknownAgent {
                known: vec!["system".to_string()],
            });
        }
        if !ACTIONS.contains(&action) {
            return Err(ActionProblem::UnknownAction {
                known: ACTIONS.iter().map(|a| a.to_string()).collect(),
            });
        }
        Ok(())
    }
}

/// An agent step (`system.noop`) depending on `deps`.
fn step(id: &str, deps: &[&str]) -> Value {
    json!({ "id": id, "agentId": "system", "action": "noop", "input": { "step": id }, "dependencies": deps })
}

/// A join step depending on `deps`.
fn join(id: &str, deps: &[&str]) -> Value {
    json!({ "id": id, "dependencies": deps })
}

/// Validates a plan document; the suite's own plans are always valid.
fn valid(doc: Value) -> ValidPlan {
    validate_value(&doc, &SystemCatalog, &Limits::default())
        .unwrap_or_else(|e| panic!("conformance fixture is not a valid plan: {e}\n{doc:#}"))
}

/// The queue every agent step of a check goes to.
fn queue(prefix: &str) -> String {
    format!("{prefix}.system")
}

fn queues(prefix: &str) -> Vec<String> {
    vec![queue(prefix)]
}

fn plan_id(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}")
}

/// A plan ready for `create_plan`: agent steps on the check's queue, joins
/// on none.
fn new_plan(prefix: &str, id: &str, plan: ValidPlan, parent: Option<&str>) -> NewPlan {
    let q: Arc<str> = Arc::from(queue(prefix));
    let queues = plan
        .steps
        .iter()
        .map(|s| match s.kind {
            StepKind::Agent { .. } => Some(q.clone()),
            StepKind::Join => None,
        })
        .collect();
    NewPlan {
        id: id.to_string(),
        plan,
        queues,
        parent: parent.map(str::to_string),
        submitted_at: now_ms(),
    }
}

// ----------------------------------------------------------------- helpers

async fn create<S: Store>(store: &S, prefix: &str, id: &str, doc: Value) {
    let created = store
        .create_plan(new_plan(prefix, id, valid(doc), None))
        .await
        .unwrap_or_else(|e| panic!("create_plan({id}) failed: {e}"));
    assert!(created, "create_plan({id}) returned false for a new id");
}

async fn claim_n<S: Store>(store: &S, prefix: &str, max: usize, lease_ms: u64) -> Vec<Job> {
    store
        .claim(&queues(prefix), "conformance-worker", lease_ms, max)
        .await
        .unwrap_or_else(|e| panic!("claim on {} failed: {e}", queue(prefix)))
}

async fn claim<S: Store>(store: &S, prefix: &str, max: usize) -> Vec<Job> {
    claim_n(store, prefix, max, LEASE_MS).await
}

/// Claims exactly one job and checks it is step `expect` of `plan`.
async fn claim_one<S: Store>(store: &S, prefix: &str, plan: &str, expect: &str) -> Job {
    let jobs = claim(store, prefix, 10).await;
    assert_eq!(
        ids(&jobs),
        vec![expect.to_string()],
        "claim should return exactly step '{expect}' of plan '{plan}'"
    );
    let job = jobs.into_iter().next().expect("one job");
    assert_eq!(
        &*job.key.plan_id, plan,
        "claimed job belongs to the wrong plan"
    );
    job
}

async fn assert_nothing_ready<S: Store>(store: &S, prefix: &str, why: &str) {
    let jobs = claim(store, prefix, 10).await;
    assert!(
        jobs.is_empty(),
        "claim should return nothing ({why}) but returned steps {:?}",
        ids(&jobs)
    );
}

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.spec.id.to_string()).collect()
}

async fn complete<S: Store>(store: &S, key: &JobKey, data: Value) -> Ack {
    store
        .complete(key, data)
        .await
        .unwrap_or_else(|e| panic!("complete({key:?}) failed: {e}"))
}

async fn fail<S: Store>(store: &S, key: &JobKey, error: &str, retry: Option<u64>) -> Ack {
    store
        .fail(key, error, retry)
        .await
        .unwrap_or_else(|e| panic!("fail({key:?}) failed: {e}"))
}

fn assert_recorded(ack: Ack, what: &str) -> bool {
    match ack {
        Ack::Recorded { plan_ended } => plan_ended,
        Ack::Stale => panic!("{what}: expected Ack::Recorded, got Ack::Stale"),
    }
}

fn assert_stale(ack: Ack, what: &str) {
    assert_eq!(ack, Ack::Stale, "{what}: expected Ack::Stale");
}

async fn status<S: Store>(store: &S, id: &str) -> Option<PlanStatus> {
    store
        .status(id)
        .await
        .unwrap_or_else(|e| panic!("status({id}) failed: {e}"))
}

async fn events<S: Store>(store: &S, id: &str) -> Vec<Event> {
    store
        .events(id, 0)
        .await
        .unwrap_or_else(|e| panic!("events({id}, 0) failed: {e}"))
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Events of `kind` about step `step`.
fn step_events<'a>(events: &'a [Event], kind: EventKind, step: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.kind == kind && e.step_id.as_deref() == Some(step))
        .collect()
}

// ------------------------------------------------------------------ checks

/// `create_plan` stores a new id once: a second plan with the same id
/// returns `false` and changes nothing.
pub async fn create_plan_is_idempotent<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "dup");
    create(store, prefix, &id, json!({ "steps": [step("a", &[])] })).await;
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Running),
        "a created plan is running"
    );
    let before = events(store, &id).await;

    let other = valid(json!({ "steps": [step("x", &[]), step("y", &[])] }));
    let again = store
        .create_plan(new_plan(prefix, &id, other, None))
        .await
        .expect("create_plan (duplicate)");
    assert!(!again, "create_plan with an existing id must return false");

    assert_eq!(
        events(store, &id).await,
        before,
        "a duplicate create_plan must not add events"
    );
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Running),
        "a duplicate create_plan must not change the status"
    );
    let spec = store.plan_spec(&id).await.expect("plan_spec");
    let spec = spec.expect("plan_spec of an existing plan");
    assert_eq!(
        spec.steps.len(),
        1,
        "a duplicate create_plan must not replace the stored plan"
    );
    claim_one(store, prefix, &id, "a").await;
    assert_nothing_ready(store, prefix, "the duplicate's steps were never queued").await;
}

/// `claim` returns ready roots only, at most `max` of them, nothing when
/// none is ready, and jobs carrying their spec, attempt 1 and their
/// dependencies' results.
pub async fn claim_returns_ready_steps<S: Store>(store: &S, prefix: &str) {
    assert_nothing_ready(store, prefix, "nothing was submitted yet").await;

    // A chain: only its first step is ready.
    let chain = plan_id(prefix, "chain");
    create(
        store,
        prefix,
        &chain,
        json!({ "steps": [step("first", &[]), step("second", &["first"])] }),
    )
    .await;
    let t0 = now_ms();
    let first = claim_one(store, prefix, &chain, "first").await;
    assert_eq!(first.key.attempt, 1, "a first claim is attempt 1");
    assert_eq!(first.key.step, 0, "JobKey.step is the step's index");
    assert_eq!(
        first.spec.input,
        json!({ "step": "first" }),
        "the job carries its step's input"
    );
    assert_eq!(
        first.spec.action(),
        Some("noop"),
        "the job carries its step's action"
    );
    assert!(
        first.dependencies.is_empty(),
        "a root has no dependency results"
    );
    assert!(
        first.lease_until >= t0 + LEASE_MS,
        "lease_until ({}) must be at least claim time + lease_ms ({})",
        first.lease_until,
        t0 + LEASE_MS
    );
    assert_nothing_ready(store, prefix, "the chain's second step waits for the first").await;
    assert!(
        claim(store, prefix, 10).await.is_empty(),
        "a running step must not be claimed again"
    );

    let data = json!({ "out": "first's result" });
    assert_recorded(
        complete(store, &first.key, data.clone()).await,
        "complete first",
    );
    let second = claim_one(store, prefix, &chain, "second").await;
    assert_eq!(second.key.attempt, 1, "a first claim is attempt 1");
    assert_eq!(
        second.dependencies,
        vec![(Arc::from("first"), data)],
        "the job carries its dependencies' results"
    );
    assert_recorded(
        complete(store, &second.key, json!(2)).await,
        "complete second",
    );

    // A fan-out: three roots, claimed at most `max` at a time.
    let fan = plan_id(prefix, "fan");
    create(
        store,
        prefix,
        &fan,
        json!({ "steps": [
            step("r1", &[]), step("r2", &[]), step("r3", &[]),
            step("sink", &["r1", "r2", "r3"]),
        ] }),
    )
    .await;
    let mut got = claim(store, prefix, 2).await;
    assert_eq!(
        got.len(),
        2,
        "claim(max = 2) of three ready roots must return 2, got {:?}",
        ids(&got)
    );
    let more = claim(store, prefix, 2).await;
    assert_eq!(
        more.len(),
        1,
        "the third root is left after claiming two, got {:?}",
        ids(&more)
    );
    got.extend(more);
    let names: BTreeSet<String> = ids(&got).into_iter().collect();
    assert_eq!(
        names,
        ["r1", "r2", "r3"].map(String::from).into(),
        "claim must return exactly the fan-out's roots"
    );
    assert!(
        got.iter()
            .all(|j| j.key.attempt == 1 && *j.key.plan_id == *fan),
        "roots are attempt 1 of the fan-out plan"
    );
    assert_nothing_ready(store, prefix, "all roots are running, the sink waits").await;
    let other = store
        .claim(&[format!("{prefix}.other")], "w", LEASE_MS, 10)
        .await
        .expect("claim");
    assert!(
        other.is_empty(),
        "claim must only take jobs of the given queues"
    );
}

/// A completion is recorded exactly once, by the attempt that holds the
/// step; everything else is `Stale`, and dependents are queued once.
pub async fn completion_is_exactly_once<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "once");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [step("a", &[]), step("b", &["a"])] }),
    )
    .await;
    let a = claim_one(store, prefix, &id, "a").await;
    let ended = assert_recorded(complete(store, &a.key, json!("A")).await, "complete a");
    assert!(!ended, "completing a must not end the plan (b is left)");
    assert_stale(
        complete(store, &a.key, json!("A again")).await,
        "second complete of the same attempt",
    );
    assert_stale(
        fail(store, &a.key, "late failure", None).await,
        "fail after complete",
    );
    assert_stale(
        fail(store, &a.key, "late failure", Some(10)).await,
        "fail (with retry) after complete",
    );

    let b = claim_one(store, prefix, &id, "b").await;
    assert_eq!(
        b.dependencies,
        vec![(Arc::from("a"), json!("A"))],
        "the first completion's data is the one kept"
    );
    assert_nothing_ready(store, prefix, "b must be queued exactly once").await;

    let wrong = JobKey {
        attempt: b.key.attempt + 1,
        ..b.key.clone()
    };
    assert_stale(
        complete(store, &wrong, json!(0)).await,
        "complete with a wrong attempt",
    );
    assert_stale(
        fail(store, &wrong, "x", None).await,
        "fail with a wrong attempt",
    );
    let ended = assert_recorded(
        complete(store, &b.key, json!("B")).await,
        "complete b after stale reports",
    );
    assert!(ended, "completing the last step ends the plan");
    assert_eq!(status(store, &id).await, Some(PlanStatus::Succeeded));

    let evs = events(store, &id).await;
    assert_eq!(
        step_events(&evs, EventKind::StepCompleted, "a").len(),
        1,
        "step:completed of a must be emitted once: {:?}",
        kinds(&evs)
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    assert_eq!(result.results["a"].data, json!("A"));
    assert_eq!(result.results["b"].data, json!("B"));
    assert!(result.success, "all steps succeeded");
}

/// Diamond A -> {B, C} -> D: D becomes ready only once both B and C
/// completed, and receives both results in listed order.
pub async fn diamond_waits_for_all_dependencies<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "diamond");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [
            step("A", &[]), step("B", &["A"]), step("C", &["A"]), step("D", &["B", "C"]),
        ] }),
    )
    .await;
    let a = claim_one(store, prefix, &id, "A").await;
    assert_recorded(complete(store, &a.key, json!("a")).await, "complete A");
    let mut mid = claim(store, prefix, 10).await;
    mid.sort_by(|x, y| x.spec.id.cmp(&y.spec.id));
    assert_eq!(ids(&mid), ["B", "C"], "after A, exactly B and C are ready");
    assert_recorded(complete(store, &mid[0].key, json!("b")).await, "complete B");
    assert_nothing_ready(store, prefix, "D still waits for C").await;
    assert_recorded(complete(store, &mid[1].key, json!("c")).await, "complete C");
    let d = claim_one(store, prefix, &id, "D").await;
    assert_eq!(
        d.dependencies,
        vec![(Arc::from("B"), json!("b")), (Arc::from("C"), json!("c"))],
        "D receives B's and C's results, in listed order"
    );
    let ended = assert_recorded(complete(store, &d.key, json!("d")).await, "complete D");
    assert!(ended, "D was the last step");
    assert_eq!(status(store, &id).await, Some(PlanStatus::Succeeded));
}

/// A join completes inside the store: it is never claimed, and its result
/// is the object of its dependencies' results.
pub async fn joins_complete_in_store<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "join");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [step("A", &[]), join("J", &["A"]), step("B", &["J"])] }),
    )
    .await;
    let a = claim_one(store, prefix, &id, "A").await;
    let data_a = json!({ "value": 41 });
    assert_recorded(complete(store, &a.key, data_a.clone()).await, "complete A");
    let b = claim_one(store, prefix, &id, "B").await;
    assert_eq!(
        b.dependencies,
        vec![(Arc::from("J"), json!({ "A": data_a }))],
        "B receives the join's result: its dependencies' results by id"
    );
    assert_nothing_ready(store, prefix, "the join must never be queued").await;
    let ended = assert_recorded(complete(store, &b.key, json!("b")).await, "complete B");
    assert!(ended, "B was the last step");

    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    let j = &result.results["J"];
    assert_eq!(j.status, StepStatus::Succeeded, "the join succeeded");
    assert_eq!(j.data, json!({ "A": data_a }), "the join's result data");
    let evs = events(store, &id).await;
    assert_eq!(
        step_events(&evs, EventKind::StepCompleted, "J").len(),
        1,
        "the join emits step:completed once: {:?}",
        kinds(&evs)
    );
}

/// A failure with `retry_in_ms` schedules the step: not claimable before
/// the delay, claimable (as the next attempt) after it, and `wait_for_work`
/// wakes up for it.
pub async fn retry_is_scheduled<S: Store>(store: &S, prefix: &str) {
    const DELAY: u64 = 50;
    let id = plan_id(prefix, "retry");
    create(store, prefix, &id, json!({ "steps": [step("a", &[])] })).await;
    let first = claim_one(store, prefix, &id, "a").await;
    let t_fail = now_ms();
    let ended = assert_recorded(
        fail(store, &first.key, "transient", Some(DELAY)).await,
        "fail with retry",
    );
    assert!(!ended, "a retried step does not end the plan");
    let early = claim(store, prefix, 10).await;
    if !early.is_empty() {
        let now = now_ms();
        assert!(
            now >= t_fail + DELAY,
            "a retry must not be claimable before its delay: claimed {} ms after the failure \
             (delay {DELAY} ms)",
            now - t_fail
        );
    }
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Running),
        "a scheduled retry keeps the plan running"
    );

    let retry = if early.is_empty() {
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::timeout(left, store.wait_for_work(&queues(prefix), 600_000))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "wait_for_work(max 600 s) did not resolve within {PATIENCE:?} although \
                         a retry falls due {DELAY} ms after the failure"
                    )
                });
            let jobs = claim(store, prefix, 10).await;
            if !jobs.is_empty() {
                let now = now_ms();
                assert!(
                    now >= t_fail + DELAY,
                    "a retry must not be claimable before its delay: claimed {} ms after the \
                     failure (delay {DELAY} ms)",
                    now - t_fail
                );
                break jobs;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "the retry was not claimable within {PATIENCE:?} of falling due"
            );
        }
    } else {
        early
    };
    assert_eq!(ids(&retry), ["a"], "the retried step is claimable again");
    let second = &retry[0];
    assert_eq!(second.key.attempt, 2, "the retry is attempt 2");
    assert_stale(
        complete(store, &first.key, json!("late")).await,
        "completion by the failed attempt 1",
    );

    let evs = events(store, &id).await;
    let failed = step_events(&evs, EventKind::StepFailed, "a");
    assert_eq!(failed.len(), 1, "one step:failed event: {:?}", kinds(&evs));
    assert_eq!(failed[0].attempt, Some(1), "step:failed names attempt 1");
    assert_eq!(
        step_events(&evs, EventKind::StepRetrying, "a").len(),
        1,
        "one step:retrying event: {:?}",
        kinds(&evs)
    );
    assert!(
        step_events(&evs, EventKind::StepDeadLettered, "a").is_empty(),
        "a retried step is not dead-lettered"
    );

    let ended = assert_recorded(
        complete(store, &second.key, json!("ok")).await,
        "complete attempt 2",
    );
    assert!(ended, "the only step succeeded");
    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    assert_eq!(result.status, PlanStatus::Succeeded);
    assert_eq!(result.results["a"].attempts, 2, "two attempts were made");
}

/// A failure without retry dead-letters the step and skips its dependents;
/// an independent branch goes on, and the plan ends failed once nothing is
/// left.
pub async fn failure_dead_letters_and_skips<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "dead");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [
            step("a", &[]), step("b", &["a"]), step("c", &["b"]), join("j", &["c"]),
            step("x", &[]), step("y", &["x"]),
        ] }),
    )
    .await;
    let mut roots = claim(store, prefix, 10).await;
    roots.sort_by(|p, q| p.spec.id.cmp(&q.spec.id));
    assert_eq!(ids(&roots), ["a", "x"], "the two roots are ready");
    let (a, x) = (&roots[0], &roots[1]);

    let ended = assert_recorded(fail(store, &a.key, "boom", None).await, "fail a for good");
    assert!(!ended, "the independent branch keeps the plan running");
    assert_eq!(status(store, &id).await, Some(PlanStatus::Running));

    let dead: Vec<_> = store
        .dead_letters()
        .await
        .expect("dead_letters")
        .into_iter()
        .filter(|d| d.plan_id == id)
        .collect();
    assert_eq!(dead.len(), 1, "one dead letter for the plan: {dead:?}");
    assert_eq!(dead[0].step_id, "a");
    assert_eq!(dead[0].error, "boom");
    assert_eq!(dead[0].attempts, 1, "the dead letter counts the attempts");
    assert_eq!(dead[0].agent_id.as_deref(), Some("system"));
    assert_eq!(dead[0].action.as_deref(), Some("noop"));

    let evs = events(store, &id).await;
    for s in ["b", "c", "j"] {
        assert_eq!(
            step_events(&evs, EventKind::StepSkipped, s).len(),
            1,
            "dependent '{s}' of the dead step must be skipped once: {:?}",
            kinds(&evs)
        );
    }
    assert_eq!(
        step_events(&evs, EventKind::StepDeadLettered, "a").len(),
        1,
        "step:dead_lettered for a: {:?}",
        kinds(&evs)
    );
    assert_nothing_ready(store, prefix, "the dead step's dependents are skipped").await;

    assert_recorded(complete(store, &x.key, json!("x")).await, "complete x");
    let y = claim_one(store, prefix, &id, "y").await;
    let ended = assert_recorded(complete(store, &y.key, json!("y")).await, "complete y");
    assert!(ended, "y was the last open step");
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Failed),
        "a plan with a dead step ends failed"
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    assert!(!result.success);
    assert_eq!(result.results["a"].status, StepStatus::Failed);
    assert_eq!(result.results["b"].status, StepStatus::Skipped);
    assert_eq!(result.results["c"].status, StepStatus::Skipped);
    assert_eq!(result.results["j"].status, StepStatus::Skipped);
    assert_eq!(result.results["y"].status, StepStatus::Succeeded);
    let errors = result.errors.as_ref().expect("errors of a failed plan");
    assert_eq!(errors.get("a").map(String::as_str), Some("boom"));
    let last = events(store, &id).await;
    assert_eq!(
        last.last().map(|e| e.kind),
        Some(EventKind::PlanFailed),
        "plan:failed is the last event"
    );
}

/// In a failFast plan a dead letter ends the plan at once: ready steps are
/// no longer claimable, running ones report `Stale`.
pub async fn fail_fast_stops_the_plan<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "failfast");
    create(
        store,
        prefix,
        &id,
        json!({ "failFast": true, "steps": [
            step("a", &[]), step("b", &[]), step("c", &[]), step("d", &["a"]),
        ] }),
    )
    .await;
    let running = claim(store, prefix, 2).await;
    assert_eq!(running.len(), 2, "two of three roots claimed");
    let ended = assert_recorded(
        fail(store, &running[0].key, "fatal", None).await,
        "fail for good",
    );
    assert!(ended, "a dead letter ends a failFast plan");
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Failed),
        "a failFast plan fails at its first dead letter"
    );
    assert_nothing_ready(store, prefix, "a failFast plan that failed queues nothing").await;
    assert_stale(
        complete(store, &running[1].key, json!("late")).await,
        "completion of a step of an ended plan",
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    assert_eq!(result.status, PlanStatus::Failed);
    assert!(
        result.results.values().all(|r| r.status.is_terminal()),
        "every step of an ended plan is terminal: {:?}",
        result.results
    );
}

/// `release` hands a claimed job back without counting an attempt, and
/// wakes workers waiting for work.
pub async fn release_requeues_without_an_attempt<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "release");
    create(store, prefix, &id, json!({ "steps": [step("a", &[])] })).await;
    let first = claim_one(store, prefix, &id, "a").await;
    let waiter = {
        let store = store.clone();
        let q = queues(prefix);
        tokio::spawn(async move { store.wait_for_work(&q, 600_000).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        store.release(&first.key).await.expect("release"),
        "release of a running job returns true"
    );
    tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("a released job must wake wait_for_work(max 600 s)")
        .expect("waiter task panicked");
    assert!(
        !store.release(&first.key).await.expect("release"),
        "a released job cannot be released again"
    );
    let again = claim_one(store, prefix, &id, "a").await;
    assert_eq!(
        again.key.attempt, first.key.attempt,
        "a released claim does not count as an attempt"
    );
    assert_recorded(complete(store, &again.key, json!(1)).await, "complete");
    assert!(
        !store.release(&again.key).await.expect("release"),
        "release of a completed job returns false"
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    assert_eq!(result.results["a"].attempts, 1, "one attempt counted");
}

/// Leases: an expired lease is reported, an extended one is not, and a
/// completed job's lease never is.
pub async fn leases_expire_and_extend<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "lease");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [step("a", &[]), step("b", &[])] }),
    )
    .await;
    let t0 = now_ms();
    let j1 = claim_n(store, prefix, 1, 1).await;
    let j2 = claim_n(store, prefix, 1, 1).await;
    assert_eq!(j1.len() + j2.len(), 2, "both roots claimed");
    let (j1, j2) = (&j1[0], &j2[0]);
    assert!(j1.lease_until > t0, "lease_until is claim time + lease_ms");
    assert_recorded(complete(store, &j2.key, json!(2)).await, "complete j2");

    let mine = |jobs: Vec<Job>| -> Vec<Job> {
        jobs.into_iter().filter(|j| *j.key.plan_id == *id).collect()
    };
    let expired = mine(
        store
            .expired_leases(now_ms() + 10)
            .await
            .expect("expired_leases"),
    );
    assert_eq!(
        expired.iter().map(|j| j.key.clone()).collect::<Vec<_>>(),
        vec![j1.key.clone()],
        "expired_leases must report the running job with a lapsed lease (and not the completed one)"
    );
    assert_eq!(expired[0].spec.id, j1.spec.id, "the expired job's spec");

    let wrong = JobKey {
        attempt: j1.key.attempt + 1,
        ..j1.key.clone()
    };
    assert!(
        !store
            .extend_lease(&wrong, LEASE_MS)
            .await
            .expect("extend_lease"),
        "extend_lease with a wrong attempt returns false"
    );
    assert!(
        store
            .extend_lease(&j1.key, LEASE_MS)
            .await
            .expect("extend_lease"),
        "extend_lease of a running job returns true"
    );
    let expired = mine(
        store
            .expired_leases(now_ms() + 10)
            .await
            .expect("expired_leases"),
    );
    assert!(
        expired.is_empty(),
        "an extended lease must not be reported as expired: {:?}",
        ids(&expired)
    );
    assert_recorded(complete(store, &j1.key, json!(1)).await, "complete j1");
    assert!(
        !store
            .extend_lease(&j1.key, LEASE_MS)
            .await
            .expect("extend_lease"),
        "extend_lease of a completed job returns false"
    );
    let expired = mine(
        store
            .expired_leases(now_ms() + 10 * LEASE_MS)
            .await
            .expect("expired_leases"),
    );
    assert!(
        expired.is_empty(),
        "a completed job's lease is never reported: {:?}",
        ids(&expired)
    );
}

/// Deadlines: a plan past its timeout ends `timed_out` and its running
/// steps' reports become stale; a plan without a deadline is left alone.
pub async fn deadlines_time_plans_out<S: Store>(store: &S, prefix: &str) {
    let open = plan_id(prefix, "no-deadline");
    create(store, prefix, &open, json!({ "steps": [step("a", &[])] })).await;
    let id = plan_id(prefix, "deadline");
    create(
        store,
        prefix,
        &id,
        json!({ "timeout": 1, "steps": [step("a", &[])] }),
    )
    .await;
    let mut jobs = claim(store, prefix, 10).await;
    assert_eq!(jobs.len(), 2, "both plans' steps are ready");
    jobs.retain(|j| *j.key.plan_id == *id);
    let running = jobs.pop().expect("the deadline plan's step");

    let ended = store
        .expire_deadlines(now_ms() + 10)
        .await
        .expect("expire_deadlines");
    assert!(
        ended.contains(&id),
        "expire_deadlines must end the plan past its deadline: {ended:?}"
    );
    assert!(
        !ended.contains(&open),
        "a plan without a deadline must not expire"
    );
    assert_eq!(status(store, &id).await, Some(PlanStatus::TimedOut));
    assert_eq!(status(store, &open).await, Some(PlanStatus::Running));
    assert_stale(
        complete(store, &running.key, json!("late")).await,
        "completion after the plan timed out",
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("a timed-out plan has a result");
    assert_eq!(result.status, PlanStatus::TimedOut);
    assert!(!result.success);
    let evs = events(store, &id).await;
    assert_eq!(
        evs.last().map(|e| e.kind),
        Some(EventKind::PlanTimeout),
        "plan:timeout is the last event: {:?}",
        kinds(&evs)
    );
    let again = store
        .expire_deadlines(now_ms() + 10)
        .await
        .expect("expire_deadlines");
    assert!(
        !again.contains(&id),
        "an ended plan does not expire twice: {again:?}"
    );
}

/// Fallbacks: a failed plan with a fallback waits for it (lifecycle
/// `StartFallback`), links its child once, and ends with the child's
/// outcome (lifecycle `FallbackEnded`, `finish_from_fallback`).
pub async fn fallback_lifecycle<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "primary");
    let child = format!("{id}/fallback");
    create(
        store,
        prefix,
        &id,
        json!({
            "steps": [step("a", &[])],
            "fallbackPlan": { "steps": [step("f", &[])] },
        }),
    )
    .await;
    let a = claim_one(store, prefix, &id, "a").await;
    assert_recorded(fail(store, &a.key, "primary broke", None).await, "fail a");
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Running),
        "a failed plan with a fallback keeps running until the fallback ends"
    );
    assert!(
        store.result(&id).await.expect("result").is_none(),
        "no result while the fallback is pending"
    );

    let start = LifecycleItem::StartFallback {
        plan_id: id.clone(),
    };
    take_lifecycle_item(store, &start).await;

    let spec = store.plan_spec(&id).await.expect("plan_spec");
    let spec = spec.expect("plan_spec of an existing plan");
    let fallback = *spec.fallback.expect("the stored plan keeps its fallback");

    assert!(
        store
            .link_fallback(&id, &child)
            .await
            .expect("link_fallback"),
        "link_fallback of a plan awaiting its fallback returns true"
    );
    assert!(
        store
            .link_fallback(&id, &child)
            .await
            .expect("link_fallback"),
        "link_fallback is idempotent for the same child"
    );
    assert!(
        !store
            .link_fallback(&id, &format!("{id}/other"))
            .await
            .expect("link_fallback"),
        "link_fallback with another child returns false"
    );
    let evs = events(store, &id).await;
    assert_eq!(
        evs.iter()
            .filter(|e| e.kind == EventKind::PlanFallback)
            .count(),
        1,
        "one plan:fallback event however often the link is recorded: {:?}",
        kinds(&evs)
    );

    let created = store
        .create_plan(new_plan(prefix, &child, fallback, Some(&id)))
        .await
        .expect("create_plan (fallback)");
    assert!(created, "the fallback plan is created");
    let f = claim_one(store, prefix, &child, "f").await;
    let ended = assert_recorded(complete(store, &f.key, json!("saved")).await, "complete f");
    assert!(ended, "f ends the fallback plan");
    assert_eq!(status(store, &child).await, Some(PlanStatus::Succeeded));
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Running),
        "the parent waits for finish_from_fallback"
    );

    let ended_item = LifecycleItem::FallbackEnded {
        parent_id: id.clone(),
        child_id: child.clone(),
    };
    take_lifecycle_item(store, &ended_item).await;
    assert!(
        store
            .finish_from_fallback(&id, &child)
            .await
            .expect("finish_from_fallback"),
        "finish_from_fallback of the linked child returns true"
    );
    assert!(
        !store
            .finish_from_fallback(&id, &child)
            .await
            .expect("finish_from_fallback"),
        "finish_from_fallback of an ended plan returns false"
    );
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Succeeded),
        "a plan saved by its fallback succeeds"
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    assert!(result.success);
    assert!(result.fallback_used, "result.fallback_used");
    assert_eq!(result.primary_status, Some(PlanStatus::Failed));
    let fb = result.fallback.as_ref().expect("result.fallback");
    assert_eq!(fb.plan_id, child, "result.fallback is the child's result");
    assert_eq!(fb.results["f"].data, json!("saved"));
    assert_eq!(
        result.results["a"].status,
        StepStatus::Failed,
        "the primary's own step results are kept"
    );
    let evs = events(store, &id).await;
    assert_eq!(
        evs.last().map(|e| e.kind),
        Some(EventKind::PlanCompleted),
        "plan:completed is the parent's last event: {:?}",
        kinds(&evs)
    );
}

/// Takes lifecycle work until `item` shows up, acknowledges it, and leaves
/// other checks' items (never acknowledged here) alone.
async fn take_lifecycle_item<S: Store>(store: &S, item: &LifecycleItem) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let items = store.take_lifecycle(64).await.expect("take_lifecycle");
        if items.contains(item) {
            store
                .ack_lifecycle(std::slice::from_ref(item))
                .await
                .expect("ack_lifecycle");
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "take_lifecycle never yielded {item:?}"
        );
        if items.is_empty() {
            let _ = tokio::time::timeout(PATIENCE, store.wait_for_coordinator_work(100)).await;
        }
    }
}

/// `cancel` ends a running plan once; cancelling an unknown plan is
/// `PlanNotFound`.
pub async fn cancel_ends_a_plan<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "cancel");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [step("a", &[]), step("b", &[]), step("c", &["a"])] }),
    )
    .await;
    let running = claim(store, prefix, 1).await;
    assert_eq!(running.len(), 1, "one root claimed");

    let out = store.cancel(&id).await.expect("cancel");
    assert!(out.cancelled, "cancel of a running plan cancels it");
    assert_eq!(out.fallback_child, None, "no fallback to cancel");
    assert_eq!(status(store, &id).await, Some(PlanStatus::Cancelled));
    let evs = events(store, &id).await;
    assert_eq!(
        evs.last().map(|e| e.kind),
        Some(EventKind::PlanCancelled),
        "plan:cancelled is the last event: {:?}",
        kinds(&evs)
    );
    assert_nothing_ready(store, prefix, "a cancelled plan's ready steps are gone").await;
    assert_stale(
        complete(store, &running[0].key, json!("late")).await,
        "completion in a cancelled plan",
    );

    let again = store.cancel(&id).await.expect("cancel");
    assert!(
        !again.cancelled,
        "a second cancel reports cancelled = false"
    );
    assert_eq!(
        events(store, &id).await,
        evs,
        "a second cancel adds no event"
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("a cancelled plan has a result");
    assert_eq!(result.status, PlanStatus::Cancelled);

    let unknown = plan_id(prefix, "never-submitted");
    match store.cancel(&unknown).await {
        Err(StoreError::PlanNotFound(p)) => assert_eq!(p, unknown, "PlanNotFound names the id"),
        other => panic!("cancel of an unknown plan must be PlanNotFound, got {other:?}"),
    }
}

/// `reject_plan` records a rejected plan with its errors, once.
pub async fn reject_records_errors<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "rejected");
    let errors = PlanErrors(vec![
        PlanError {
            path: "$.steps[0].agentId".to_string(),
            message: "unknown agent 'nobody'".to_string(),
        },
        PlanError {
            path: "$.timeout".to_string(),
            message: "must be at least 1".to_string(),
        },
    ]);
    assert!(
        store.reject_plan(&id, &errors).await.expect("reject_plan"),
        "reject_plan of a new id returns true"
    );
    assert_eq!(status(store, &id).await, Some(PlanStatus::Rejected));
    let result = store.result(&id).await.expect("result");
    let result = result.expect("a rejected plan has a result");
    assert_eq!(result.status, PlanStatus::Rejected);
    assert!(!result.success);
    assert_eq!(
        result.rejection.as_ref(),
        Some(&errors),
        "result.rejection holds the errors"
    );
    let evs = events(store, &id).await;
    assert!(
        evs.iter().any(|e| e.kind == EventKind::PlanRejected),
        "plan:rejected is emitted: {:?}",
        kinds(&evs)
    );
    assert_eq!(
        evs.last().map(|e| e.kind),
        Some(EventKind::PlanRejected),
        "plan:rejected is the last event: {:?}",
        kinds(&evs)
    );

    assert!(
        !store.reject_plan(&id, &errors).await.expect("reject_plan"),
        "a second reject_plan with the same id returns false"
    );
    assert_eq!(
        events(store, &id).await,
        evs,
        "a second reject adds no event"
    );
    let created = store
        .create_plan(new_plan(
            prefix,
            &id,
            valid(json!({ "steps": [step("a", &[])] })),
            None,
        ))
        .await
        .expect("create_plan");
    assert!(
        !created,
        "create_plan with a rejected plan's id returns false"
    );
    assert_nothing_ready(store, prefix, "nothing of a rejected plan is queued").await;
    let waited = tokio::time::timeout(PATIENCE, store.wait_result(&id))
        .await
        .expect("wait_result of a rejected plan returns at once")
        .expect("wait_result");
    assert_eq!(waited.status, PlanStatus::Rejected);
}

/// `wait_result` resolves when the plan ends, and at once for an ended plan.
pub async fn wait_result_resolves_on_end<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "wait");
    create(store, prefix, &id, json!({ "steps": [step("a", &[])] })).await;
    let waiter = {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move { store.wait_result(&id).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !waiter.is_finished(),
        "wait_result must not resolve while the plan runs"
    );
    let a = claim_one(store, prefix, &id, "a").await;
    assert_recorded(complete(store, &a.key, json!("done")).await, "complete a");
    let result = tokio::time::timeout(PATIENCE, waiter)
        .await
        .unwrap_or_else(|_| panic!("wait_result did not resolve within {PATIENCE:?} of the end"))
        .expect("waiter task panicked")
        .expect("wait_result");
    assert_eq!(result.plan_id, id);
    assert_eq!(result.status, PlanStatus::Succeeded);
    assert_eq!(result.results["a"].data, json!("done"));

    let again = tokio::time::timeout(PATIENCE, store.wait_result(&id))
        .await
        .expect("wait_result of an ended plan returns at once")
        .expect("wait_result");
    assert_eq!(again.status, PlanStatus::Succeeded);
}

/// `events(id, after)` returns the plan's events with id greater than
/// `after`, oldest first; a plan starts with `plan:submitted`,
/// `plan:started`.
pub async fn events_are_ordered_and_paged<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "events");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [step("a", &[]), step("b", &["a"])] }),
    )
    .await;
    let a = claim_one(store, prefix, &id, "a").await;
    store
        .emit(NewEvent {
            kind: EventKind::AgentInsight,
            plan_id: Arc::from(id.as_str()),
            step_id: Some(Arc::from("a")),
            agent_id: Some(Arc::from("system")),
            attempt: Some(a.key.attempt),
            data: json!({ "insight": "halfway" }),
        })
        .await
        .expect("emit");
    assert_recorded(complete(store, &a.key, json!(1)).await, "complete a");
    let b = claim_one(store, prefix, &id, "b").await;
    assert_recorded(complete(store, &b.key, json!(2)).await, "complete b");

    let all = events(store, &id).await;
    let k = kinds(&all);
    assert!(
        k.len() >= 2 && k[0] == "plan:submitted" && k[1] == "plan:started",
        "a plan's events start with plan:submitted, plan:started: {k:?}"
    );
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "event ids must increase: {:?}",
        all.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert!(
        all.iter().all(|e| *e.plan_id == *id),
        "events(id) returns only that plan's events"
    );
    assert_eq!(
        all.last().map(|e| e.kind),
        Some(EventKind::PlanCompleted),
        "plan:completed is the last event: {k:?}"
    );
    let started = step_events(&all, EventKind::StepStarted, "a");
    assert_eq!(started.len(), 1, "one step:started for a: {k:?}");
    assert_eq!(
        started[0].attempt,
        Some(1),
        "step:started names the attempt"
    );
    assert_eq!(started[0].agent_id.as_deref(), Some("system"));
    let insight = all
        .iter()
        .find(|e| e.kind == EventKind::AgentInsight)
        .expect("the emitted agent:insight is recorded");
    assert_eq!(insight.data, json!({ "insight": "halfway" }));
    let pos = |kind: EventKind, s: &str| {
        all.iter()
            .position(|e| e.kind == kind && e.step_id.as_deref() == Some(s))
            .unwrap_or_else(|| panic!("no {} for '{s}': {k:?}", kind.as_str()))
    };
    assert!(
        pos(EventKind::StepStarted, "a") < pos(EventKind::AgentInsight, "a")
            && pos(EventKind::AgentInsight, "a") < pos(EventKind::StepCompleted, "a")
            && pos(EventKind::StepCompleted, "a") < pos(EventKind::StepStarted, "b"),
        "events are recorded in the order they happened: {k:?}"
    );

    for (i, cut) in all.iter().enumerate() {
        let page = store.events(&id, cut.id).await.expect("events");
        assert_eq!(
            page,
            all[i + 1..].to_vec(),
            "events(id, {}) must return exactly the events after it",
            cut.id
        );
    }
    let last = all.last().expect("events").id;
    assert!(
        store.events(&id, last).await.expect("events").is_empty(),
        "events after the last one: none"
    );
    if all[0].id > 1 {
        assert_eq!(
            store.events(&id, all[0].id - 1).await.expect("events"),
            all,
            "events(id, first - 1) returns everything"
        );
    }
}

/// `purge_ended` deletes ended plans and never running ones. Purges every
/// ended plan of the store: run it alone or last.
pub async fn purge_removes_only_ended_plans<S: Store>(store: &S, prefix: &str) {
    let done = plan_id(prefix, "purge-ended");
    create(store, prefix, &done, json!({ "steps": [step("a", &[])] })).await;
    let a = claim_one(store, prefix, &done, "a").await;
    assert_recorded(complete(store, &a.key, json!(1)).await, "complete a");
    let rejected = plan_id(prefix, "purge-rejected");
    let errors = PlanErrors(vec![PlanError {
        path: "$".to_string(),
        message: "bad".to_string(),
    }]);
    assert!(store
        .reject_plan(&rejected, &errors)
        .await
        .expect("reject_plan"));
    let live = plan_id(prefix, "purge-running");
    create(
        store,
        prefix,
        &live,
        json!({ "steps": [step("x", &[]), step("y", &["x"])] }),
    )
    .await;

    let purged = store.purge_ended(now_ms() + 1).await.expect("purge_ended");
    assert!(
        purged >= 2,
        "purge_ended must report the plans it removed (got {purged})"
    );
    assert_eq!(status(store, &done).await, None, "a purged plan is gone");
    assert_eq!(
        status(store, &rejected).await,
        None,
        "a purged rejected plan is gone"
    );
    assert!(
        store.result(&done).await.expect("result").is_none(),
        "a purged plan has no result"
    );
    assert_eq!(
        status(store, &live).await,
        Some(PlanStatus::Running),
        "purge_ended never removes a running plan"
    );

    let x = claim_one(store, prefix, &live, "x").await;
    assert_recorded(complete(store, &x.key, json!("x")).await, "complete x");
    let y = claim_one(store, prefix, &live, "y").await;
    let ended = assert_recorded(complete(store, &y.key, json!("y")).await, "complete y");
    assert!(ended, "the surviving plan runs to its end");
    assert_eq!(status(store, &live).await, Some(PlanStatus::Succeeded));
    let before = store.result(&live).await.expect("result");
    let before = before.expect("result").finished_at;
    store.purge_ended(before).await.expect("purge_ended");
    assert_eq!(
        status(store, &live).await,
        Some(PlanStatus::Succeeded),
        "purge_ended(before) keeps plans that ended at or after `before`"
    );
    store.purge_ended(now_ms() + 1).await.expect("purge_ended");
    assert_eq!(status(store, &live).await, None, "now it is purged");
}

/// A sequential plan (`parallel: false`) runs one step at a time, in listed
/// order; a dead step does not stop the steps that do not need it.
pub async fn sequential_plans_run_in_order<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "sequential");
    create(
        store,
        prefix,
        &id,
        json!({ "parallel": false, "steps": [step("a", &[]), step("b", &[]), step("c", &[])] }),
    )
    .await;
    let a = claim_one(store, prefix, &id, "a").await;
    assert_nothing_ready(store, prefix, "a sequential plan runs one step at a time").await;
    assert_recorded(complete(store, &a.key, json!("a")).await, "complete a");
    let b = claim_one(store, prefix, &id, "b").await;
    assert!(
        b.dependencies.is_empty(),
        "a sequential step without dependencies gets no results"
    );
    assert_nothing_ready(store, prefix, "c waits for its turn").await;
    let ended = assert_recorded(fail(store, &b.key, "broken", None).await, "fail b");
    assert!(!ended, "c is still to run");
    let c = claim_one(store, prefix, &id, "c").await;
    let ended = assert_recorded(complete(store, &c.key, json!("c")).await, "complete c");
    assert!(ended, "c was the last step");
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Failed),
        "a plan with a dead step ends failed"
    );
}

/// A plan that times out with a fallback waits for it; when the fallback
/// fails too, the plan ends `timed_out` with the fallback's result attached.
/// Takes lifecycle work: do not run concurrently with the other fallback
/// checks on one store.
pub async fn timed_out_plan_runs_its_fallback<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "timeout-fb");
    let child = format!("{id}/fallback");
    create(
        store,
        prefix,
        &id,
        json!({
            "timeout": 1,
            "steps": [step("a", &[])],
            "fallbackPlan": { "steps": [step("f", &[])] },
        }),
    )
    .await;
    // Another check's expire_deadlines may have ended it already: only the
    // outcome is checked, not which call returned it.
    store
        .expire_deadlines(now_ms() + 10)
        .await
        .expect("expire_deadlines");
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Running),
        "a timed-out plan with a fallback keeps running until the fallback ends"
    );
    assert_nothing_ready(store, prefix, "a timed-out plan's steps are not queued").await;
    take_lifecycle_item(
        store,
        &LifecycleItem::StartFallback {
            plan_id: id.clone(),
        },
    )
    .await;
    assert!(
        store
            .link_fallback(&id, &child)
            .await
            .expect("link_fallback"),
        "link_fallback of a timed-out plan awaiting its fallback"
    );
    let spec = store.plan_spec(&id).await.expect("plan_spec");
    let fallback = *spec.expect("plan_spec").fallback.expect("fallback");
    assert!(store
        .create_plan(new_plan(prefix, &child, fallback, Some(&id)))
        .await
        .expect("create_plan (fallback)"));
    let f = claim_one(store, prefix, &child, "f").await;
    let ended = assert_recorded(fail(store, &f.key, "also broken", None).await, "fail f");
    assert!(ended, "f ends the fallback plan");
    assert_eq!(status(store, &child).await, Some(PlanStatus::Failed));
    take_lifecycle_item(
        store,
        &LifecycleItem::FallbackEnded {
            parent_id: id.clone(),
            child_id: child.clone(),
        },
    )
    .await;
    assert!(
        store
            .finish_from_fallback(&id, &child)
            .await
            .expect("finish_from_fallback"),
        "finish_from_fallback of the linked child returns true"
    );
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::TimedOut),
        "a failed fallback leaves the primary's status"
    );
    let result = store.result(&id).await.expect("result");
    let result = result.expect("an ended plan has a result");
    assert!(!result.success);
    assert!(result.fallback_used, "result.fallback_used");
    assert_eq!(result.primary_status, Some(PlanStatus::TimedOut));
    let fb = result.fallback.as_ref().expect("result.fallback");
    assert_eq!(fb.plan_id, child);
    assert_eq!(fb.status, PlanStatus::Failed);
    let evs = events(store, &id).await;
    assert_eq!(
        evs.last().map(|e| e.kind),
        Some(EventKind::PlanTimeout),
        "plan:timeout is the last event: {:?}",
        kinds(&evs)
    );
}

/// Cancelling a plan whose fallback runs names the fallback to cancel; the
/// fallback's later end changes nothing. Takes lifecycle work: do not run
/// concurrently with the other fallback checks on one store.
pub async fn cancel_during_fallback<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "cancel-fb");
    let child = format!("{id}/fallback");
    create(
        store,
        prefix,
        &id,
        json!({
            "steps": [step("a", &[])],
            "fallbackPlan": { "steps": [step("f", &[])] },
        }),
    )
    .await;
    let a = claim_one(store, prefix, &id, "a").await;
    assert_recorded(fail(store, &a.key, "broken", None).await, "fail a");
    take_lifecycle_item(
        store,
        &LifecycleItem::StartFallback {
            plan_id: id.clone(),
        },
    )
    .await;
    assert!(store
        .link_fallback(&id, &child)
        .await
        .expect("link_fallback"));
    let spec = store.plan_spec(&id).await.expect("plan_spec");
    let fallback = *spec.expect("plan_spec").fallback.expect("fallback");
    assert!(store
        .create_plan(new_plan(prefix, &child, fallback, Some(&id)))
        .await
        .expect("create_plan (fallback)"));

    let out = store.cancel(&id).await.expect("cancel");
    assert!(
        out.cancelled,
        "a plan awaiting its fallback can be cancelled"
    );
    assert_eq!(
        out.fallback_child.as_deref(),
        Some(child.as_str()),
        "cancel names the running fallback"
    );
    assert_eq!(status(store, &id).await, Some(PlanStatus::Cancelled));
    let result = store.result(&id).await.expect("result");
    let result = result.expect("a cancelled plan has a result");
    assert_eq!(result.status, PlanStatus::Cancelled);
    assert!(!result.success);
    assert_eq!(result.primary_status, Some(PlanStatus::Failed));

    let out = store.cancel(&child).await.expect("cancel (fallback)");
    assert!(out.cancelled, "the fallback is cancelled too");
    assert_nothing_ready(store, prefix, "the cancelled fallback's step is gone").await;
    take_lifecycle_item(
        store,
        &LifecycleItem::FallbackEnded {
            parent_id: id.clone(),
            child_id: child.clone(),
        },
    )
    .await;
    assert!(
        !store
            .finish_from_fallback(&id, &child)
            .await
            .expect("finish_from_fallback"),
        "finish_from_fallback of a cancelled plan returns false"
    );
    assert_eq!(
        status(store, &id).await,
        Some(PlanStatus::Cancelled),
        "the fallback's end does not change a cancelled plan"
    );
    let evs = events(store, &id).await;
    assert_eq!(
        evs.last().map(|e| e.kind),
        Some(EventKind::PlanCancelled),
        "plan:cancelled is the last event: {:?}",
        kinds(&evs)
    );
}

/// `wait_for_work` resolves when work is queued, at once when work is
/// waiting, and after `max_wait_ms` when there is none.
pub async fn wait_for_work_wakes_up<S: Store>(store: &S, prefix: &str) {
    let q = queues(prefix);
    tokio::time::timeout(PATIENCE, store.wait_for_work(&q, 20))
        .await
        .expect("wait_for_work(max 20 ms) with nothing to do must resolve after max_wait_ms");

    let waiter = {
        let store = store.clone();
        let q = q.clone();
        tokio::spawn(async move { store.wait_for_work(&q, 600_000).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let id = plan_id(prefix, "wake");
    create(store, prefix, &id, json!({ "steps": [step("a", &[])] })).await;
    tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("wait_for_work(max 600 s) must resolve when work is queued")
        .expect("waiter task panicked");
    tokio::time::timeout(PATIENCE, store.wait_for_work(&q, 600_000))
        .await
        .expect("wait_for_work(max 600 s) must resolve at once when work is waiting");
    let a = claim_one(store, prefix, &id, "a").await;
    assert_recorded(complete(store, &a.key, json!(1)).await, "complete a");
}

/// Runs every check on one store: all but the purge check concurrently,
/// each under its own prefix, then the purge check.
/// A purged plan leaves nothing behind: its dead letters go with it, and
/// when its id is used again, the old plan's queued steps, late reports and
/// leases never touch the new one. Purges the whole store: run it alone or
/// last.
pub async fn purged_ids_start_afresh<S: Store>(store: &S, prefix: &str) {
    let id = plan_id(prefix, "reused");
    create(
        store,
        prefix,
        &id,
        json!({ "steps": [step("a", &[]), step("b", &[]), step("c", &[])] }),
    )
    .await;
    let jobs = claim(store, prefix, 2).await;
    assert_eq!(ids(&jobs), ["a", "b"], "two of the three ready steps");
    let (old_a, old_b) = (jobs[0].clone(), jobs[1].clone());
    // b fails for good (a dead letter), then the plan is cancelled with a
    // still running and c still queued.
    assert_recorded(fail(store, &old_b.key, "boom", None).await, "fail b");
    assert!(
        store.cancel(&id).await.expect("cancel").cancelled,
        "the plan was open"
    );
    store.purge_ended(u64::MAX).await.expect("purge_ended");
    assert_eq!(status(store, &id).await, None, "the plan is purged");
    let letters = store.dead_letters().await.expect("dead_letters");
    assert!(
        letters.iter().all(|d| d.plan_id != id),
        "a purged plan's dead letters are purged with it: {letters:?}"
    );

    // The same id, now a plan of one step.
    create(store, prefix, &id, json!({ "steps": [step("a", &[])] })).await;
    let a = claim_one(store, prefix, &id, "a").await;
    assert_ne!(a.key.run, old_a.key.run, "a new incarnation of the id");
    // The new a runs as attempt 1, like the old a did: only the incarnation
    // tells the old plan's late reports apart.
    assert_eq!(a.key.attempt, old_a.key.attempt);
    assert_stale(
        complete(store, &old_a.key, json!("late")).await,
        "a late completion of the purged plan",
    );
    assert!(
        !store
            .extend_lease(&old_a.key, LEASE_MS)
            .await
            .expect("extend_lease"),
        "the purged plan's lease is not the new plan's"
    );
    assert_nothing_ready(
        store,
        prefix,
        "the purged plan's queued c is not the new plan's",
    )
    .await;
    assert_recorded(
        complete(store, &a.key, json!(1)).await,
        "complete the new a",
    );
    assert_eq!(status(store, &id).await, Some(PlanStatus::Succeeded));
}

/// Agent state is versioned: a save succeeds only against the version it
/// read (0 for absent), versions grow, and entries expire.
pub async fn agent_state_is_versioned<S: Store>(store: &S, prefix: &str) {
    let key = format!("{prefix}:state:learner");
    assert_eq!(store.load_state(&key).await.expect("load_state"), None);
    let v1 = store
        .save_state(&key, json!({"m": 1}), 0, 60_000)
        .await
        .expect("save_state")
        .expect("a first save against version 0 succeeds");
    assert_eq!(
        store
            .save_state(&key, json!({"m": 9}), 0, 60_000)
            .await
            .expect("save_state"),
        None,
        "a save against a stale version loses"
    );
    assert_eq!(
        store.load_state(&key).await.expect("load_state"),
        Some((json!({"m": 1}), v1))
    );
    let v2 = store
        .save_state(&key, json!({"m": 2}), v1, 60_000)
        .await
        .expect("save_state")
        .expect("a save against the current version succeeds");
    assert!(v2 > v1, "versions grow");

    // An entry that expired reads as absent; only a save against 0 revives it.
    let short = format!("{prefix}:state:short");
    let v = store
        .save_state(&short, json!(1), 0, 1)
        .await
        .expect("save_state")
        .expect("saved");
    let expired = async {
        while store
            .load_state(&short)
            .await
            .expect("load_state")
            .is_some()
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, expired)
        .await
        .expect("the entry expires after its ttl");
    assert_eq!(
        store
            .save_state(&short, json!(2), v, 60_000)
            .await
            .expect("save_state"),
        None,
        "a writer holding a version from before the expiry loses"
    );
    assert!(store
        .save_state(&short, json!(3), 0, 60_000)
        .await
        .expect("save_state")
        .is_some());
}

pub async fn run_all<S: Store>(store: &S, prefix: &str) {
    let p: Vec<String> = (0..=21).map(|i| format!("{prefix}c{i:02}")).collect();
    tokio::join!(
        create_plan_is_idempotent(store, &p[1]),
        claim_returns_ready_steps(store, &p[2]),
        completion_is_exactly_once(store, &p[3]),
        diamond_waits_for_all_dependencies(store, &p[4]),
        joins_complete_in_store(store, &p[5]),
        retry_is_scheduled(store, &p[6]),
        failure_dead_letters_and_skips(store, &p[7]),
        fail_fast_stops_the_plan(store, &p[8]),
        release_requeues_without_an_attempt(store, &p[9]),
        leases_expire_and_extend(store, &p[10]),
        deadlines_time_plans_out(store, &p[11]),
        async {
            // These take lifecycle work, which any of them may hand out.
            fallback_lifecycle(store, &p[12]).await;
            timed_out_plan_runs_its_fallback(store, &p[19]).await;
            cancel_during_fallback(store, &p[20]).await;
        },
        cancel_ends_a_plan(store, &p[13]),
        reject_records_errors(store, &p[14]),
        wait_result_resolves_on_end(store, &p[15]),
        events_are_ordered_and_paged(store, &p[16]),
        sequential_plans_run_in_order(store, &p[18]),
        wait_for_work_wakes_up(store, &p[21]),
        agent_state_is_versioned(store, &p[0]),
    );
    purge_removes_only_ended_plans(store, &p[17]).await;
    purged_ids_start_afresh(store, &p[0]).await;
}
