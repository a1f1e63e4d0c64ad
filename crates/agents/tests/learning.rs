//! The `learning` agent: Bayesian Knowledge Tracing checked against values
//! computed by hand, the evidence weighting of hints and slow answers,
//! insights, recommendations, input checks, and optimistic state updates.

use std::sync::{Arc, Mutex};

use baton_agents::learning::{self, evidence_weight, posterior, update, BKT};
use baton_agents::{
    Agent, AgentCall, AgentError, Dependencies, EventSink, LocalState, Registry, StateStore,
};
use baton_plan::Catalog;
use futures::future::BoxFuture;
use serde_json::{json, Value};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn bkt_posterior_and_update_match_hand_computed_values() {
    // P(L)=0.3, S=0.1, G=0.2, T=0.15.
    // Correct: 0.3*0.9 / (0.3*0.9 + 0.7*0.2) = 0.27/0.41.
    assert!(close(posterior(0.3, true, &BKT), 0.27 / 0.41));
    // Wrong: 0.3*0.1 / (0.3*0.1 + 0.7*0.8) = 0.03/0.59.
    assert!(close(posterior(0.3, false, &BKT), 0.03 / 0.59));
    // Then learning: post + (1 - post) * 0.15.
    let correct = 0.27 / 0.41;
    assert!(close(
        update(0.3, true, 1.0, &BKT),
        correct + (1.0 - correct) * 0.15
    ));
    assert!(close(update(0.3, true, 1.0, &BKT), 0.709_756_097_560_975_6));
    assert!(close(
        update(0.3, false, 1.0, &BKT),
        0.193_220_338_983_050_85
    ));
}

#[test]
fn hints_and_slow_answers_weaken_the_evidence() {
    assert!(close(evidence_weight(0, None), 1.0));
    assert!(close(evidence_weight(1, Some(1_000)), 0.5));
    assert!(close(evidence_weight(3, None), 0.25));
    assert!(close(evidence_weight(0, Some(60_000)), 0.5));
    assert!(close(evidence_weight(1, Some(60_000)), 0.25));
    // Half weight: halfway from the prior to the full posterior, then
    // learning: less than a clean answer, but still progress.
    let partial = 0.5 * (0.27 / 0.41) + 0.5 * 0.3;
    assert!(close(
        update(0.3, true, 0.5, &BKT),
        partial + (1.0 - partial) * 0.15
    ));
    assert!(update(0.3, true, 0.5, &BKT) < update(0.3, true, 1.0, &BKT));
    // From any level, a hinted correct answer never lowers mastery.
    for p in [0.05, 0.3, 0.7, 0.95] {
        assert!(update(p, true, 0.25, &BKT) >= p, "{p}");
    }
    // A wrong answer is a wrong answer, hints or not.
    assert!(close(
        update(0.3, false, 0.25, &BKT),
        update(0.3, false, 1.0, &BKT)
    ));
}

#[derive(Default)]
struct Insights(Mutex<Vec<(String, Value)>>);

impl EventSink for Insights {
    fn insight(&self, kind: &str, data: Value) {
        self.0.lock().unwrap().push((kind.to_string(), data));
    }
}

async fn call(
    state: &dyn StateStore,
    events: &Insights,
    action: &str,
    input: Value,
) -> Result<Value, AgentError> {
    learning::LearningAgent
        .call(AgentCall {
            plan_id: "p",
            step_id: "s",
            action,
            input: &input,
            dependencies: Dependencies(&[]),
            attempt: 1,
            events,
            state,
        })
        .await
}

#[tokio::test]
async fn a_session_tracks_mastery_and_emits_insights() {
    let state = LocalState::default();
    let ev = Insights::default();
    let init = call(
        &state,
        &ev,
        "initialize_session",
        json!({"learnerId": "l1", "subject": "mathematics", "gradeLevel": 5,
               "skills": ["fractions", "decimals"]}),
    )
    .await
    .unwrap();
    assert_eq!(init["skills"], json!({"decimals": 0.3, "fractions": 0.3}));
    assert_eq!(init["subject"], "mathematics");

    let first = call(
        &state,
        &ev,
        "process_interaction",
        json!({"learnerId": "l1", "skill": "fractions", "correct": true}),
    )
    .await
    .unwrap();
    assert!(close(first["previousMastery"].as_f64().unwrap(), 0.3));
    assert!(close(
        first["mastery"].as_f64().unwrap(),
        update(0.3, true, 1.0, &BKT)
    ));

    // Keep answering right until mastery is reached: one insight, once.
    let mut p = first["mastery"].as_f64().unwrap();
    for _ in 0..10 {
        let r = call(
            &state,
            &ev,
            "process_interaction",
            json!({"learnerId": "l1", "skill": "fractions", "correct": true}),
        )
        .await
        .unwrap();
        p = update(p, true, 1.0, &BKT);
        assert!(close(r["mastery"].as_f64().unwrap(), p));
    }
    let mastered: Vec<_> =
        ev.0.lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == "mastery_reached")
            .cloned()
            .collect();
    assert_eq!(mastered.len(), 1, "{mastered:?}");
    assert_eq!(mastered[0].1["skill"], "fractions");

    // Three wrong answers in a row on decimals: struggling, once.
    for _ in 0..4 {
        call(
            &state,
            &ev,
            "process_interaction",
            json!({"learnerId": "l1", "skill": "decimals", "correct": false, "hintsUsed": 2}),
        )
        .await
        .unwrap();
    }
    let struggling: Vec<_> =
        ev.0.lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == "struggling_detected")
            .cloned()
            .collect();
    assert_eq!(struggling.len(), 1, "{struggling:?}");
    assert_eq!(struggling[0].1["wrongInARow"], 3);

    // The weakest open skill comes next, easy.
    let rec = call(&state, &ev, "recommend", json!({"learnerId": "l1"}))
        .await
        .unwrap();
    assert_eq!(rec["skill"], "decimals");
    assert_eq!(rec["difficulty"], "easy");

    let a = call(&state, &ev, "analyze", json!({"learnerId": "l1"}))
        .await
        .unwrap();
    assert_eq!(a["interactions"], 15);
    assert_eq!(a["strongest"], "fractions");
    assert_eq!(a["weakest"], "decimals");
    assert_eq!(a["mastered"], json!(["fractions"]));
    assert_eq!(a["struggling"], json!(["decimals"]));

    // A new session keeps the model.
    let again = call(
        &state,
        &ev,
        "initialize_session",
        json!({"learnerId": "l1", "skills": ["fractions"]}),
    )
    .await
    .unwrap();
    assert!(again["skills"]["fractions"].as_f64().unwrap() >= learning::MASTERED);
}

#[tokio::test]
async fn a_learner_without_a_session_is_a_permanent_error() {
    let e = call(
        &LocalState::default(),
        &Insights::default(),
        "recommend",
        json!({"learnerId": "nobody"}),
    )
    .await
    .unwrap_err();
    assert!(!e.retryable);
    assert!(
        e.message.contains("learner 'nobody' has no session"),
        "{e:?}"
    );
}

#[test]
fn plans_with_bad_learning_input_are_rejected() {
    let r = Registry::with_builtins();
    assert!(r
        .check("learning", "recommend", &json!({"learnerId": "l"}))
        .is_ok());
    for (action, input, why) in [
        ("recommend", json!({}), "`learnerId` is required"),
        ("recommend", json!({"learnerId": 3}), "non-empty string"),
        (
            "process_interaction",
            json!({"learnerId": "l", "skill": "x"}),
            "`correct` must be true or false",
        ),
        (
            "process_interaction",
            json!({"learnerId": "l", "correct": true}),
            "`skill` must be a non-empty string",
        ),
        (
            "process_interaction",
            json!({"learnerId": "l", "skill": "x", "correct": true, "hintsUsed": -1}),
            "`hintsUsed` must be a non-negative integer",
        ),
        (
            "initialize_session",
            json!({"learnerId": "l", "skills": "fractions"}),
            "`skills` must be a list",
        ),
    ] {
        match r.check("learning", action, &input) {
            Err(baton_plan::ActionProblem::BadInput(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{action} {input}: {other:?}"),
        }
    }
}

/// A state store that loses the first `n` saves to a concurrent writer.
struct Contended {
    inner: LocalState,
    lose: Mutex<usize>,
}

impl StateStore for Contended {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(Value, u64)>, String>> {
        self.inner.load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        expected: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, String>> {
        let mut lose = self.lose.lock().unwrap();
        if *lose > 0 {
            *lose -= 1;
            return Box::pin(std::future::ready(Ok(None)));
        }
        drop(lose);
        self.inner.save(key, value, expected, ttl_ms)
    }
}

#[tokio::test]
async fn lost_races_are_retried_then_reported_retryable() {
    let state = Arc::new(Contended {
        inner: LocalState::default(),
        lose: Mutex::new(3),
    });
    let ev = Insights::default();
    // Three lost saves, then it goes through.
    call(
        &*state,
        &ev,
        "initialize_session",
        json!({"learnerId": "l", "skills": ["x"]}),
    )
    .await
    .unwrap();
    *state.lose.lock().unwrap() = 100;
    let e = call(
        &*state,
        &ev,
        "process_interaction",
        json!({"learnerId": "l", "skill": "x", "correct": true}),
    )
    .await
    .unwrap_err();
    assert!(
        e.retryable && e.message.contains("concurrent updates"),
        "{e:?}"
    );
}
