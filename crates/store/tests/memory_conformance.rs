//! Runs the store conformance suite (`baton_store::conformance`) against
//! [`MemoryStore`]: each check on a fresh store, then every check at once on
//! one shared store (as a Redis deployment would run them).

use baton_store::conformance;
use baton_store::MemoryStore;

#[tokio::test]
async fn create_plan_is_idempotent() {
    conformance::create_plan_is_idempotent(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn claim_returns_ready_steps() {
    conformance::claim_returns_ready_steps(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn completion_is_exactly_once() {
    conformance::completion_is_exactly_once(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn diamond_waits_for_all_dependencies() {
    conformance::diamond_waits_for_all_dependencies(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn joins_complete_in_store() {
    conformance::joins_complete_in_store(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn retry_is_scheduled() {
    conformance::retry_is_scheduled(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn failure_dead_letters_and_skips() {
    conformance::failure_dead_letters_and_skips(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn fail_fast_stops_the_plan() {
    conformance::fail_fast_stops_the_plan(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn release_requeues_without_an_attempt() {
    conformance::release_requeues_without_an_attempt(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn leases_expire_and_extend() {
    conformance::leases_expire_and_extend(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn deadlines_time_plans_out() {
    conformance::deadlines_time_plans_out(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn fallback_lifecycle() {
    conformance::fallback_lifecycle(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn cancel_ends_a_plan() {
    conformance::cancel_ends_a_plan(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn reject_records_errors() {
    conformance::reject_records_errors(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn wait_result_resolves_on_end() {
    conformance::wait_result_resolves_on_end(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn events_are_ordered_and_paged() {
    conformance::events_are_ordered_and_paged(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn purge_removes_only_ended_plans() {
    conformance::purge_removes_only_ended_plans(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn sequential_plans_run_in_order() {
    conformance::sequential_plans_run_in_order(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn timed_out_plan_runs_its_fallback() {
    conformance::timed_out_plan_runs_its_fallback(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn cancel_during_fallback() {
    conformance::cancel_during_fallback(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn wait_for_work_wakes_up() {
    conformance::wait_for_work_wakes_up(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn purged_ids_start_afresh() {
    conformance::purged_ids_start_afresh(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn agent_state_is_versioned() {
    conformance::agent_state_is_versioned(&MemoryStore::new(), "mem").await;
}

/// Every check at once on one store, on a multi-threaded runtime: the
/// prefixes keep them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_checks_share_one_store() {
    conformance::run_all(&MemoryStore::new(), "shared-").await;
}
