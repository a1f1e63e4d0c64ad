//! Rules: an agent's insight submits the templates that list it in their
//! `triggers`, with the insight's data as parameters (the seed's
//! "struggling detected, notify the tutor").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_agents::Registry;
use baton_engine::{Engine, EngineConfig, MemoryStore};
use baton_planner::templates::TemplateSet;
use baton_store::{PlanStatus, Store};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn struggling_detected_submits_the_help_template() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates");
    let templates = TemplateSet::load_dir(&dir).expect("the example templates load");
    let cfg = EngineConfig {
        templates: Some(Arc::new(templates)),
        ..EngineConfig::default()
    };
    let engine = Engine::start(MemoryStore::new(), Registry::with_builtins(), cfg);
    let wrong = |id: &str, dep: &str| {
        json!({"id": id, "agentId": "learning", "action": "process_interaction",
               "input": {"learnerId": "rules-l1", "skill": "fractions", "correct": false},
               "dependencies": [dep]})
    };
    let plan = json!({
        "id": "rules-session",
        "parallel": false,
        "steps": [
            {"id": "init", "agentId": "learning", "action": "initialize_session",
             "input": {"learnerId": "rules-l1", "skills": ["fractions"]}},
            wrong("w1", "init"), wrong("w2", "w1"), wrong("w3", "w2"), wrong("w4", "w3")
        ]
    });
    let r = engine.run_text(&plan.to_string()).await.unwrap();
    assert_eq!(r.status, PlanStatus::Succeeded);

    // The third wrong answer in a row reported struggling_detected: the
    // template ran once, for that attempt, with the insight's data.
    let triggered = "struggling_help.rules-session.w3.1";
    let help = tokio::time::timeout(
        Duration::from_secs(5),
        engine.store().wait_result(triggered),
    )
    .await
    .expect("the triggered plan ends")
    .expect("the rule submitted the template");
    assert_eq!(help.status, PlanStatus::Succeeded, "{help:?}");
    assert_eq!(
        help.results["notify"].data["input"]["message"],
        "rules-l1 needs help with fractions"
    );
    assert_eq!(help.results["next_exercise"].data["skill"], "fractions");
    // No other attempt triggered it (the streak hit 3 once).
    for step in ["w1", "w2", "w4"] {
        let other = format!("struggling_help.rules-session.{step}.1");
        assert_eq!(
            engine.store().status(&other).await.unwrap(),
            None,
            "{other}"
        );
    }
    engine.shutdown().await;
}
