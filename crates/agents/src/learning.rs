//! The `learning` agent: an adaptive-learning model per learner, kept in the
//! store so every worker sees the same learner.
//!
//! The model is Bayesian Knowledge Tracing (Corbett & Anderson, 1995), one
//! mastery probability per skill, with the parameters of [`BKT`]:
//!
//! - after an answer, the posterior that the skill is known is
//!   `P(L)(1-S) / (P(L)(1-S) + (1-P(L))G)` when correct and
//!   `P(L)S / (P(L)S + (1-P(L))(1-G))` when wrong;
//! - then learning may happen: `P(L') = post + (1 - post) T`.
//!
//! A correct answer that needed hints or came slowly is weaker evidence: it
//! moves the estimate only part of the way, `w·post(correct) + (1-w)·P(L)`,
//! with `w = 1/(1 + hints)`, halved when the answer took longer than
//! [`SLOW_ANSWER_MS`]. Insights: `mastery_reached` when a skill's mastery
//! first reaches [`MASTERED`]; `struggling_detected` when a learner gets a
//! skill wrong [`STRUGGLING_STREAK`] times in a row.
//!
//! Actions (every input names its `learnerId`):
//! - `initialize_session` `{learnerId, subject?, gradeLevel?, skills?}`;
//! - `process_interaction` `{learnerId, skill, correct, responseTimeMs?, hintsUsed?}`;
//! - `recommend` `{learnerId}`: the next skill and difficulty;
//! - `analyze` `{learnerId}`: the learner's model in full.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::state::{self, learner_id};
use crate::{Agent, AgentCall, AgentError};

/// BKT parameters: prior, learning (transit), slip and guess probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BktParams {
    pub p_init: f64,
    pub p_transit: f64,
    pub p_slip: f64,
    pub p_guess: f64,
}

/// The parameters the agent uses (common defaults from the BKT literature).
pub const BKT: BktParams = BktParams {
    p_init: 0.3,
    p_transit: 0.15,
    p_slip: 0.1,
    p_guess: 0.2,
};

/// Mastery at which a skill counts as mastered.
pub const MASTERED: f64 = 0.95;
/// Wrong answers in a row that signal a struggling learner.
pub const STRUGGLING_STREAK: u32 = 3;
/// Answers slower than this count as weaker evidence.
pub const SLOW_ANSWER_MS: u64 = 30_000;
/// How long a learner's model lives after its last change.
pub const STATE_TTL_MS: u64 = 24 * 3_600_000;

/// P(known | answer) before learning.
pub fn posterior(p: f64, correct: bool, k: &BktParams) -> f64 {
    if correct {
        p * (1.0 - k.p_slip) / (p * (1.0 - k.p_slip) + (1.0 - p) * k.p_guess)
    } else {
        p * k.p_slip / (p * k.p_slip + (1.0 - p) * (1.0 - k.p_guess))
    }
}

/// Mastery after one answer: evidence (a correct answer counts `weight`
/// in [0, 1] of a full observation), then the chance to learn.
pub fn update(p: f64, correct: bool, weight: f64, k: &BktParams) -> f64 {
    let post = if correct {
        let w = weight.clamp(0.0, 1.0);
        w * posterior(p, true, k) + (1.0 - w) * p
    } else {
        posterior(p, false, k)
    };
    post + (1.0 - post) * k.p_transit
}

/// Evidence weight of a correct answer given hints and response time.
pub fn evidence_weight(hints_used: u64, response_time_ms: Option<u64>) -> f64 {
    let w = 1.0 / (1.0 + hints_used as f64);
    if response_time_ms.is_some_and(|t| t > SLOW_ANSWER_MS) {
        w / 2.0
    } else {
        w
    }
}

/// A learner's model as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Learner {
    learner_id: String,
    subject: Option<String>,
    grade_level: Option<Value>,
    skills: std::collections::BTreeMap<String, Skill>,
    interactions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Skill {
    mastery: f64,
    attempts: u64,
    correct: u64,
    streak_incorrect: u32,
}

impl Skill {
    fn new() -> Skill {
        Skill {
            mastery: BKT.p_init,
            attempts: 0,
            correct: 0,
            streak_incorrect: 0,
        }
    }
}

pub struct LearningAgent;

fn state_key(learner: &str) -> String {
    format!("learning:learner:{learner}")
}

fn optional_u64(input: &Value, field: &str) -> Result<Option<u64>, String> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{field}` must be a non-negative integer, got {v}")),
    }
}

impl Agent for LearningAgent {
    fn id(&self) -> &str {
        "learning"
    }

    fn actions(&self) -> Vec<&str> {
        vec![
            "initialize_session",
            "process_interaction",
            "recommend",
            "analyze",
        ]
    }

    fn check_input(&self, action: &str, input: &Value) -> Result<(), String> {
        learner_id(input)?;
        match action {
            "initialize_session" => match input.get("skills") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::Array(a))
                    if a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())) =>
                {
                    Ok(())
                }
                Some(other) => Err(format!(
                    "`skills` must be a list of skill names, got {other}"
                )),
            },
            "process_interaction" => {
                if input
                    .get("skill")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err("`skill` must be a non-empty string".into());
                }
                if !input.get("correct").is_some_and(Value::is_boolean) {
                    return Err("`correct` must be true or false".into());
                }
                optional_u64(input, "responseTimeMs")?;
                optional_u64(input, "hintsUsed")?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn call<'a>(&'a self, call: AgentCall<'a>) -> BoxFuture<'a, Result<Value, AgentError>> {
        Box::pin(async move {
            self.check_input(call.action, call.input)
                .map_err(AgentError::permanent)?;
            let learner = learner_id(call.input)
                .map_err(AgentError::permanent)?
                .to_string();
            match call.action {
                "initialize_session" => self.initialize(&call, &learner).await,
                "process_interaction" => self.interact(&call, &learner).await,
                "recommend" => Ok(recommend(&self.load(&call, &learner).await?)),
                "analyze" => Ok(analyze(&self.load(&call, &learner).await?)),
                other => Err(AgentError::permanent(format!(
                    "learning agent has no action '{other}'"
                ))),
            }
        })
    }
}

impl LearningAgent {
    /// The learner's model; a learner without a session is a permanent error.
    async fn load(&self, call: &AgentCall<'_>, learner: &str) -> Result<Learner, AgentError> {
        state::load(call.state, &state_key(learner))
            .await?
            .ok_or_else(|| no_session(learner))
    }

    /// Changes the learner's model in the store (read, change,
    /// save-if-unchanged); `create` starts a model for a new learner.
    async fn modify<T>(
        &self,
        call: &AgentCall<'_>,
        learner: &str,
        create: bool,
        mut change: impl FnMut(&mut Learner) -> T,
    ) -> Result<(Learner, T), AgentError> {
        state::update(
            call.state,
            &state_key(learner),
            STATE_TTL_MS,
            |found: Option<Learner>| {
                let changed = match found {
                    Some(model) => Ok(model),
                    None if create => Ok(Learner {
                        learner_id: learner.to_string(),
                        ..Learner::default()
                    }),
                    None => Err(no_session(learner)),
                }
                .map(|mut model| {
                    let out = change(&mut model);
                    (model.clone(), (model, out))
                });
                std::future::ready(changed)
            },
        )
        .await
    }

    async fn initialize(&self, call: &AgentCall<'_>, learner: &str) -> Result<Value, AgentError> {
        let input = call.input;
        let subject = input
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_string);
        let skills: Vec<String> = match input.get("skills").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            None => subject.iter().cloned().collect(),
        };
        let grade = input.get("gradeLevel").cloned();
        let (model, ()) = self
            .modify(call, learner, true, |m| {
                if subject.is_some() {
                    m.subject = subject.clone();
                }
                if grade.is_some() {
                    m.grade_level = grade.clone();
                }
                // A new session keeps what the model already knows.
                for s in &skills {
                    m.skills.entry(s.clone()).or_insert_with(Skill::new);
                }
            })
            .await?;
        Ok(json!({
            "learnerId": learner,
            "subject": model.subject,
            "gradeLevel": model.grade_level,
            "skills": masteries(&model),
            "ready": true,
        }))
    }

    async fn interact(&self, call: &AgentCall<'_>, learner: &str) -> Result<Value, AgentError> {
        let input = call.input;
        let skill = input["skill"].as_str().unwrap_or_default().to_string();
        let correct = input["correct"].as_bool().unwrap_or(false);
        let hints = optional_u64(input, "hintsUsed")
            .map_err(AgentError::permanent)?
            .unwrap_or(0);
        let time = optional_u64(input, "responseTimeMs").map_err(AgentError::permanent)?;
        let weight = evidence_weight(hints, time);
        let (_, (before, after)) = self
            .modify(call, learner, false, |m| {
                m.interactions += 1;
                let s = m.skills.entry(skill.clone()).or_insert_with(Skill::new);
                let before = s.clone();
                s.mastery = update(s.mastery, correct, weight, &BKT);
                s.attempts += 1;
                if correct {
                    s.correct += 1;
                    s.streak_incorrect = 0;
                } else {
                    s.streak_incorrect += 1;
                }
                (before, s.clone())
            })
            .await?;
        if before.mastery < MASTERED && after.mastery >= MASTERED {
            call.events.insight(
                "mastery_reached",
                json!({"learnerId": learner, "skill": skill, "mastery": after.mastery}),
            );
        }
        if after.streak_incorrect == STRUGGLING_STREAK {
            call.events.insight(
                "struggling_detected",
                json!({"learnerId": learner, "skill": skill, "mastery": after.mastery,
                       "wrongInARow": after.streak_incorrect}),
            );
        }
        Ok(json!({
            "learnerId": learner,
            "skill": skill,
            "correct": correct,
            "previousMastery": before.mastery,
            "mastery": after.mastery,
            "attempts": after.attempts,
            "streakIncorrect": after.streak_incorrect,
        }))
    }
}

fn no_session(learner: &str) -> AgentError {
    AgentError::permanent(format!(
        "learner '{learner}' has no session: run initialize_session first"
    ))
}

fn masteries(m: &Learner) -> Map<String, Value> {
    m.skills
        .iter()
        .map(|(k, s)| (k.clone(), json!(s.mastery)))
        .collect()
}

/// The weakest skill not yet mastered, at a difficulty matching its mastery.
fn recommend(m: &Learner) -> Value {
    let open = m
        .skills
        .iter()
        .filter(|(_, s)| s.mastery < MASTERED)
        .min_by(|a, b| a.1.mastery.total_cmp(&b.1.mastery));
    match open {
        None => json!({
            "learnerId": m.learner_id,
            "skill": null,
            "reason": if m.skills.is_empty() { "no skills yet" } else { "every skill is mastered" },
        }),
        Some((name, s)) => {
            let difficulty = if s.mastery < 0.4 {
                "easy"
            } else if s.mastery < 0.7 {
                "medium"
            } else {
                "hard"
            };
            json!({
                "learnerId": m.learner_id,
                "skill": name,
                "mastery": s.mastery,
                "difficulty": difficulty,
                "reason": "lowest mastery among skills not yet mastered",
            })
        }
    }
}

fn analyze(m: &Learner) -> Value {
    let n = m.skills.len().max(1) as f64;
    let overall = m.skills.values().map(|s| s.mastery).sum::<f64>() / n;
    let by_mastery = |best: bool| {
        m.skills
            .iter()
            .max_by(|a, b| {
                let o = a.1.mastery.total_cmp(&b.1.mastery);
                if best {
                    o
                } else {
                    o.reverse()
                }
            })
            .map(|(k, _)| k.clone())
    };
    json!({
        "learnerId": m.learner_id,
        "subject": m.subject,
        "interactions": m.interactions,
        "overallMastery": if m.skills.is_empty() { Value::Null } else { json!(overall) },
        "strongest": by_mastery(true),
        "weakest": by_mastery(false),
        "mastered": m.skills.iter().filter(|(_, s)| s.mastery >= MASTERED).map(|(k, _)| k).collect::<Vec<_>>(),
        "struggling": m.skills.iter().filter(|(_, s)| s.streak_incorrect >= STRUGGLING_STREAK).map(|(k, _)| k).collect::<Vec<_>>(),
        "skills": m.skills,
    })
}
