//! Adversarial corner cases of the embedded engine: regressions for defects
//! an adversarial review found (stale entries of a purged plan whose id is
//! reused, lifecycle work for plans that are gone, fallback ids, dead-letter
//! growth, overflowing delays), and probes of cases the other suites do not
//! cover (sequential plans with retries, joins, failFast and timeouts;
//! fallbacks and cancels; lease races; purges).
//!
//! Store-level tests drive a [`MemoryStore`] through the [`Store`] trait and
//! run the coordinator one `tick` at a time, so every interleaving is chosen
//! by the test. Nothing waits on a sleep; waits are bounded by timeouts.

use std::sync::Arc;
use std::time::Duration;

use baton_agents::Registry;
use baton_coordinator::{cancel_plan, Coordinator, CoordinatorConfig};
use baton_engine::{Engine, EngineConfig, MemoryStore};
use baton_plan::Limits;
use baton_planner::{Planner, Submission};
use baton_store::{now_ms, Ack, Event, EventKind, Job, PlanResult, PlanStatus, StepStatus, Store};
use baton_worker::StepRunner;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(4);

// ---------------------------------------------------------------- helpers

struct Rig {
    store: MemoryStore,
    planner: Planner<MemoryStore>,
    coord: Coordinator<MemoryStore>,
}

fn rig() -> Rig {
    let store = MemoryStore::new();
    let planner = Planner::new(
        store.clone(),
        Arc::new(Registry::with_builtins()),
        Limits::default(),
    );
    let coord = Coordinator::new(store.clone(), planner.clone(), CoordinatorConfig::default());
    Rig {
        store,
        planner,
        coord,
    }
}

fn queues() -> Vec<String> {
    Registry::with_builtins().queues()
}

async fn submit_to(planner: &Planner<MemoryStore>, plan: &Value) -> String {
    match planner.submit_text(&plan.to_string(), None).await.unwrap() {
        Submission::Accepted {
            id,
            duplicate: false,
        } => id,
        other => panic!("expected a new accepted plan, got {other:?}"),
    }
}

async fn claim_all(store: &MemoryStore) -> Vec<Job> {
    store.claim(&queues(), "review", 60_000, 64).await.unwrap()
}

fn job_of<'a>(jobs: &'a [Job], plan: &str, step: &str) -> &'a Job {
    jobs.iter()
        .find(|j| &*j.key.plan_id == plan && &*j.spec.id == step)
        .unwrap_or_else(|| panic!("no job for {plan}.{step} in {:?}", ids(jobs)))
}

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| format!("{}.{}#{}", j.key.plan_id, j.spec.id, j.key.attempt))
        .collect()
}

/// One coordinator round, without purging.
async fn tick(coord: &Coordinator<MemoryStore>) -> Result<(), String> {
    let mut no_purge = u64::MAX;
    coord.tick(&mut no_purge).await.map_err(|e| e.to_string())
}

fn noop(id: &str) -> Value {
    json!({"id": id, "agentId": "system", "action": "noop"})
}

fn engine() -> Engine<MemoryStore> {
    Engine::start(
        MemoryStore::new(),
        Registry::with_builtins(),
        EngineConfig::default(),
    )
}

async fn run(e: &Engine<MemoryStore>, plan: &Value) -> PlanResult {
    let r = tokio::time::timeout(PATIENCE, e.run_text(&plan.to_string()))
        .await
        .expect("the plan ends in time")
        .expect("the plan is valid");
    (*r).clone()
}

fn kinds_of(evs: &[Event], step: &str) -> Vec<&'static str> {
    evs.iter()
        .filter(|e| e.step_id.as_deref() == Some(step))
        .map(|e| e.kind.as_str())
        .collect()
}

fn started_order(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter(|e| e.kind == EventKind::StepStarted)
        .map(|e| e.step_id.as_deref().unwrap_or("?").to_string())
        .collect()
}

// ------------------------------------------------------------------- bugs

/// A lazily deleted queue entry of a cancelled, purged plan must not be
/// taken for a step of a later plan with the same id (and fewer steps):
/// entries carry the plan's incarnation, and a missing step is stale.
#[tokio::test]
async fn stale_queue_entry_after_id_reuse_does_not_panic_claim() {
    let r = rig();
    let id = "rv-reuse-queue";
    submit_to(
        &r.planner,
        &json!({"id": id, "steps": [noop("a"), noop("b"), noop("c")]}),
    )
    .await;
    // Cancelled while its three steps wait in the queue (no worker yet).
    assert!(r.store.cancel(id).await.unwrap().cancelled);
    assert_eq!(r.store.purge_ended(u64::MAX).await.unwrap(), 1);
    // The id is free again: a new plan with a single step takes it.
    submit_to(&r.planner, &json!({"id": id, "steps": [noop("only")]})).await;

    let store = r.store.clone();
    let claimed = tokio::spawn(async move { claim_all(&store).await }).await;
    let jobs = claimed.expect("claim must not panic on a stale queue entry");
    assert_eq!(ids(&jobs), vec![format!("{id}.only#1")]);
}

/// The same for a scheduled retry of a cancelled, purged plan.
#[tokio::test]
async fn stale_retry_after_id_reuse_does_not_panic_claim() {
    let r = rig();
    let id = "rv-reuse-retry";
    submit_to(
        &r.planner,
        &json!({"id": id, "steps": [noop("a"), noop("b")]}),
    )
    .await;
    let jobs = claim_all(&r.store).await;
    let b = job_of(&jobs, id, "b").key.clone();
    let ack = r.store.fail(&b, "flaky", Some(0)).await.unwrap();
    assert_eq!(ack, Ack::Recorded { plan_ended: false });
    assert!(r.store.cancel(id).await.unwrap().cancelled);
    assert_eq!(r.store.purge_ended(u64::MAX).await.unwrap(), 1);
    submit_to(&r.planner, &json!({"id": id, "steps": [noop("only")]})).await;

    let store = r.store.clone();
    let claimed = tokio::spawn(async move { claim_all(&store).await }).await;
    let jobs = claimed.expect("claim must not panic on a stale scheduled retry");
    assert_eq!(ids(&jobs), vec![format!("{id}.only#1")]);
}

/// Lifecycle work about plans that are gone (the end of a fallback whose
/// parent was purged) must not hold up the rest of its batch: plan Q's
/// fallback still starts and Q ends.
#[tokio::test]
async fn failing_lifecycle_item_does_not_lose_the_rest_of_its_batch() {
    let r = rig();
    let p = "rv-poison-p";
    let q = "rv-poison-q";
    let with_fallback = |id: &str| {
        json!({"id": id, "steps": [noop("a")],
               "fallbackPlan": {"steps": [noop("fb")]}})
    };
    submit_to(&r.planner, &with_fallback(p)).await;
    let jobs = claim_all(&r.store).await;
    r.store
        .fail(&job_of(&jobs, p, "a").key, "boom", None)
        .await
        .unwrap();
    tick(&r.coord).await.unwrap();
    let p_child = format!("{p}/fallback");
    assert_eq!(
        r.store.status(&p_child).await.unwrap(),
        Some(PlanStatus::Running)
    );
    // P is cancelled (its child not yet: cancel_plan cancels them one after
    // the other); the child then ends, queueing FallbackEnded{P}; and P and
    // its fallback are purged by retention before the coordinator gets to
    // that item, which now names plans that are gone.
    assert!(r.store.cancel(p).await.unwrap().cancelled);
    submit_to(&r.planner, &with_fallback(q)).await;
    let jobs = claim_all(&r.store).await;
    r.store
        .complete(&job_of(&jobs, &p_child, "fb").key, Value::Null)
        .await
        .unwrap();
    assert_eq!(r.store.purge_ended(now_ms() + 1).await.unwrap(), 2);
    // Q fails: StartFallback{Q} is queued behind the stale item.
    r.store
        .fail(&job_of(&jobs, q, "a").key, "boom", None)
        .await
        .unwrap();

    let first = tick(&r.coord).await;
    for _ in 0..3 {
        let _ = tick(&r.coord).await;
    }
    assert!(
        r.store
            .status(&format!("{q}/fallback"))
            .await
            .unwrap()
            .is_some(),
        "Q's fallback was never started (first tick: {first:?}); Q is {:?}",
        r.store.status(q).await.unwrap()
    );
}

/// A fallback still running when its cancelled parent is purged goes with
/// it, so a later plan with the same id gets a fallback of its own and ends
/// (guarantee 4) instead of waiting on an old one.
#[tokio::test]
async fn fallback_id_taken_by_an_earlier_incarnation_still_ends_the_plan() {
    let r = rig();
    let p = "rv-stale-child";
    let child = format!("{p}/fallback");
    let plan = json!({"id": p, "steps": [noop("a")],
                      "fallbackPlan": {"steps": [noop("fb")]}});
    submit_to(&r.planner, &plan).await;
    let jobs = claim_all(&r.store).await;
    r.store
        .fail(&job_of(&jobs, p, "a").key, "boom", None)
        .await
        .unwrap();
    tick(&r.coord).await.unwrap();
    // The parent is cancelled and purged while its fallback still runs:
    // the fallback goes with it, so it cannot hold the next plan's
    // fallback id.
    assert!(r.store.cancel(p).await.unwrap().cancelled);
    assert_eq!(r.store.purge_ended(now_ms() + 1).await.unwrap(), 2);
    assert_eq!(r.store.status(&child).await.unwrap(), None);
    // Same id submitted again.
    submit_to(&r.planner, &plan).await;
    let jobs = claim_all(&r.store).await;
    // The new incarnation fails and wants its own fallback.
    r.store
        .fail(&job_of(&jobs, p, "a").key, "boom", None)
        .await
        .unwrap();
    // Drive everything to its end: coordinator rounds, and every job any
    // fallback queues completes at once.
    for _ in 0..5 {
        tick(&r.coord).await.unwrap();
        for j in claim_all(&r.store).await {
            r.store.complete(&j.key, Value::Null).await.unwrap();
        }
    }
    let status = r.store.status(p).await.unwrap();
    assert!(
        status.is_some_and(PlanStatus::is_terminal),
        "plan {p} is still {status:?}: it waits on a fallback that will never run"
    );
    let result = r.store.result(p).await.unwrap().expect("ended");
    assert!(result.fallback_used && result.success, "{result:?}");
    assert_eq!(result.fallback.as_ref().unwrap().plan_id, child);
}

/// Purging a plan drops its dead letters: a long-running engine does not
/// grow by one entry per step that ever failed for good.
#[tokio::test]
async fn purging_a_plan_drops_its_dead_letters() {
    let r = rig();
    let id = "rv-dead-purge";
    submit_to(&r.planner, &json!({"id": id, "steps": [noop("a")]})).await;
    let jobs = claim_all(&r.store).await;
    r.store
        .fail(&job_of(&jobs, id, "a").key, "boom", None)
        .await
        .unwrap();
    assert_eq!(r.store.status(id).await.unwrap(), Some(PlanStatus::Failed));
    assert_eq!(r.store.purge_ended(u64::MAX).await.unwrap(), 1);
    assert_eq!(r.store.status(id).await.unwrap(), None);
    let left: Vec<_> = r
        .store
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.plan_id == id)
        .collect();
    assert!(
        left.is_empty(),
        "dead letters of a purged plan remain: {left:?}"
    );
}

/// A huge retry delay (the backoff functions saturate to `u64::MAX`) does
/// not overflow the clock arithmetic: the retry is scheduled, never due.
#[tokio::test]
async fn huge_retry_delay_does_not_overflow() {
    let r = rig();
    let id = "rv-huge-delay";
    submit_to(&r.planner, &json!({"id": id, "steps": [noop("a")]})).await;
    let jobs = claim_all(&r.store).await;
    let key = job_of(&jobs, id, "a").key.clone();
    let store = r.store.clone();
    let failed = tokio::spawn(async move { store.fail(&key, "later", Some(u64::MAX)).await }).await;
    let ack = failed.expect("fail must not panic").unwrap();
    assert_eq!(ack, Ack::Recorded { plan_ended: false });
    // Due (practically) never: nothing is ready now.
    assert!(claim_all(&r.store).await.is_empty());
}

// ------------------------------------------------- probes: store + coordinator

/// A cancel that lands after `StartFallback` was queued but before the
/// coordinator took it: no fallback starts, the result says so.
#[tokio::test]
async fn cancel_before_the_fallback_is_started_starts_none() {
    let r = rig();
    let p = "rv-cancel-pre-link";
    submit_to(
        &r.planner,
        &json!({"id": p, "steps": [noop("a")], "fallbackPlan": {"steps": [noop("fb")]}}),
    )
    .await;
    let jobs = claim_all(&r.store).await;
    let ack = r
        .store
        .fail(&job_of(&jobs, p, "a").key, "boom", None)
        .await
        .unwrap();
    assert_eq!(ack, Ack::Recorded { plan_ended: true });
    assert!(cancel_plan(&r.store, p).await.unwrap());
    tick(&r.coord).await.unwrap();
    assert_eq!(
        r.store.status(&format!("{p}/fallback")).await.unwrap(),
        None
    );
    let res = r.store.result(p).await.unwrap().expect("ended");
    assert_eq!(res.status, PlanStatus::Cancelled);
    assert_eq!(res.primary_status, Some(PlanStatus::Failed));
    assert!(!res.fallback_used);
    assert!(claim_all(&r.store).await.is_empty());
}

/// A lapsed lease reaped after the worker's completion: the reaper's
/// failure is stale, the completion counts once.
#[tokio::test]
async fn completion_beats_the_reaper_exactly_once() {
    let r = rig();
    let id = "rv-lease-race-1";
    submit_to(
        &r.planner,
        &json!({"id": id, "steps": [noop("a"), {"id": "b", "agentId": "system",
                "action": "noop", "dependencies": ["a"]}]}),
    )
    .await;
    let jobs = r.store.claim(&queues(), "w", 0, 8).await.unwrap();
    let expired = r.store.expired_leases(now_ms() + 1).await.unwrap();
    assert_eq!(ids(&expired), vec![format!("{id}.a#1")]);
    let key = &expired[0].key;
    assert_eq!(
        r.store
            .complete(&job_of(&jobs, id, "a").key, json!(1))
            .await
            .unwrap(),
        Ack::Recorded { plan_ended: false }
    );
    assert_eq!(
        r.store.fail(key, "lease expired", Some(0)).await.unwrap(),
        Ack::Stale
    );
    let next = claim_all(&r.store).await;
    assert_eq!(ids(&next), vec![format!("{id}.b#1")]);
    let evs = r.store.events(id, 0).await.unwrap();
    assert_eq!(kinds_of(&evs, "a"), vec!["step:started", "step:completed"]);
}

/// The reaper wins: the late completion of the reaped attempt is stale and
/// the retry runs as attempt 2; releasing that attempt keeps its number.
#[tokio::test]
async fn reaper_beats_the_completion_and_release_keeps_attempts() {
    let r = rig();
    let id = "rv-lease-race-2";
    submit_to(&r.planner, &json!({"id": id, "steps": [noop("a")]})).await;
    let jobs = claim_all(&r.store).await;
    let first = job_of(&jobs, id, "a").key.clone();
    assert_eq!(
        r.store
            .fail(&first, "lease expired", Some(0))
            .await
            .unwrap(),
        Ack::Recorded { plan_ended: false }
    );
    assert_eq!(
        r.store.complete(&first, json!("late")).await.unwrap(),
        Ack::Stale
    );
    let second = claim_all(&r.store).await;
    assert_eq!(ids(&second), vec![format!("{id}.a#2")]);
    assert!(r.store.release(&second[0].key).await.unwrap());
    assert!(!r.store.release(&second[0].key).await.unwrap());
    let again = claim_all(&r.store).await;
    assert_eq!(ids(&again), vec![format!("{id}.a#2")]);
    r.store.complete(&again[0].key, json!(2)).await.unwrap();
    let res = r.store.result(id).await.unwrap().expect("ended");
    assert_eq!(res.status, PlanStatus::Succeeded);
    assert_eq!(res.results["a"].attempts, 2);
    assert_eq!(res.results["a"].data, json!(2));
}

/// A purge while someone waits on a running plan leaves that plan alone;
/// the waiter gets the result when it ends.
#[tokio::test]
async fn purge_while_waiting_on_a_running_plan() {
    let r = rig();
    let id = "rv-purge-wait";
    submit_to(&r.planner, &json!({"id": id, "steps": [noop("a")]})).await;
    let store = r.store.clone();
    let waiter = tokio::spawn(async move { store.wait_result(id).await });
    tokio::task::yield_now().await;
    assert_eq!(r.store.purge_ended(u64::MAX).await.unwrap(), 0);
    let jobs = claim_all(&r.store).await;
    r.store
        .complete(&job_of(&jobs, id, "a").key, json!("x"))
        .await
        .unwrap();
    let res = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("the waiter is told")
        .unwrap()
        .unwrap();
    assert_eq!(res.status, PlanStatus::Succeeded);
}

/// A worker whose registry lacks the step's agent fails the attempt with a
/// clear message (retryable, so the policy decides); without retries the
/// step is dead-lettered and the plan ends.
#[tokio::test]
async fn worker_without_the_agent_fails_the_attempt_clearly() {
    let r = rig();
    let id = "rv-missing-agent";
    submit_to(&r.planner, &json!({"id": id, "steps": [noop("a")]})).await;
    let jobs = claim_all(&r.store).await;
    let runner = StepRunner::new(r.store.clone(), Arc::new(Registry::new()), 60_000, None);
    runner.run(job_of(&jobs, id, "a").clone()).await;
    let res = r.store.result(id).await.unwrap().expect("ended");
    assert_eq!(res.status, PlanStatus::Failed);
    let err = res.results["a"].error.clone().unwrap_or_default();
    assert!(err.contains("'system' is not available"), "{err}");
    let dead = r.store.dead_letters().await.unwrap();
    assert!(dead.iter().any(|d| d.plan_id == id && d.step_id == "a"));
}

// ------------------------------------------------------ probes: engine

/// Sequential plan: a retried step, then a join on it, then a step that
/// depends on the join; events in order, results passed along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_retry_then_join_then_dependent() {
    let e = engine();
    let id = "rv-seq-retry-join";
    let plan = json!({"id": id, "parallel": false, "steps": [
        {"id": "s1", "agentId": "system", "action": "fail", "input": {"times": 1},
         "retryPolicy": {"maxRetries": 2, "backoffMs": 1}},
        {"id": "j", "dependencies": ["s1"]},
        {"id": "s2", "agentId": "system", "action": "echo", "input": 7,
         "dependencies": ["j"]}
    ]});
    let r = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert_eq!(r.results["s1"].attempts, 2);
    assert_eq!(r.results["j"].data, json!({"s1": {"attempts": 2}}));
    assert_eq!(
        r.results["s2"].data["dependencies"]["j"],
        json!({"s1": {"attempts": 2}})
    );
    let evs = e.store().events(id, 0).await.unwrap();
    assert_eq!(started_order(&evs), vec!["s1", "s1", "j", "s2"]);
    assert_eq!(
        kinds_of(&evs, "s1"),
        vec![
            "step:started",
            "agent:error",
            "step:failed",
            "step:retrying",
            "step:started",
            "step:completed"
        ]
    );
}

/// Sequential, not failFast: a failed step skips its dependents (a join
/// among them) and the independent steps after it still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_failure_skips_dependents_and_goes_on() {
    let e = engine();
    let id = "rv-seq-skip";
    let plan = json!({"id": id, "parallel": false, "steps": [
        {"id": "a", "agentId": "system", "action": "fail", "input": {"permanent": true}},
        {"id": "j", "dependencies": ["a"]},
        {"id": "b", "agentId": "system", "action": "noop", "dependencies": ["j"]},
        noop("c"),
        {"id": "d", "dependencies": ["c"]}
    ]});
    let r = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed);
    let st = |s: &str| r.results[s].status;
    assert_eq!(st("a"), StepStatus::Failed);
    assert_eq!(st("j"), StepStatus::Skipped);
    assert_eq!(st("b"), StepStatus::Skipped);
    assert_eq!(st("c"), StepStatus::Succeeded);
    assert_eq!(st("d"), StepStatus::Succeeded);
    let evs = e.store().events(id, 0).await.unwrap();
    assert_eq!(started_order(&evs), vec!["a", "c", "d"]);
}

/// Sequential + failFast + retries: the plan stops only once the retries
/// are spent; later steps never start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_fail_fast_after_retries() {
    let e = engine();
    let id = "rv-seq-failfast";
    let plan = json!({"id": id, "parallel": false, "failFast": true, "steps": [
        noop("first"),
        {"id": "a", "agentId": "system", "action": "fail", "input": {"times": 9},
         "retryPolicy": {"maxRetries": 2, "backoffMs": 1, "strategy": "fixed"}},
        noop("after")
    ]});
    let r = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed);
    assert_eq!(r.results["a"].attempts, 3);
    assert_eq!(r.results["a"].status, StepStatus::Failed);
    assert_eq!(r.results["after"].status, StepStatus::Skipped);
    assert_eq!(r.results["after"].attempts, 0);
    let evs = e.store().events(id, 0).await.unwrap();
    assert_eq!(started_order(&evs), vec!["first", "a", "a", "a"]);
}

/// A step timing out on every attempt in a sequential plan: dead-lettered
/// after its retries, the independent next step still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_step_timeouts_with_retries() {
    let e = engine();
    let id = "rv-seq-timeout";
    let plan = json!({"id": id, "parallel": false, "steps": [
        {"id": "slow", "agentId": "system", "action": "sleep", "input": {"ms": 5000},
         "timeout": 20, "retryPolicy": {"maxRetries": 1, "backoffMs": 0}},
        noop("next")
    ]});
    let r = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed);
    assert_eq!(r.results["slow"].attempts, 2);
    assert!(r.results["slow"]
        .error
        .as_deref()
        .unwrap_or("")
        .contains("timed out"));
    assert_eq!(r.results["next"].status, StepStatus::Succeeded);
}

/// The plan's deadline passes while a retry waits out its backoff: the
/// plan times out at once, the retry never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_timeout_while_a_retry_is_scheduled() {
    let e = engine();
    let id = "rv-timeout-scheduled";
    let plan = json!({"id": id, "timeout": 100, "steps": [
        {"id": "a", "agentId": "system", "action": "fail", "input": {"times": 5},
         "retryPolicy": {"maxRetries": 5, "backoffMs": 60000}}
    ]});
    let r = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::TimedOut);
    assert_eq!(r.results["a"].status, StepStatus::Skipped);
    assert_eq!(r.results["a"].attempts, 1);
    let evs = e.store().events(id, 0).await.unwrap();
    assert_eq!(
        kinds_of(&evs, "a"),
        vec![
            "step:started",
            "agent:error",
            "step:failed",
            "step:retrying",
            "step:skipped"
        ]
    );
    assert_eq!(evs.last().unwrap().kind, EventKind::PlanTimeout);
}

/// Joins first: a plan made only of joins ends inside `create_plan`; a join
/// with no dependencies feeds `{}` to its dependents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_as_first_step() {
    let e = engine();
    let only = run(&e, &json!({"id": "rv-join-only", "steps": [{"id": "j"}]})).await;
    assert_eq!(only.status, PlanStatus::Succeeded);
    assert_eq!(only.results["j"].data, json!({}));
    for parallel in [true, false] {
        let id = format!("rv-join-first-{parallel}");
        let r = run(
            &e,
            &json!({"id": id, "parallel": parallel, "timeout": 5000, "steps": [
                {"id": "j"},
                {"id": "x", "agentId": "system", "action": "echo", "dependencies": ["j"]}
            ]}),
        )
        .await;
        assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
        assert_eq!(r.results["x"].data["dependencies"], json!({"j": {}}));
    }
}

/// A fallback made of a join only ends while the coordinator creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_of_only_a_join() {
    let e = engine();
    let id = "rv-fallback-join";
    let r = run(
        &e,
        &json!({"id": id, "steps": [
            {"id": "a", "agentId": "system", "action": "fail", "input": {"permanent": true}}
        ], "fallbackPlan": {"steps": [{"id": "j"}]}}),
    )
    .await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert!(r.fallback_used);
    assert_eq!(r.primary_status, Some(PlanStatus::Failed));
    assert_eq!(r.fallback.as_deref().unwrap().results["j"].data, json!({}));
}

/// The largest retry count the limits allow, with no backoff: 101 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_retries_run_to_success() {
    let e = engine();
    let max = Limits::default().max_retries;
    let r = run(
        &e,
        &json!({"id": "rv-max-retries", "steps": [
            {"id": "a", "agentId": "system", "action": "fail", "input": {"times": max},
             "retryPolicy": {"maxRetries": max, "backoffMs": 0}}
        ]}),
    )
    .await;
    assert_eq!(r.status, PlanStatus::Succeeded);
    assert_eq!(r.results["a"].attempts, max + 1);
}
