//! The orchestration plan: its JSON wire format, validation into an executable
//! form, and the pure maths the engine needs (retry backoff, DAG order).
//!
//! Nothing here does I/O. Every other crate builds on the types of this one: a
//! [`PlanDoc`] is what a user writes, a [`ValidPlan`] is what survived
//! [`validate`] and is safe to execute.

mod backoff;
mod model;
mod validate;

pub use backoff::retry_delay_ms;
pub use model::*;
pub use validate::{
    parse_and_validate, validate, validate_value, ActionProblem, Catalog, Limits, PlanError,
    PlanErrors,
};
