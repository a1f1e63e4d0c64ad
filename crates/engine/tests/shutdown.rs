//! Graceful shutdown of the embedded engine: a step in flight finishes,
//! claimed-but-unstarted jobs go back to the store without costing an
//! attempt, and a new engine on the same store finishes the plan.

use std::time::Duration;

use baton_agents::Registry;
use baton_engine::{Engine, EngineConfig, MemoryStore};
use baton_planner::Submission;
use baton_store::{EventKind, PlanStatus, Store};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_steps_and_hands_back_the_rest() {
    let store = MemoryStore::new();
    let mut live = store.subscribe();
    // One slot: the worker claims a batch but can run one step at a time.
    let cfg = EngineConfig {
        workers: 1,
        concurrency: 1,
        ..EngineConfig::default()
    };
    let first = Engine::start(store.clone(), Registry::with_builtins(), cfg.clone());
    let plan = json!({
        "id": "shutdown-handback",
        "steps": [
            {"id": "a", "agentId": "system", "action": "sleep", "input": {"ms": 300}},
            {"id": "b", "agentId": "system", "action": "sleep", "input": {"ms": 10}},
            {"id": "c", "agentId": "system", "action": "sleep", "input": {"ms": 10}}
        ]
    });
    let id = match first.submit_text(&plan.to_string()).await.unwrap() {
        Submission::Accepted { id, .. } => id,
        other => panic!("{other:?}"),
    };
    // Wait until the three steps are claimed (one batch) and one runs.
    let mut started = 0;
    while started < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .expect("steps start")
            .unwrap();
        if e.kind == EventKind::StepStarted && *e.plan_id == *id {
            started += 1;
        }
    }
    first.shutdown().await;

    // The running step finished; the other two were handed back unstarted.
    let evs = store.events(&id, 0).await.unwrap();
    let completed: Vec<_> = evs
        .iter()
        .filter(|e| e.kind == EventKind::StepCompleted)
        .filter_map(|e| e.step_id.as_deref().map(str::to_string))
        .collect();
    assert_eq!(
        completed.len(),
        1,
        "exactly the running step finished: {evs:?}"
    );
    assert_eq!(store.status(&id).await.unwrap(), Some(PlanStatus::Running));

    // A new engine on the same store takes the handed-back jobs.
    let second = Engine::start(store.clone(), Registry::with_builtins(), cfg);
    let r = tokio::time::timeout(Duration::from_secs(5), store.wait_result(&id))
        .await
        .expect("the plan ends")
        .unwrap();
    assert_eq!(r.status, PlanStatus::Succeeded, "{r:?}");
    for s in ["a", "b", "c"] {
        assert_eq!(
            r.results[s].attempts, 1,
            "a handed-back job does not cost an attempt: {s}"
        );
    }
    second.shutdown().await;
}
