//! Plan intake: a submitted plan is validated against the agent registry,
//! given an id, expanded (each step's queue resolved) and stored with its
//! dependency counters, or its rejection is recorded. Nothing is dropped.

pub mod templates;

use std::sync::Arc;

use baton_agents::Registry;
use baton_plan::{Limits, PlanErrors, ValidPlan};
use baton_store::{now_ms, NewPlan, Store, StoreError};
use serde_json::Value;

/// What became of a submission.
#[derive(Debug)]
pub enum Submission {
    /// Stored and started (`duplicate`: a plan with this id already existed,
    /// so this submission changed nothing).
    Accepted { id: String, duplicate: bool },
    /// Invalid; the rejection is recorded under `id`.
    Rejected { id: String, errors: PlanErrors },
}

impl Submission {
    pub fn id(&self) -> &str {
        match self {
            Submission::Accepted { id, .. } | Submission::Rejected { id, .. } => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns plans into stored, runnable state.
#[derive(Clone)]
pub struct Planner<S> {
    store: S,
    registry: Arc<Registry>,
    limits: Limits,
}

impl<S: Store> Planner<S> {
    pub fn new(store: S, registry: Arc<Registry>, limits: Limits) -> Self {
        Planner {
            store,
            registry,
            limits,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates plan JSON text without storing anything.
    pub fn validate(&self, text: &str) -> Result<ValidPlan, PlanErrors> {
        baton_plan::parse_and_validate(text, &*self.registry, &self.limits)
    }

    /// Submits plan JSON text. `default_id` names the plan when it carries
    /// no id of its own (e.g. its stream entry id); without one a ULID is
    /// generated.
    pub async fn submit_text(
        &self,
        text: &str,
        default_id: Option<&str>,
    ) -> Result<Submission, SubmitError> {
        match self.validate(text) {
            Ok(plan) => {
                let id = plan
                    .id
                    .clone()
                    .or_else(|| default_id.map(str::to_string))
                    .unwrap_or_else(new_id);
                self.store_plan(id, plan).await
            }
            Err(errors) => {
                let id = raw_id(text, &self.limits)
                    .or_else(|| default_id.map(str::to_string))
                    .unwrap_or_else(new_id);
                self.record_rejection(id, errors).await
            }
        }
    }

    /// Submits an already validated plan.
    pub async fn submit(&self, plan: ValidPlan) -> Result<Submission, SubmitError> {
        let id = plan.id.clone().unwrap_or_else(new_id);
        self.store_plan(id, plan).await
    }

    async fn store_plan(&self, id: String, plan: ValidPlan) -> Result<Submission, SubmitError> {
        let created = self.store.create_plan(self.expand(&id, plan, None)).await?;
        tracing::debug!(plan = %id, created, "plan stored");
        Ok(Submission::Accepted {
            id,
            duplicate: !created,
        })
    }

    async fn record_rejection(
        &self,
        id: String,
        errors: PlanErrors,
    ) -> Result<Submission, SubmitError> {
        let mut id = id;
        if !self.store.reject_plan(&id, &errors).await? {
            // The id belongs to another plan: record the rejection under a
            // fresh id rather than lose it or touch that plan.
            // `/` never occurs in a submitted id, so this one is free.
            id = format!("{id}/rejected/{}", new_id());
            self.store.reject_plan(&id, &errors).await?;
        }
        tracing::info!(plan = %id, errors = errors.0.len(), "plan rejected");
        Ok(Submission::Rejected { id, errors })
    }

    /// Resolves each step's queue and packs the plan for the store.
    pub fn expand(&self, id: &str, plan: ValidPlan, parent: Option<&str>) -> NewPlan {
        let queues = plan
            .steps
            .iter()
            .map(|s| {
                s.agent_id()
                    .map(|a| self.registry.queue_of(a).unwrap_or_else(|| Arc::from(a)))
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
}

/// A fresh plan id: a ULID, sortable by creation time.
pub fn new_id() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

/// The `id` of an invalid plan, when it has a usable one, so its rejection
/// is recorded where its submitter will look.
fn raw_id(text: &str, limits: &Limits) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    let id = v.get("id")?.as_str()?;
    let ok = !id.is_empty()
        && id.len() <= limits.max_id_len
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    ok.then(|| id.to_string())
}
