//! End-to-end checks of the plan semantics of the design brief ("The plan"),
//! run through the embedded engine (planner, apalis workers and coordinator
//! over one [`MemoryStore`], in this process).
//!
//! Every test starts its own engine and uses plan ids of its own, so the
//! tests run in parallel. Nothing waits on a sleep: tests wait on plan
//! results (`wait_result`) or on live events (`MemoryStore::subscribe`, taken
//! before the plan is submitted). Lower time bounds are strict (they follow
//! from the semantics); upper bounds are loose, for a shared machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_agents::Registry;
use baton_engine::{Engine, EngineConfig, MemoryStore, RunError};
use baton_planner::Submission;
use baton_store::{Event, EventKind, PlanResult, PlanStatus, Store};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Longest any single wait in these tests may take before it is a failure.
const PATIENCE: Duration = Duration::from_secs(10);

fn engine() -> Engine<MemoryStore> {
    Engine::start(
        MemoryStore::new(),
        Registry::with_builtins(),
        EngineConfig::default(),
    )
}

/// Runs a plan to its end; returns its result and the wall-clock time taken.
async fn run(engine: &Engine<MemoryStore>, plan: &Value) -> (PlanResult, Duration) {
    let start = Instant::now();
    let result = tokio::time::timeout(PATIENCE, engine.run_text(&plan.to_string()))
        .await
        .expect("the plan ends in time")
        .expect("the plan is valid");
    ((*result).clone(), start.elapsed())
}

/// Submits a plan that must be accepted as new; returns its id.
async fn submit(engine: &Engine<MemoryStore>, plan: &Value) -> String {
    match engine.submit_text(&plan.to_string()).await.expect("stored") {
        Submission::Accepted {
            id,
            duplicate: false,
        } => id,
        other => panic!("expected a new accepted plan, got {other:?}"),
    }
}

async fn wait_result(engine: &Engine<MemoryStore>, id: &str) -> PlanResult {
    let r = tokio::time::timeout(PATIENCE, engine.store().wait_result(id))
        .await
        .expect("the plan ends in time")
        .expect("the plan exists");
    (*r).clone()
}

async fn events(engine: &Engine<MemoryStore>, id: &str) -> Vec<Event> {
    engine.store().events(id, 0).await.expect("plan events")
}

/// Waits for the first live event matching `pred`.
async fn next_event(
    rx: &mut broadcast::Receiver<Arc<Event>>,
    pred: impl Fn(&Event) -> bool,
) -> Arc<Event> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("the awaited event arrives in time")
}

fn is(e: &Event, kind: EventKind, plan: &str, step: Option<&str>) -> bool {
    e.kind == kind && &*e.plan_id == plan && (step.is_none() || e.step_id.as_deref() == step)
}

/// The step result of `step` in `r`.
fn step(r: &PlanResult, step: &str) -> Value {
    let s = r
        .results
        .get(step)
        .unwrap_or_else(|| panic!("no result for step '{step}' in {:?}", r.results));
    serde_json::to_value(s).expect("a step result serialises")
}

fn attempts(r: &PlanResult, s: &str) -> u64 {
    step(r, s)["attempts"]
        .as_u64()
        .expect("attempts is a number")
}

fn of_kind(evs: &[Event], kind: EventKind) -> Vec<&Event> {
    evs.iter().filter(|e| e.kind == kind).collect()
}

fn of_kind_step<'a>(evs: &'a [Event], kind: EventKind, s: &str) -> Vec<&'a Event> {
    evs.iter()
        .filter(|e| e.kind == kind && e.step_id.as_deref() == Some(s))
        .collect()
}

/// The last event that is not an agent's own (`agent:error` events of a
/// failed attempt may be recorded late: see
/// `agent_error_is_recorded_before_the_failure_and_the_plan_end`).
fn last_lifecycle_event(evs: &[Event]) -> &Event {
    evs.iter()
        .rev()
        .find(|e| !matches!(e.kind, EventKind::AgentError | EventKind::AgentInsight))
        .expect("a plan has lifecycle events")
}

fn kinds(evs: &[Event]) -> Vec<&'static str> {
    evs.iter().map(|e| e.kind.as_str()).collect()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn sleep_step(id: &str, ms: u64) -> Value {
    json!({"id": id, "agentId": "system", "action": "sleep", "input": {"ms": ms}})
}

// 1. Parallel DAG -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_fan_out_runs_concurrently_and_join_collects_results() {
    let e = engine();
    let plan = json!({
        "id": "sem-parallel-fanout",
        "steps": [
            sleep_step("A", 100),
            sleep_step("B", 100),
            sleep_step("C", 100),
            {"id": "join", "dependencies": ["A", "B", "C"]}
        ]
    });
    let (r, took) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert!(r.success);
    assert!(ms(took) >= 100, "took {took:?}");
    assert!(
        ms(took) < 250,
        "A, B and C did not run concurrently: {took:?}"
    );
    assert!(
        r.duration >= 100 && r.duration < 250,
        "duration {}",
        r.duration
    );
    for s in ["A", "B", "C"] {
        assert_eq!(step(&r, s)["data"], json!({"sleptMs": 100}));
        assert_eq!(attempts(&r, s), 1);
    }
    let join = step(&r, "join");
    assert_eq!(join["success"], json!(true));
    assert_eq!(attempts(&r, "join"), 1);
    assert_eq!(
        join["data"],
        json!({"A": {"sleptMs": 100}, "B": {"sleptMs": 100}, "C": {"sleptMs": 100}})
    );

    // Concurrency, independently of timing: the three started before any ended.
    let evs = events(&e, "sem-parallel-fanout").await;
    let last_start = of_kind(&evs, EventKind::StepStarted)
        .iter()
        .filter(|ev| ev.step_id.as_deref() != Some("join"))
        .map(|ev| ev.id)
        .max()
        .unwrap();
    let first_end = of_kind(&evs, EventKind::StepCompleted)
        .iter()
        .map(|ev| ev.id)
        .min()
        .unwrap();
    assert!(last_start < first_end, "{:?}", kinds(&evs));
    // The join starts only after all three completed.
    let join_start = of_kind_step(&evs, EventKind::StepStarted, "join");
    assert_eq!(join_start.len(), 1);
    let last_end = of_kind(&evs, EventKind::StepCompleted)
        .iter()
        .filter(|ev| ev.step_id.as_deref() != Some("join"))
        .map(|ev| ev.id)
        .max()
        .unwrap();
    assert!(join_start[0].id > last_end);
}

// 2. Sequential mode ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_plan_runs_one_step_at_a_time_in_listed_order() {
    let e = engine();
    let plan = json!({
        "id": "sem-sequential",
        "parallel": false,
        "steps": [sleep_step("s3", 60), sleep_step("s1", 40), sleep_step("s2", 50)]
    });
    let (r, took) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert!(ms(took) >= 150, "steps overlapped: {took:?}");
    assert!(r.duration >= 150, "duration {}", r.duration);
    assert!(ms(took) < 1500, "took {took:?}");

    let evs = events(&e, "sem-sequential").await;
    let lifecycle: Vec<(&str, &str)> = evs
        .iter()
        .filter(|ev| matches!(ev.kind, EventKind::StepStarted | EventKind::StepCompleted))
        .map(|ev| (ev.kind.as_str(), ev.step_id.as_deref().unwrap()))
        .collect();
    assert_eq!(
        lifecycle,
        vec![
            ("step:started", "s3"),
            ("step:completed", "s3"),
            ("step:started", "s1"),
            ("step:completed", "s1"),
            ("step:started", "s2"),
            ("step:completed", "s2"),
        ]
    );
    // Each step starts no earlier (in ms) than the previous one completed.
    let done_s3 = of_kind_step(&evs, EventKind::StepCompleted, "s3")[0];
    let start_s1 = of_kind_step(&evs, EventKind::StepStarted, "s1")[0];
    let done_s1 = of_kind_step(&evs, EventKind::StepCompleted, "s1")[0];
    let start_s2 = of_kind_step(&evs, EventKind::StepStarted, "s2")[0];
    assert!(start_s1.id > done_s3.id && start_s1.timestamp >= done_s3.timestamp);
    assert!(start_s2.id > done_s1.id && start_s2.timestamp >= done_s1.timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_plan_honours_dependencies_and_passes_results() {
    let e = engine();
    let plan = json!({
        "id": "sem-sequential-deps",
        "parallel": false,
        "steps": [
            {"id": "a", "agentId": "system", "action": "echo", "input": {"n": 1}},
            {"id": "b", "agentId": "system", "action": "noop"},
            {"id": "c", "agentId": "system", "action": "echo", "dependencies": ["a"]},
            {"id": "j", "dependencies": ["b", "c"]}
        ]
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    let a = json!({"input": {"n": 1}, "dependencies": {}});
    assert_eq!(step(&r, "a")["data"], a);
    assert_eq!(
        step(&r, "c")["data"],
        json!({"input": null, "dependencies": {"a": a}})
    );
    assert_eq!(
        step(&r, "j")["data"],
        json!({"b": null, "c": {"input": null, "dependencies": {"a": a}}})
    );
    let evs = events(&e, "sem-sequential-deps").await;
    let started: Vec<&str> = of_kind(&evs, EventKind::StepStarted)
        .iter()
        .map(|ev| ev.step_id.as_deref().unwrap())
        .collect();
    assert_eq!(started, ["a", "b", "c", "j"]);
}

// 3. Input and dependencies' results -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_gets_its_input_and_its_dependencies_results() {
    let e = engine();
    let plan = json!({
        "id": "sem-inputs",
        "steps": [
            {"id": "a", "agentId": "system", "action": "echo", "input": {"x": 1}},
            {"id": "b", "agentId": "system", "action": "sleep", "input": {"ms": 5}},
            {"id": "c", "agentId": "system", "action": "echo",
             "input": {"y": [2, 3]}, "dependencies": ["a", "b"]},
            {"id": "d", "agentId": "system", "action": "echo", "dependencies": ["c"]}
        ]
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    let a = json!({"input": {"x": 1}, "dependencies": {}});
    assert_eq!(step(&r, "a")["data"], a);
    let c = json!({
        "input": {"y": [2, 3]},
        "dependencies": {"a": a, "b": {"sleptMs": 5}}
    });
    assert_eq!(step(&r, "c")["data"], c);
    // Only direct dependencies are handed over.
    assert_eq!(
        step(&r, "d")["data"],
        json!({"input": null, "dependencies": {"c": c}})
    );
}

// 4. Retries and backoff -----------------------------------------------------

/// Runs one `fail` step under `policy` and checks the retry events against
/// the expected delays; returns the result and the step's events.
async fn retried(id: &str, times: u64, policy: Value) -> (PlanResult, Vec<Event>) {
    let e = engine();
    let plan = json!({
        "id": id,
        "steps": [{"id": "flaky", "agentId": "system", "action": "fail",
                   "input": {"times": times}, "retryPolicy": policy}]
    });
    let (r, _) = run(&e, &plan).await;
    let evs = events(&e, id).await;
    (r, evs)
}

/// Checks a step that failed `delays.len()` times and then succeeded:
/// failed/retrying events per attempt, delays, and that each retry started
/// no earlier than its delay allowed.
fn check_retries(r: &PlanResult, evs: &[Event], delays: &[u64], exact: bool) {
    let n = delays.len() as u64;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert_eq!(attempts(r, "flaky"), n + 1);
    assert_eq!(step(r, "flaky")["data"], json!({"attempts": n + 1}));
    assert_eq!(step(r, "flaky")["success"], json!(true));

    let failed = of_kind_step(evs, EventKind::StepFailed, "flaky");
    let retrying = of_kind_step(evs, EventKind::StepRetrying, "flaky");
    let started = of_kind_step(evs, EventKind::StepStarted, "flaky");
    let want: Vec<u32> = (1..=n as u32).collect();
    assert_eq!(
        failed
            .iter()
            .map(|e| e.attempt.unwrap())
            .collect::<Vec<_>>(),
        want
    );
    assert_eq!(
        retrying
            .iter()
            .map(|e| e.attempt.unwrap())
            .collect::<Vec<_>>(),
        want
    );
    assert_eq!(
        started
            .iter()
            .map(|e| e.attempt.unwrap())
            .collect::<Vec<_>>(),
        (1..=n as u32 + 1).collect::<Vec<_>>()
    );
    for f in &failed {
        assert_eq!(f.data["willRetry"], json!(true));
    }
    let mut total = 0;
    for (i, (ev, &d)) in retrying.iter().zip(delays).enumerate() {
        let delay = ev.data["delayMs"].as_u64().expect("delayMs");
        if exact {
            assert_eq!(delay, d, "delay before retry {}", i + 1);
        } else {
            assert!(
                delay >= d / 2 && delay <= d,
                "jittered delay {delay} outside [{}, {d}]",
                d / 2
            );
        }
        assert_eq!(ev.data["nextAttempt"], json!(i as u32 + 2));
        // Order: failed(n) < retrying(n) < started(n + 1).
        assert!(failed[i].id < ev.id && ev.id < started[i + 1].id);
        // The retry waited its delay (timestamps are store-side ms).
        assert!(
            started[i + 1].timestamp >= ev.timestamp + delay,
            "retry {} started {} ms after being scheduled with a {delay} ms delay",
            i + 1,
            started[i + 1].timestamp - ev.timestamp
        );
        total += delay;
    }
    let duration = step(r, "flaky")["duration"].as_u64().unwrap();
    assert!(
        duration >= total,
        "step duration {duration} < backoff total {total}"
    );
    assert!(duration < total * 5 + 1000, "step duration {duration}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exponential_backoff_then_success() {
    let (r, evs) = retried(
        "sem-retry-exponential",
        2,
        json!({"maxRetries": 2, "backoffMs": 50}),
    )
    .await;
    check_retries(&r, &evs, &[50, 100], true);
    assert!(step(&r, "flaky")["duration"].as_u64().unwrap() >= 150);
    assert!(r.duration >= 150);
    assert!(
        r.errors.is_none(),
        "a step that succeeded has no error: {r:?}"
    );
    assert_eq!(step(&r, "flaky")["error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_linear_backoff() {
    let (r, evs) = retried(
        "sem-retry-linear",
        3,
        json!({"maxRetries": 3, "backoffMs": 20, "strategy": "linear"}),
    )
    .await;
    check_retries(&r, &evs, &[20, 40, 60], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_fixed_backoff() {
    let (r, evs) = retried(
        "sem-retry-fixed",
        3,
        json!({"maxRetries": 5, "backoffMs": 30, "strategy": "fixed"}),
    )
    .await;
    check_retries(&r, &evs, &[30, 30, 30], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_max_backoff_caps_each_delay() {
    let (r, evs) = retried(
        "sem-retry-capped",
        4,
        json!({"maxRetries": 4, "backoffMs": 20, "maxBackoffMs": 50}),
    )
    .await;
    check_retries(&r, &evs, &[20, 40, 50, 50], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_jitter_spreads_delays_over_upper_half() {
    let (r, evs) = retried(
        "sem-retry-jitter",
        3,
        json!({"maxRetries": 3, "backoffMs": 40, "jitter": true}),
    )
    .await;
    check_retries(&r, &evs, &[40, 80, 160], false);
}

// 5. Retries exhausted ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_dead_letters_the_step_and_fails_the_plan() {
    let e = engine();
    let id = "sem-retry-exhausted";
    let plan = json!({
        "id": id,
        "steps": [{"id": "doomed", "agentId": "system", "action": "fail",
                   "input": {"times": 5, "message": "still broken"},
                   "retryPolicy": {"maxRetries": 1, "backoffMs": 10}}]
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed, "{r:?}");
    assert!(!r.success);
    let s = step(&r, "doomed");
    assert_eq!(s["success"], json!(false));
    assert_eq!(s["status"], json!("failed"));
    assert_eq!(s["attempts"], json!(2));
    assert_eq!(s["error"], json!("still broken"));
    let errors = r.errors.as_ref().expect("errors on failure");
    assert_eq!(
        errors.get("doomed").map(String::as_str),
        Some("still broken")
    );

    let dead = e.store().dead_letters().await.unwrap();
    let mine: Vec<_> = dead.iter().filter(|d| d.plan_id == id).collect();
    assert_eq!(mine.len(), 1, "{dead:?}");
    assert_eq!(mine[0].step_id, "doomed");
    assert_eq!(mine[0].attempts, 2);
    assert_eq!(mine[0].agent_id.as_deref(), Some("system"));
    assert_eq!(mine[0].action.as_deref(), Some("fail"));
    assert_eq!(mine[0].error, "still broken");

    let evs = events(&e, id).await;
    let failed = of_kind_step(&evs, EventKind::StepFailed, "doomed");
    assert_eq!(
        failed
            .iter()
            .map(|ev| (ev.attempt.unwrap(), ev.data["willRetry"].clone()))
            .collect::<Vec<_>>(),
        vec![(1, json!(true)), (2, json!(false))]
    );
    assert_eq!(of_kind(&evs, EventKind::StepRetrying).len(), 1);
    let dl = of_kind_step(&evs, EventKind::StepDeadLettered, "doomed");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].attempt, Some(2));
    assert!(dl[0].id > failed[1].id);
    let end = of_kind(&evs, EventKind::PlanFailed);
    assert_eq!(end.len(), 1);
    assert!(end[0].id > dl[0].id);
}

// 6. Permanent failure -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_is_not_retried() {
    let e = engine();
    let id = "sem-permanent";
    let plan = json!({
        "id": id,
        "steps": [{"id": "broken", "agentId": "system", "action": "fail",
                   "input": {"permanent": true, "message": "bad credentials"},
                   "retryPolicy": {"maxRetries": 3, "backoffMs": 10}}]
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed, "{r:?}");
    assert_eq!(attempts(&r, "broken"), 1);
    assert_eq!(step(&r, "broken")["error"], json!("bad credentials"));
    let dead = e.store().dead_letters().await.unwrap();
    assert!(
        dead.iter()
            .any(|d| d.plan_id == id && d.step_id == "broken" && d.attempts == 1),
        "{dead:?}"
    );
    let evs = events(&e, id).await;
    assert_eq!(of_kind(&evs, EventKind::StepStarted).len(), 1);
    assert!(of_kind(&evs, EventKind::StepRetrying).is_empty());
    let failed = of_kind(&evs, EventKind::StepFailed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].data["willRetry"], json!(false));
    assert_eq!(of_kind(&evs, EventKind::StepDeadLettered).len(), 1);
}

// 7. Per-attempt step timeout -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_timeout_fails_each_attempt() {
    let e = engine();
    let id = "sem-step-timeout";
    let plan = json!({
        "id": id,
        "steps": [{"id": "slow", "agentId": "system", "action": "sleep", "input": {"ms": 500},
                   "timeout": 50, "retryPolicy": {"maxRetries": 1, "backoffMs": 10}}]
    });
    let (r, took) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed, "{r:?}");
    assert_eq!(attempts(&r, "slow"), 2);
    let err = step(&r, "slow")["error"].as_str().unwrap().to_string();
    assert!(err.contains("timed out after 50 ms"), "{err}");
    // Two 50 ms attempts and a 10 ms backoff; far from the 500 ms sleep.
    assert!(ms(took) >= 110, "took {took:?}");
    assert!(ms(took) < 400, "took {took:?}");
    let evs = events(&e, id).await;
    let failed = of_kind_step(&evs, EventKind::StepFailed, "slow");
    assert_eq!(failed.len(), 2);
    for f in failed {
        assert!(f.data["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 50 ms"));
    }
    assert!(e
        .store()
        .dead_letters()
        .await
        .unwrap()
        .iter()
        .any(|d| d.plan_id == id && d.attempts == 2));
}

// 8. Whole-plan timeout -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_timeout_ends_the_plan_and_skips_the_running_step() {
    let e = engine();
    let id = "sem-plan-timeout";
    let plan = json!({
        "id": id,
        "timeout": 100,
        "steps": [sleep_step("forever", 5000), {"id": "after", "agentId": "system",
                  "action": "noop", "dependencies": ["forever"]}]
    });
    let (r, took) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::TimedOut, "{r:?}");
    assert!(!r.success);
    assert!(ms(took) >= 100, "took {took:?}");
    assert!(ms(took) < 1500, "took {took:?}");
    assert!(r.duration >= 100 && r.duration < 1500, "{}", r.duration);
    for s in ["forever", "after"] {
        assert_eq!(step(&r, s)["status"], json!("skipped"), "{s}");
        assert_eq!(step(&r, s)["success"], json!(false), "{s}");
    }
    assert_eq!(attempts(&r, "forever"), 1);
    assert_eq!(attempts(&r, "after"), 0);

    let evs = events(&e, id).await;
    assert_eq!(
        evs.last().unwrap().kind,
        EventKind::PlanTimeout,
        "{:?}",
        kinds(&evs)
    );
    assert_eq!(of_kind(&evs, EventKind::PlanTimeout).len(), 1);
    let skipped = of_kind_step(&evs, EventKind::StepSkipped, "forever");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].data["wasRunning"], json!(true));
    let timeout_ev = evs.last().unwrap();
    assert!(timeout_ev.timestamp >= r.started_at + 100);
    assert!(of_kind(&evs, EventKind::StepCompleted).is_empty());
}

// 9. Dead letter, skipped dependents, independent branch ---------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_step_skips_dependents_while_independent_branch_finishes() {
    let e = engine();
    let id = "sem-skip-branch";
    let plan = json!({
        "id": id,
        "steps": [
            {"id": "A", "agentId": "system", "action": "fail", "input": {"permanent": true}},
            {"id": "B", "agentId": "system", "action": "noop", "dependencies": ["A"]},
            {"id": "B2", "dependencies": ["B"]},
            {"id": "C", "agentId": "system", "action": "sleep", "input": {"ms": 100}},
            {"id": "D", "agentId": "system", "action": "echo", "dependencies": ["C"]}
        ]
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed, "{r:?}");
    assert!(!r.success);
    assert_eq!(step(&r, "A")["status"], json!("failed"));
    for s in ["B", "B2"] {
        assert_eq!(step(&r, s)["status"], json!("skipped"), "{s}");
        assert_eq!(attempts(&r, s), 0, "{s}");
    }
    assert_eq!(step(&r, "C")["status"], json!("succeeded"));
    assert_eq!(step(&r, "D")["status"], json!("succeeded"));
    assert_eq!(
        step(&r, "D")["data"],
        json!({"input": null, "dependencies": {"C": {"sleptMs": 100}}})
    );
    let errors = r.errors.as_ref().unwrap();
    assert!(errors.contains_key("A"), "{errors:?}");

    let evs = events(&e, id).await;
    let skip_b = of_kind_step(&evs, EventKind::StepSkipped, "B");
    assert_eq!(skip_b.len(), 1);
    assert!(
        skip_b[0].data["reason"].as_str().unwrap().contains("'A'"),
        "{:?}",
        skip_b[0].data
    );
    let skip_b2 = of_kind_step(&evs, EventKind::StepSkipped, "B2");
    assert_eq!(skip_b2.len(), 1);
    assert!(skip_b2[0].data["reason"].as_str().unwrap().contains("'B'"));
    assert!(of_kind_step(&evs, EventKind::StepStarted, "B").is_empty());
    // The plan ends only after the independent branch did.
    let d_done = of_kind_step(&evs, EventKind::StepCompleted, "D");
    assert_eq!(d_done.len(), 1);
    let end = of_kind(&evs, EventKind::PlanFailed);
    assert_eq!(end.len(), 1);
    assert!(end[0].id > d_done[0].id);
}

// 10. failFast --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_stops_the_plan_at_the_first_failure() {
    let e = engine();
    let id = "sem-fail-fast";
    let plan = json!({
        "id": id,
        "failFast": true,
        "steps": [
            {"id": "A", "agentId": "system", "action": "fail", "input": {"permanent": true}},
            sleep_step("B", 2000)
        ]
    });
    let (r, took) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed, "{r:?}");
    assert!(ms(took) < 1000, "took {took:?}");
    assert_eq!(step(&r, "A")["status"], json!("failed"));
    assert_eq!(step(&r, "B")["status"], json!("skipped"));
    assert_eq!(step(&r, "B")["success"], json!(false));
    let evs = events(&e, id).await;
    assert!(of_kind(&evs, EventKind::StepCompleted).is_empty());
    let skipped = of_kind_step(&evs, EventKind::StepSkipped, "B");
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].data["reason"]
        .as_str()
        .unwrap()
        .contains("failFast"));
}

// 11. Fallback --------------------------------------------------------------

fn failing_step(id: &str) -> Value {
    json!({"id": id, "agentId": "system", "action": "fail", "input": {"permanent": true}})
}

fn fallback_event(evs: &[Event]) -> &Event {
    let fb = of_kind(evs, EventKind::PlanFallback);
    assert_eq!(fb.len(), 1, "{:?}", kinds(evs));
    fb[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_runs_when_the_primary_fails() {
    let e = engine();
    let id = "sem-fallback";
    let plan = json!({
        "id": id,
        "steps": [failing_step("primary")],
        "fallbackPlan": {"steps": [
            {"id": "backup", "agentId": "system", "action": "echo", "input": {"strategy": "llm"}}
        ]}
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert!(r.success);
    assert!(r.fallback_used);
    assert_eq!(r.primary_status, Some(PlanStatus::Failed));
    // The primary's own outcome is kept.
    assert_eq!(step(&r, "primary")["status"], json!("failed"));
    let fb = r.fallback.as_deref().expect("fallback result");
    assert_eq!(fb.plan_id, format!("{id}/fallback"));
    assert_eq!(fb.status, PlanStatus::Succeeded);
    assert!(fb.success);
    assert!(!fb.fallback_used);
    assert_eq!(
        step(fb, "backup")["data"],
        json!({"input": {"strategy": "llm"}, "dependencies": {}})
    );
    assert!(r.finished_at >= fb.finished_at);
    assert!(r.duration >= fb.duration);

    let evs = events(&e, id).await;
    let fbe = fallback_event(&evs);
    assert_eq!(fbe.data["fallbackPlanId"], json!(format!("{id}/fallback")));
    assert_eq!(fbe.data["reason"], json!("failed"));
    let end = last_lifecycle_event(&evs);
    assert_eq!(end.kind, EventKind::PlanCompleted, "{:?}", kinds(&evs));
    assert!(end.id > fbe.id);
    assert_eq!(end.data["fallbackUsed"], json!(true));
    assert!(of_kind(&evs, EventKind::PlanFailed).is_empty());

    let child = events(&e, &format!("{id}/fallback")).await;
    assert_eq!(child.first().unwrap().kind, EventKind::PlanSubmitted);
    assert_eq!(child.first().unwrap().data["parent"], json!(id));
    assert!(child.first().unwrap().id > fbe.id);
    assert_eq!(child.last().unwrap().kind, EventKind::PlanCompleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_runs_when_the_primary_times_out() {
    let e = engine();
    let id = "sem-fallback-timeout";
    let plan = json!({
        "id": id,
        "timeout": 100,
        "steps": [sleep_step("slow", 5000)],
        "fallbackPlan": {"steps": [sleep_step("quick", 10)]}
    });
    let (r, took) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert!(r.success && r.fallback_used);
    assert_eq!(r.primary_status, Some(PlanStatus::TimedOut));
    assert_eq!(step(&r, "slow")["status"], json!("skipped"));
    let fb = r.fallback.as_deref().unwrap();
    assert_eq!(fb.plan_id, format!("{id}/fallback"));
    assert_eq!(step(fb, "quick")["data"], json!({"sleptMs": 10}));
    assert!(ms(took) >= 110, "took {took:?}");
    assert!(ms(took) < 2000, "took {took:?}");
    let evs = events(&e, id).await;
    assert_eq!(fallback_event(&evs).data["reason"], json!("timed_out"));
    assert!(of_kind(&evs, EventKind::PlanTimeout).is_empty());
    assert_eq!(evs.last().unwrap().kind, EventKind::PlanCompleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_fallback_runs_when_the_first_fallback_fails_too() {
    let e = engine();
    let id = "sem-fallback-nested";
    let plan = json!({
        "id": id,
        "steps": [failing_step("p")],
        "fallbackPlan": {
            "steps": [failing_step("f1")],
            "fallbackPlan": {"steps": [
                {"id": "f2", "agentId": "system", "action": "echo", "input": "last resort"}
            ]}
        }
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert!(r.success && r.fallback_used);
    assert_eq!(r.primary_status, Some(PlanStatus::Failed));
    let f1 = r.fallback.as_deref().unwrap();
    assert_eq!(f1.plan_id, format!("{id}/fallback"));
    assert_eq!(f1.status, PlanStatus::Succeeded);
    assert!(f1.success && f1.fallback_used);
    assert_eq!(f1.primary_status, Some(PlanStatus::Failed));
    assert_eq!(step(f1, "f1")["status"], json!("failed"));
    let f2 = f1.fallback.as_deref().unwrap();
    assert_eq!(f2.plan_id, format!("{id}/fallback/fallback"));
    assert_eq!(f2.status, PlanStatus::Succeeded);
    assert_eq!(
        step(f2, "f2")["data"],
        json!({"input": "last resort", "dependencies": {}})
    );
    let mid = events(&e, &format!("{id}/fallback")).await;
    assert_eq!(
        fallback_event(&mid).data["fallbackPlanId"],
        json!(format!("{id}/fallback/fallback"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_fallback_keeps_the_primary_status() {
    let e = engine();
    let id = "sem-fallback-fails";
    let plan = json!({
        "id": id,
        "steps": [failing_step("p")],
        "fallbackPlan": {"steps": [failing_step("f")]}
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed, "{r:?}");
    assert!(!r.success);
    assert!(r.fallback_used);
    assert_eq!(r.primary_status, Some(PlanStatus::Failed));
    let fb = r.fallback.as_deref().unwrap();
    assert_eq!(fb.status, PlanStatus::Failed);
    assert!(!fb.success);
    assert_eq!(step(fb, "f")["status"], json!("failed"));
    let evs = events(&e, id).await;
    fallback_event(&evs);
    let end = last_lifecycle_event(&evs);
    assert_eq!(end.kind, EventKind::PlanFailed, "{:?}", kinds(&evs));
    assert_eq!(end.data["fallbackUsed"], json!(true));
    assert_eq!(of_kind(&evs, EventKind::PlanFailed).len(), 1);
}

// 12. Cancellation ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_running_plan() {
    let e = engine();
    let id = "sem-cancel";
    let mut rx = e.store().subscribe();
    let plan = json!({
        "id": id,
        "steps": [sleep_step("long", 5000), {"id": "next", "agentId": "system",
                  "action": "noop", "dependencies": ["long"]}]
    });
    let start = Instant::now();
    submit(&e, &plan).await;
    next_event(&mut rx, |ev| {
        is(ev, EventKind::StepStarted, id, Some("long"))
    })
    .await;
    assert!(e.cancel(id).await.unwrap(), "an open plan is cancelled");
    let r = wait_result(&e, id).await;
    assert!(start.elapsed() < Duration::from_millis(2000));
    assert_eq!(r.status, PlanStatus::Cancelled, "{r:?}");
    assert!(!r.success);
    assert_eq!(step(&r, "long")["status"], json!("skipped"));
    assert_eq!(step(&r, "next")["status"], json!("skipped"));
    assert_eq!(
        e.store().status(id).await.unwrap(),
        Some(PlanStatus::Cancelled)
    );
    let evs = events(&e, id).await;
    assert_eq!(
        evs.last().unwrap().kind,
        EventKind::PlanCancelled,
        "{:?}",
        kinds(&evs)
    );
    assert_eq!(of_kind(&evs, EventKind::PlanCancelled).len(), 1);
    // Cancelling an ended plan changes nothing.
    assert!(!e.cancel(id).await.unwrap());
    assert_eq!(events(&e, id).await.len(), evs.len());
    assert_eq!(
        e.store().result(id).await.unwrap().unwrap().status,
        PlanStatus::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_finished_plan_returns_false() {
    let e = engine();
    let id = "sem-cancel-finished";
    let plan = json!({"id": id, "steps": [{"id": "a", "agentId": "system", "action": "noop"}]});
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded);
    assert!(!e.cancel(id).await.unwrap());
    assert_eq!(
        e.store().status(id).await.unwrap(),
        Some(PlanStatus::Succeeded)
    );
    assert!(e.cancel("sem-cancel-unknown-plan").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_plan_cancels_its_running_fallback() {
    let e = engine();
    let id = "sem-cancel-fallback";
    let child_id = format!("{id}/fallback");
    let mut rx = e.store().subscribe();
    let plan = json!({
        "id": id,
        "steps": [failing_step("p")],
        "fallbackPlan": {"steps": [sleep_step("slow_backup", 5000)]}
    });
    let start = Instant::now();
    submit(&e, &plan).await;
    next_event(&mut rx, |ev| {
        is(ev, EventKind::StepStarted, &child_id, Some("slow_backup"))
    })
    .await;
    assert!(e.cancel(id).await.unwrap());
    let r = wait_result(&e, id).await;
    let child = wait_result(&e, &child_id).await;
    assert!(start.elapsed() < Duration::from_millis(2000));
    assert_eq!(r.status, PlanStatus::Cancelled, "{r:?}");
    assert!(!r.success);
    assert!(r.fallback_used);
    assert_eq!(r.primary_status, Some(PlanStatus::Failed));
    assert_eq!(child.status, PlanStatus::Cancelled, "{child:?}");
    assert_eq!(step(&child, "slow_backup")["status"], json!("skipped"));
    let evs = events(&e, id).await;
    assert_eq!(
        last_lifecycle_event(&evs).kind,
        EventKind::PlanCancelled,
        "{:?}",
        kinds(&evs)
    );
    let cevs = events(&e, &child_id).await;
    assert_eq!(
        cevs.last().unwrap().kind,
        EventKind::PlanCancelled,
        "{:?}",
        kinds(&cevs)
    );
    assert!(!e.cancel(id).await.unwrap());
    assert!(!e.cancel(&child_id).await.unwrap());
}

// 13. Event order -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_two_step_chain_in_order() {
    let e = engine();
    let id = "sem-events-chain";
    let mut rx = e.store().subscribe();
    let plan = json!({
        "id": id,
        "steps": [
            {"id": "a", "agentId": "system", "action": "noop"},
            {"id": "b", "agentId": "system", "action": "noop", "dependencies": ["a"]}
        ]
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Succeeded);
    let evs = events(&e, id).await;
    let got: Vec<(&str, Option<&str>)> = evs
        .iter()
        .map(|ev| (ev.kind.as_str(), ev.step_id.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("plan:submitted", None),
            ("plan:started", None),
            ("step:started", Some("a")),
            ("step:completed", Some("a")),
            ("step:started", Some("b")),
            ("step:completed", Some("b")),
            ("plan:completed", None),
        ]
    );
    for w in evs.windows(2) {
        assert!(w[0].id < w[1].id, "ids increase");
        assert!(
            w[0].timestamp <= w[1].timestamp,
            "timestamps do not go back"
        );
    }
    for ev in &evs {
        assert_eq!(&*ev.plan_id, id);
        if ev.step_id.is_some() {
            assert_eq!(ev.agent_id.as_deref(), Some("system"));
            assert_eq!(ev.attempt, Some(1));
        } else {
            assert_eq!(ev.agent_id, None);
            assert_eq!(ev.attempt, None);
        }
    }
    assert_eq!(evs[0].timestamp, r.submitted_at);
    assert_eq!(evs[1].timestamp, r.started_at);
    assert_eq!(evs[6].timestamp, r.finished_at);
    assert_eq!(evs[6].data["success"], json!(true));
    assert_eq!(evs[6].data["fallbackUsed"], json!(false));
    assert!(
        evs[3].duration.is_some(),
        "step:completed carries its duration"
    );

    // The live stream carries the same events, in the same order.
    let mut live = Vec::new();
    while live.len() < evs.len() {
        let ev = next_event(&mut rx, |ev| &*ev.plan_id == id).await;
        live.push(ev);
    }
    let live: Vec<Event> = live.iter().map(|e| (**e).clone()).collect();
    assert_eq!(live, evs);
    // The event log after a given id is the tail.
    let tail = e.store().events(id, evs[3].id).await.unwrap();
    assert_eq!(tail, evs[4..]);
}

// 14. Exactly once ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_dependents_start_exactly_once() {
    let e = engine();
    let ids: Vec<String> = (0..40).map(|i| format!("sem-diamond-{i}")).collect();
    let mut waits = Vec::new();
    for id in &ids {
        let plan = json!({
            "id": id,
            "steps": [
                {"id": "A", "agentId": "system", "action": "noop"},
                {"id": "B", "agentId": "system", "action": "echo", "dependencies": ["A"]},
                {"id": "C", "agentId": "system", "action": "noop", "dependencies": ["A"]},
                {"id": "D", "agentId": "system", "action": "echo", "dependencies": ["B", "C"]},
                {"id": "J", "dependencies": ["B", "C"]}
            ]
        });
        submit(&e, &plan).await;
        waits.push(wait_result(&e, id));
    }
    for (r, id) in futures::future::join_all(waits).await.iter().zip(&ids) {
        assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
        let evs = events(&e, id).await;
        for s in ["A", "B", "C", "D", "J"] {
            assert_eq!(
                of_kind_step(&evs, EventKind::StepStarted, s).len(),
                1,
                "{id} {s}"
            );
            assert_eq!(
                of_kind_step(&evs, EventKind::StepCompleted, s).len(),
                1,
                "{id} {s}"
            );
            assert_eq!(attempts(r, s), 1);
        }
        let d_start = of_kind_step(&evs, EventKind::StepStarted, "D")[0].id;
        for dep in ["B", "C"] {
            assert!(of_kind_step(&evs, EventKind::StepCompleted, dep)[0].id < d_start);
        }
        assert_eq!(
            step(r, "D")["data"]["dependencies"],
            json!({"B": {"input": null, "dependencies": {"A": null}}, "C": null})
        );
        assert_eq!(of_kind(&evs, EventKind::PlanCompleted).len(), 1);
    }
}

// 15. Result shape -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_object_has_the_documented_shape() {
    let e = engine();
    let plan = json!({
        "id": "sem-shape-ok",
        "steps": [{"id": "a", "agentId": "system", "action": "sleep", "input": {"ms": 20}}]
    });
    let (r, _) = run(&e, &plan).await;
    let v = serde_json::to_value(&r).unwrap();
    let obj = v.as_object().unwrap();
    for k in [
        "planId",
        "success",
        "duration",
        "results",
        "status",
        "submittedAt",
        "startedAt",
        "finishedAt",
        "fallbackUsed",
    ] {
        assert!(obj.contains_key(k), "missing {k} in {v}");
    }
    assert!(!obj.contains_key("errors"), "errors absent on success: {v}");
    assert!(!obj.contains_key("fallback") && !obj.contains_key("primaryStatus"));
    assert!(!obj.contains_key("rejection"));
    assert_eq!(v["planId"], json!("sem-shape-ok"));
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["status"], json!("succeeded"));
    assert_eq!(v["fallbackUsed"], json!(false));
    let (sub, start, fin) = (r.submitted_at, r.started_at, r.finished_at);
    assert!(sub <= start && start <= fin, "{sub} {start} {fin}");
    assert_eq!(r.duration, fin - start);
    assert!(r.duration >= 20);
    let a = &v["results"]["a"];
    for k in ["success", "data", "attempts", "duration", "status"] {
        assert!(a.get(k).is_some(), "missing {k} in {a}");
    }
    // A step that succeeded carries no error (absent, as in the seed).
    assert!(a.get("error").is_none_or(Value::is_null), "{a}");
    assert_eq!(a["success"], json!(true));
    assert_eq!(a["data"], json!({"sleptMs": 20}));
    assert_eq!(a["attempts"], json!(1));
    assert!(a["duration"].as_u64().unwrap() >= 20);
    assert!(a["duration"].as_u64().unwrap() <= r.duration);
    // The stored result and the waited-for result are the same.
    assert_eq!(
        e.store().result("sem-shape-ok").await.unwrap().as_deref(),
        Some(&r)
    );

    let bad = json!({
        "id": "sem-shape-failed",
        "steps": [failing_step("x"), {"id": "y", "agentId": "system", "action": "noop",
                  "dependencies": ["x"]}]
    });
    let (r, _) = run(&e, &bad).await;
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["status"], json!("failed"));
    assert!(v["errors"]["x"].is_string(), "{v}");
    let x = &v["results"]["x"];
    assert_eq!(x["success"], json!(false));
    assert!(x["error"].is_string());
    assert_eq!(x["data"], Value::Null);
    assert_eq!(x["attempts"], json!(1));
    let y = &v["results"]["y"];
    assert_eq!(y["success"], json!(false));
    assert_eq!(y["status"], json!("skipped"));
    assert_eq!(y["attempts"], json!(0));
    assert_eq!(y["duration"], json!(0));
}

// 16. Invalid plans -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plan_is_rejected_and_the_rejection_recorded() {
    let e = engine();
    let id = "sem-invalid-cycle";
    let plan = json!({
        "id": id,
        "steps": [
            {"id": "a", "agentId": "system", "action": "noop", "dependencies": ["c"]},
            {"id": "b", "agentId": "system", "action": "noop", "dependencies": ["a"]},
            {"id": "c", "agentId": "system", "action": "noop", "dependencies": ["b"]}
        ]
    });
    let errors = match e.run_text(&plan.to_string()).await {
        Err(RunError::Invalid(errors)) => errors,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(!errors.0.is_empty());
    let text = errors.to_string();
    assert!(text.contains("cycle"), "{text}");
    assert!(errors.0.iter().all(|e| !e.path.is_empty()), "{errors:?}");

    assert_eq!(
        e.store().status(id).await.unwrap(),
        Some(PlanStatus::Rejected)
    );
    let r = e
        .store()
        .result(id)
        .await
        .unwrap()
        .expect("a rejection result");
    assert_eq!(r.status, PlanStatus::Rejected);
    assert!(!r.success);
    assert_eq!(r.rejection.as_ref(), Some(&errors));
    // Waiting on a rejected plan returns at once.
    assert_eq!(wait_result(&e, id).await.status, PlanStatus::Rejected);
    let evs = events(&e, id).await;
    assert_eq!(kinds(&evs), ["plan:submitted", "plan:rejected"]);

    // Unknown agent and action: each named with its path.
    let plan = json!({
        "id": "sem-invalid-agent",
        "steps": [
            {"id": "a", "agentId": "nobody", "action": "noop"},
            {"id": "b", "agentId": "system", "action": "dance"}
        ]
    });
    let errors = match e.run_text(&plan.to_string()).await {
        Err(RunError::Invalid(errors)) => errors,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(errors.0.len() >= 2, "{errors:?}");
    let text = errors.to_string();
    assert!(text.contains("nobody") && text.contains("dance"), "{text}");
    assert!(
        text.contains("steps[0]") && text.contains("steps[1]"),
        "{text}"
    );
    assert_eq!(
        e.store().status("sem-invalid-agent").await.unwrap(),
        Some(PlanStatus::Rejected)
    );

    // A sequential plan can only depend on steps listed before.
    let plan = json!({
        "id": "sem-invalid-sequential",
        "parallel": false,
        "steps": [
            {"id": "a", "agentId": "system", "action": "noop", "dependencies": ["b"]},
            {"id": "b", "agentId": "system", "action": "noop"}
        ]
    });
    let errors = match e.run_text(&plan.to_string()).await {
        Err(RunError::Invalid(errors)) => errors,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(errors.to_string().contains("steps[0]"), "{errors}");

    // Malformed JSON without a usable id: recorded under a generated id.
    let sub = e.submit_text("{\"steps\": [").await.unwrap();
    let Submission::Rejected { id: gen, errors } = sub else {
        panic!("expected a rejection, got {sub:?}")
    };
    assert!(!errors.0.is_empty());
    assert_eq!(
        e.store().status(&gen).await.unwrap(),
        Some(PlanStatus::Rejected)
    );
    assert!(e
        .store()
        .result(&gen)
        .await
        .unwrap()
        .unwrap()
        .rejection
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plan_reusing_an_existing_id_does_not_touch_that_plan() {
    let e = engine();
    let id = "sem-invalid-reuse";
    let good = json!({"id": id, "steps": [{"id": "a", "agentId": "system", "action": "noop"}]});
    let (r, _) = run(&e, &good).await;
    assert_eq!(r.status, PlanStatus::Succeeded);
    let bad = json!({"id": id, "steps": [{"id": "a", "agentId": "nobody", "action": "x"}]});
    let sub = e.submit_text(&bad.to_string()).await.unwrap();
    let Submission::Rejected { id: rid, .. } = sub else {
        panic!("expected a rejection, got {sub:?}")
    };
    assert_ne!(rid, id);
    assert_eq!(
        e.store().status(&rid).await.unwrap(),
        Some(PlanStatus::Rejected)
    );
    assert_eq!(
        e.store().status(id).await.unwrap(),
        Some(PlanStatus::Succeeded)
    );
    assert_eq!(e.store().result(id).await.unwrap().as_deref(), Some(&r));
}

// 17. Many plans at once ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_plans_concurrently_all_succeed() {
    const PLANS: usize = 500;
    let e = engine();
    let texts: Vec<String> = (0..PLANS)
        .map(|i| {
            let steps: Vec<Value> = (0..5)
                .map(|s| {
                    let deps: Vec<String> = if s == 0 {
                        vec![]
                    } else {
                        vec![format!("s{}", s - 1)]
                    };
                    json!({"id": format!("s{s}"), "agentId": "system", "action": "noop",
                           "dependencies": deps})
                })
                .collect();
            json!({"id": format!("sem-many-{i}"), "steps": steps}).to_string()
        })
        .collect();
    let start = Instant::now();
    let results = tokio::time::timeout(
        PATIENCE,
        futures::future::join_all(texts.iter().map(|t| e.run_text(t))),
    )
    .await
    .expect("all plans end in time");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(results.len(), PLANS);
    for (i, r) in results.into_iter().enumerate() {
        let r = r.expect("valid plan");
        assert_eq!(r.plan_id, format!("sem-many-{i}"));
        assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
        assert_eq!(r.results.len(), 5);
        for s in 0..5 {
            assert_eq!(attempts(&r, &format!("s{s}")), 1);
        }
    }
    // Spot-check exactly-once on a few of them.
    for i in [0, PLANS / 2, PLANS - 1] {
        let evs = events(&e, &format!("sem-many-{i}")).await;
        assert_eq!(of_kind(&evs, EventKind::StepStarted).len(), 5);
        assert_eq!(of_kind(&evs, EventKind::StepCompleted).len(), 5);
    }
}

// 18. Duplicate submissions ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_plan_id_runs_once() {
    let e = engine();
    let id = "sem-duplicate";
    let plan = json!({"id": id, "steps": [sleep_step("a", 50), {"id": "b", "agentId": "system",
                      "action": "noop", "dependencies": ["a"]}]});
    submit(&e, &plan).await;
    match e.submit_text(&plan.to_string()).await.unwrap() {
        Submission::Accepted {
            id: dup,
            duplicate: true,
        } => assert_eq!(dup, id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let r = wait_result(&e, id).await;
    assert_eq!(r.status, PlanStatus::Succeeded);
    // Resubmitting after the end is still a duplicate and changes nothing.
    let again = e.run_text(&plan.to_string()).await.unwrap();
    assert_eq!(*again, r);
    let evs = events(&e, id).await;
    assert_eq!(of_kind(&evs, EventKind::PlanSubmitted).len(), 1);
    assert_eq!(of_kind(&evs, EventKind::PlanStarted).len(), 1);
    assert_eq!(of_kind(&evs, EventKind::PlanCompleted).len(), 1);
    let mut starts: HashMap<&str, usize> = HashMap::new();
    for ev in of_kind(&evs, EventKind::StepStarted) {
        *starts.entry(ev.step_id.as_deref().unwrap()).or_default() += 1;
    }
    assert_eq!(starts, HashMap::from([("a", 1), ("b", 1)]));
}

// Bugs found ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_error_is_recorded_before_the_failure_and_the_plan_end() {
    let e = engine();
    let id = "sem-agent-error-order";
    let mut rx = e.store().subscribe();
    let plan = json!({
        "id": id,
        "steps": [{"id": "doomed", "agentId": "system", "action": "fail",
                   "input": {"times": 5, "message": "nope"},
                   "retryPolicy": {"maxRetries": 1, "backoffMs": 10}}]
    });
    let (r, _) = run(&e, &plan).await;
    assert_eq!(r.status, PlanStatus::Failed);
    // Both attempts' agent:error events are recorded sooner or later.
    for attempt in 1..=2 {
        next_event(&mut rx, |ev| {
            is(ev, EventKind::AgentError, id, Some("doomed")) && ev.attempt == Some(attempt)
        })
        .await;
    }
    let evs = events(&e, id).await;
    for attempt in 1..=2 {
        let of = |kind| {
            evs.iter()
                .find(|ev| ev.kind == kind && ev.attempt == Some(attempt))
                .unwrap_or_else(|| panic!("no {kind:?} for attempt {attempt}"))
                .id
        };
        assert!(
            of(EventKind::AgentError) < of(EventKind::StepFailed),
            "agent:error of attempt {attempt} after its step:failed: {:?}",
            kinds(&evs)
        );
    }
    assert_eq!(
        evs.last().unwrap().kind,
        EventKind::PlanFailed,
        "the terminal event is not the plan's last: {:?}",
        kinds(&evs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_whose_id_is_taken_still_ends_the_plan() {
    let e = engine();
    let id = "sem-fallback-clash";
    let taken = format!("{id}/fallback");
    // An unrelated plan already holds the id the fallback would get (or the
    // engine refuses that id; either way the plan below must end).
    let other = json!({"id": taken, "steps": [{"id": "x", "agentId": "system", "action": "noop"}]});
    let other_result = match e.submit_text(&other.to_string()).await.unwrap() {
        Submission::Accepted { id, .. } => Some(wait_result(&e, &id).await),
        Submission::Rejected { .. } => None,
    };
    let plan = json!({
        "id": id,
        "steps": [failing_step("p")],
        "fallbackPlan": {"steps": [
            {"id": "backup", "agentId": "system", "action": "echo", "input": 1}
        ]}
    });
    submit(&e, &plan).await;
    let r = tokio::time::timeout(Duration::from_secs(5), e.store().wait_result(id))
        .await
        .expect("the plan ends (it waits forever on a fallback that never runs)")
        .unwrap();
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    assert!(r.fallback_used);
    let fb = r.fallback.as_deref().unwrap();
    assert!(fb.results.contains_key("backup"), "{fb:?}");
    if let Some(other_result) = other_result {
        assert_ne!(
            fb.plan_id, taken,
            "the fallback ran under another plan's id"
        );
        assert_eq!(
            e.store().result(&taken).await.unwrap().as_deref(),
            Some(&other_result)
        );
    }
}

/// Set in the child process of `long_join_chain_does_not_overflow_the_stack`.
const CHILD_ENV: &str = "BATON_SEMANTICS_STACK_CHILD";

/// A stack overflow aborts the whole process, so the plan runs in a child
/// process (this test binary, filtered to this test) and the parent checks
/// how it exited.
#[test]
fn long_join_chain_does_not_overflow_the_stack() {
    const NAME: &str = "long_join_chain_does_not_overflow_the_stack";
    if std::env::var_os(CHILD_ENV).is_some() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(2 << 20) // tokio's default, made explicit
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = engine();
            let n = EngineConfig::default().limits.max_steps;
            for parallel in [true, false] {
                // An agent step first: the joins then complete inside the
                // worker's `complete`, on a tokio worker thread.
                let mut steps = vec![json!({"id": "s0", "agentId": "system", "action": "noop"})];
                steps.extend((1..n).map(|s| {
                    json!({"id": format!("s{s}"),
                    "dependencies": [format!("s{}", s - 1)]})
                }));
                let id = format!("sem-join-chain-{parallel}");
                let plan = json!({"id": id, "parallel": parallel, "steps": steps});
                let (r, _) = run(&e, &plan).await;
                assert_eq!(r.status, PlanStatus::Succeeded);
                assert_eq!(r.results.len(), n);
            }
        });
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--include-ignored", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child process failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
