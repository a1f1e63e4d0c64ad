//! Integration tests for plan validation: `parse_and_validate`, `validate_value`
//! and `validate`, driven through a small test [`Catalog`].
//!
//! Covered, each with the exact JSON path of every error and a distinctive
//! part of its message:
//!
//! * document shape: malformed JSON (line/column), non-object plans, missing,
//!   mistyped or empty `steps`;
//! * step ids and dependencies: duplicates, unknown, self and repeated
//!   dependencies, bad ids (empty, bad characters, too long);
//! * dependency cycles: execution-order naming, disjoint cycles reported
//!   separately, no false positives on a diamond;
//! * the catalog: unknown agent, unknown action, bad input, half-specified
//!   agent steps and join steps;
//! * numbers: out-of-range and mistyped timeouts and retry settings, backoff
//!   strategies;
//! * unknown fields at every level;
//! * [`Limits`]: step count, input size, plan text size, fallback nesting;
//! * sequential (`parallel: false`) ordering rules;
//! * every error being reported at once;
//! * the checked form of a valid plan (indices, defaults, retry policy);
//! * how [`PlanErrors`] display and serialise.

use baton_plan::{
    parse_and_validate, validate, validate_value, ActionProblem, BackoffStrategy, Catalog, Limits,
    PlanDoc, PlanError, PlanErrors, RetryPolicy, StepKind, ValidPlan,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Test catalog and helpers
// ---------------------------------------------------------------------------

/// Agents and their actions, in the order the catalog reports them.
const AGENTS: &[(&str, &[&str])] = &[
    ("system", &["noop", "echo", "sleep", "fail"]),
    ("learning", &["initialize_session", "process_interaction"]),
];

/// `system` (noop, echo, sleep, fail) and `learning` (initialize_session,
/// process_interaction). `system.sleep` needs `{"ms": <non-negative integer>}`.
struct TestCatalog;

impl Catalog for TestCatalog {
    fn check(&self, agent_id: &str, action: &str, input: &Value) -> Result<(), ActionProblem> {
        let Some((_, actions)) = AGENTS.iter().find(|(name, _)| *name == agent_id) else {
            return Err(ActionProblem::UnknownAgent {
                known: AGENTS.iter().map(|(name, _)| name.to_string()).collect(),
            });
        };
        if !actions.contains(&action) {
            return Err(ActionProblem::UnknownAction {
                known: actions.iter().map(|a| a.to_string()).collect(),
            });
        }
        if (agent_id, action) == ("system", "sleep") {
            let Some(obj) = input.as_object() else {
                return Err(ActionProblem::BadInput(
                    "input must be an object with an `ms` field".into(),
                ));
            };
            if obj.get("ms").and_then(Value::as_u64).is_none() {
                return Err(ActionProblem::BadInput(
                    "`ms` must be a non-negative integer".into(),
                ));
            }
        }
        Ok(())
    }
}

fn run_with(plan: &Value, limits: &Limits) -> Result<ValidPlan, PlanErrors> {
    validate_value(plan, &TestCatalog, limits)
}

#[track_caller]
fn valid_with(plan: &Value, limits: &Limits) -> ValidPlan {
    match run_with(plan, limits) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid plan, got errors:\n{e}\nplan: {plan:#}"),
    }
}

#[track_caller]
fn valid(plan: &Value) -> ValidPlan {
    valid_with(plan, &Limits::default())
}

#[track_caller]
fn errors_with(plan: &Value, limits: &Limits) -> Vec<PlanError> {
    match run_with(plan, limits) {
        Ok(p) => panic!("expected errors, got a valid plan: {p:#?}\nplan: {plan:#}"),
        Err(e) => {
            assert!(!e.0.is_empty(), "PlanErrors must never be empty");
            e.0
        }
    }
}

#[track_caller]
fn errors(plan: &Value) -> Vec<PlanError> {
    errors_with(plan, &Limits::default())
}

#[track_caller]
fn text_errors(text: &str, limits: &Limits) -> Vec<PlanError> {
    match parse_and_validate(text, &TestCatalog, limits) {
        Ok(p) => panic!("expected errors, got a valid plan: {p:#?}"),
        Err(e) => {
            assert!(!e.0.is_empty(), "PlanErrors must never be empty");
            e.0
        }
    }
}

fn list(errs: &[PlanError]) -> String {
    errs.iter().map(|e| format!("  {e}\n")).collect()
}

/// Exactly one error sits at `path`, and its message contains `fragment`.
#[track_caller]
fn expect_error(errs: &[PlanError], path: &str, fragment: &str) {
    let at: Vec<&PlanError> = errs.iter().filter(|e| e.path == path).collect();
    assert_eq!(
        at.len(),
        1,
        "expected exactly one error at {path}, got:\n{}",
        list(errs)
    );
    assert!(
        at[0].message.contains(fragment),
        "error at {path} should contain {fragment:?}, got {:?}",
        at[0].message
    );
}

/// The only error is at `path` and its message contains `fragment`.
#[track_caller]
fn expect_only(errs: &[PlanError], path: &str, fragment: &str) {
    assert_eq!(errs.len(), 1, "expected one error, got:\n{}", list(errs));
    expect_error(errs, path, fragment);
}

/// A `system.noop` step.
fn noop(id: &str) -> Value {
    json!({ "id": id, "agentId": "system", "action": "noop" })
}

/// A `system.noop` step depending on `deps`.
fn noop_after(id: &str, deps: &[&str]) -> Value {
    json!({ "id": id, "agentId": "system", "action": "noop", "dependencies": deps })
}

fn plan_of(steps: Vec<Value>) -> Value {
    json!({ "steps": steps })
}

/// `value` with `key` set to `field` (value must be an object).
fn with(mut value: Value, key: &str, field: Value) -> Value {
    value
        .as_object_mut()
        .expect("with() needs an object")
        .insert(key.to_string(), field);
    value
}

/// A one-step plan whose step is `noop("a")` with `key` set to `field`.
fn one_step_with(key: &str, field: Value) -> Value {
    plan_of(vec![with(noop("a"), key, field)])
}

/// A one-step plan whose step has the given retry policy.
fn retry_plan(policy: Value) -> Value {
    one_step_with("retryPolicy", policy)
}

/// The step names of a "dependency cycle: a -> b -> a" message.
#[track_caller]
fn cycle_names(message: &str) -> Vec<String> {
    let rest = message
        .strip_prefix("dependency cycle: ")
        .unwrap_or_else(|| panic!("not a cycle message: {message:?}"));
    rest.split(" -> ").map(str::to_string).collect()
}

/// Checks that `message` names a real cycle of `plan` in execution order:
/// closed (first == last), no step repeated inside, and every printed step
/// depends on the one printed before it.
#[track_caller]
fn assert_real_cycle(plan: &Value, message: &str) -> Vec<String> {
    let names = cycle_names(message);
    assert!(
        names.len() >= 3,
        "a cycle has at least two steps: {message}"
    );
    assert_eq!(names.first(), names.last(), "cycle not closed: {message}");
    let inner = &names[..names.len() - 1];
    let mut distinct = inner.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), inner.len(), "step repeated: {message}");
    for pair in names.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let step = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == after.as_str())
            .unwrap_or_else(|| panic!("cycle names unknown step {after}"));
        let deps: Vec<&str> = step["dependencies"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(
            deps.contains(&before.as_str()),
            "'{before} -> {after}' is not execution order: {after} does not depend on {before} ({message})"
        );
    }
    names
}

/// A plan with a chain of `depth` nested fallback plans below it.
fn nested_fallbacks(depth: usize) -> Value {
    let mut plan = plan_of(vec![noop(&format!("level{depth}"))]);
    for level in (0..depth).rev() {
        plan = with(
            plan_of(vec![noop(&format!("level{level}"))]),
            "fallbackPlan",
            plan,
        );
    }
    plan
}

// ---------------------------------------------------------------------------
// Document shape
// ---------------------------------------------------------------------------

#[test]
fn malformed_json_reports_line_and_column() {
    let text = "{\n  \"steps\": [\n    {\"id\": \"a\",}\n  ]\n}";
    let errs = text_errors(text, &Limits::default());
    // serde's own " at line N column M" suffix is not repeated at the end.
    expect_only(
        &errs,
        "$",
        "malformed JSON at line 3, column 16: trailing comma",
    );
    assert!(
        errs[0].message.ends_with("trailing comma"),
        "{:?}",
        errs[0].message
    );
    assert_eq!(
        errs[0].message.matches("line").count(),
        1,
        "{:?}",
        errs[0].message
    );
}

#[test]
fn truncated_json_is_malformed() {
    let errs = text_errors("{\"steps\": [", &Limits::default());
    expect_only(
        &errs,
        "$",
        "malformed JSON at line 1, column 11: EOF while parsing",
    );
}

#[test]
fn non_object_plans_are_rejected() {
    expect_only(
        &errors(&json!([noop("a")])),
        "$",
        "a plan must be a JSON object, got an array",
    );
    expect_only(
        &text_errors("\"steps\"", &Limits::default()),
        "$",
        "a plan must be a JSON object, got a string",
    );
    expect_only(&errors(&Value::Null), "$", "got null");
}

#[test]
fn missing_steps_is_reported() {
    expect_only(
        &errors(&json!({})),
        "$.steps",
        "missing: a plan needs a `steps` array",
    );
    expect_only(
        &errors(&json!({ "parallel": false, "timeout": 100 })),
        "$.steps",
        "missing",
    );
}

#[test]
fn steps_must_be_an_array() {
    expect_only(
        &errors(&json!({ "steps": { "a": noop("a") } })),
        "$.steps",
        "must be an array of steps, got an object",
    );
    expect_only(
        &errors(&json!({ "steps": "a,b" })),
        "$.steps",
        "must be an array of steps, got a string",
    );
}

#[test]
fn empty_steps_is_rejected() {
    expect_only(
        &errors(&plan_of(vec![])),
        "$.steps",
        "a plan needs at least one step",
    );
}

#[test]
fn a_step_must_be_an_object_with_an_id() {
    let errs = errors(&plan_of(vec![
        noop("a"),
        json!("b"),
        json!({ "agentId": "system" }),
    ]));
    assert_eq!(errs.len(), 2, "{}", list(&errs));
    expect_error(&errs, "$.steps[1]", "invalid type: string \"b\"");
    expect_error(&errs, "$.steps[2]", "missing field `id`");
}

// ---------------------------------------------------------------------------
// Ids and dependencies
// ---------------------------------------------------------------------------

#[test]
fn duplicate_step_ids_name_the_first_place() {
    let errs = errors(&plan_of(vec![noop("a"), noop("b"), noop("a")]));
    expect_only(
        &errs,
        "$.steps[2].id",
        "duplicate step id 'a' (first used at $.steps[0])",
    );
}

#[test]
fn every_repeat_of_an_id_is_reported_against_the_first() {
    let errs = errors(&plan_of(vec![noop("x"), noop("a"), noop("a"), noop("a")]));
    assert_eq!(errs.len(), 2, "{}", list(&errs));
    expect_error(&errs, "$.steps[2].id", "(first used at $.steps[1])");
    expect_error(&errs, "$.steps[3].id", "(first used at $.steps[1])");
}

#[test]
fn unknown_dependency_is_reported() {
    let errs = errors(&plan_of(vec![noop("a"), noop_after("b", &["a", "ghost"])]));
    expect_only(&errs, "$.steps[1].dependencies[1]", "unknown step 'ghost'");
}

#[test]
fn self_dependency_is_reported() {
    let errs = errors(&plan_of(vec![noop("a"), noop_after("b", &["b"])]));
    expect_only(
        &errs,
        "$.steps[1].dependencies[0]",
        "step 'b' depends on itself",
    );
}

#[test]
fn dependency_listed_twice_is_reported() {
    let errs = errors(&plan_of(vec![noop("a"), noop_after("b", &["a", "a"])]));
    expect_only(
        &errs,
        "$.steps[1].dependencies[1]",
        "step 'a' is listed twice",
    );
}

#[test]
fn a_dependency_on_a_step_that_failed_to_parse_is_not_unknown() {
    // `a` is broken, but it exists: `b` must not get a second, misleading error.
    let plan = plan_of(vec![
        with(noop("a"), "timeout", json!("soon")),
        noop_after("b", &["a"]),
    ]);
    expect_only(
        &errors(&plan),
        "$.steps[0].timeout",
        "invalid type: string \"soon\"",
    );
}

#[test]
fn empty_id_is_rejected() {
    expect_only(
        &errors(&plan_of(vec![noop("")])),
        "$.steps[0].id",
        "must not be empty",
    );
}

#[test]
fn ids_with_braces_or_spaces_are_rejected() {
    let errs = errors(&plan_of(vec![noop("a"), noop("x{y}"), noop("two words")]));
    assert_eq!(errs.len(), 2, "{}", list(&errs));
    expect_error(&errs, "$.steps[1].id", "'x{y}' contains '{'");
    expect_error(&errs, "$.steps[2].id", "'two words' contains ' '");
    assert!(errs[0].message.contains("letters, digits and _ - . : only"));
}

#[test]
fn ids_may_use_letters_digits_and_punctuation() {
    valid(&plan_of(vec![noop("Step_1-a.b:c"), noop("9")]));
}

#[test]
fn overlong_ids_are_rejected_at_the_limit() {
    let limit = Limits::default().max_id_len;
    valid(&plan_of(vec![noop(&"a".repeat(limit))]));
    let errs = errors(&plan_of(vec![noop(&"a".repeat(limit + 1))]));
    expect_only(
        &errs,
        "$.steps[0].id",
        &format!("is {} characters, over the limit of {limit}", limit + 1),
    );
}

#[test]
fn id_length_counts_characters_not_bytes() {
    // 100 two-byte characters are within the 128 limit: the real problem is
    // the character, not the length.
    let errs = errors(&plan_of(vec![noop(&"é".repeat(100))]));
    expect_only(&errs, "$.steps[0].id", "contains 'é'");
    let errs = errors(&plan_of(vec![noop(&"é".repeat(129))]));
    expect_only(
        &errs,
        "$.steps[0].id",
        "is 129 characters, over the limit of 128",
    );
}

#[test]
fn plan_id_is_checked_too() {
    let plan = with(plan_of(vec![noop("a")]), "id", json!("my plan"));
    expect_only(&errors(&plan), "$.id", "'my plan' contains ' '");
    let plan = with(plan_of(vec![noop("a")]), "id", json!(""));
    expect_only(&errors(&plan), "$.id", "must not be empty");
}

// ---------------------------------------------------------------------------
// Cycles
// ---------------------------------------------------------------------------

#[test]
fn three_step_cycle_is_named_in_execution_order() {
    // b needs a, c needs b, a needs c.
    let plan = plan_of(vec![
        noop_after("a", &["c"]),
        noop_after("b", &["a"]),
        noop_after("c", &["b"]),
    ]);
    let errs = errors(&plan);
    expect_only(
        &errs,
        "$.steps[0].dependencies",
        "dependency cycle: a -> b -> c -> a",
    );
    assert_real_cycle(&plan, &errs[0].message);
}

#[test]
fn cycle_order_follows_the_arrows_not_the_listing() {
    // Listed x, y, z, but x needs y and y needs z: execution order is
    // z -> y -> x -> z, which printed from x reads x -> z -> y -> x.
    let plan = plan_of(vec![
        noop_after("x", &["y"]),
        noop_after("y", &["z"]),
        noop_after("z", &["x"]),
    ]);
    let errs = errors(&plan);
    expect_only(
        &errs,
        "$.steps[0].dependencies",
        "dependency cycle: x -> z -> y -> x",
    );
    assert_real_cycle(&plan, &errs[0].message);
}

#[test]
fn cycle_path_names_its_first_listed_step() {
    // The cycle b <-> c sits behind a root `a` and after an unrelated step.
    let plan = plan_of(vec![
        noop("free"),
        noop_after("a", &["b"]),
        noop_after("b", &["c"]),
        noop_after("c", &["b"]),
    ]);
    let errs = errors(&plan);
    assert_eq!(errs.len(), 1, "{}", list(&errs));
    assert_eq!(errs[0].path, "$.steps[2].dependencies");
    let names = assert_real_cycle(&plan, &errs[0].message);
    let mut inner = names[..names.len() - 1].to_vec();
    inner.sort();
    assert_eq!(inner, ["b", "c"], "`a` only leads into the cycle");
}

#[test]
fn two_disjoint_cycles_are_two_errors() {
    let plan = plan_of(vec![
        noop_after("a", &["b"]),
        noop_after("b", &["a"]),
        noop_after("c", &["e"]),
        noop_after("d", &["c"]),
        noop_after("e", &["d"]),
        noop_after("ok", &["a", "d"]),
    ]);
    let errs = errors(&plan);
    assert_eq!(errs.len(), 2, "{}", list(&errs));
    expect_error(&errs, "$.steps[0].dependencies", "dependency cycle: ");
    expect_error(
        &errs,
        "$.steps[2].dependencies",
        "dependency cycle: c -> d -> e -> c",
    );
    let mut seen: Vec<Vec<String>> = errs
        .iter()
        .map(|e| {
            let names = assert_real_cycle(&plan, &e.message);
            let mut inner = names[..names.len() - 1].to_vec();
            inner.sort();
            inner
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec![vec!["a", "b"], vec!["c", "d", "e"]]);
}

#[test]
fn a_diamond_is_not_a_cycle() {
    let plan = valid(&plan_of(vec![
        noop("top"),
        noop_after("left", &["top"]),
        noop_after("right", &["top"]),
        noop_after("bottom", &["left", "right"]),
    ]));
    assert_eq!(plan.steps[0].dependents, vec![1, 2]);
    assert_eq!(plan.steps[3].dependencies, vec![1, 2]);
    assert!(plan.steps[3].dependents.is_empty());
}

// ---------------------------------------------------------------------------
// Agents, actions and input
// ---------------------------------------------------------------------------

#[test]
fn unknown_agent_lists_the_known_agents() {
    let plan = plan_of(vec![
        json!({ "id": "a", "agentId": "ghost", "action": "noop" }),
    ]);
    expect_only(
        &errors(&plan),
        "$.steps[0].agentId",
        "unknown agent 'ghost' (known: system, learning)",
    );
}

#[test]
fn unknown_action_lists_the_agents_actions() {
    let plan = plan_of(vec![
        json!({ "id": "a", "agentId": "system", "action": "explode" }),
    ]);
    expect_only(
        &errors(&plan),
        "$.steps[0].action",
        "agent 'system' has no action 'explode' (its actions: noop, echo, sleep, fail)",
    );
    let plan = plan_of(vec![
        json!({ "id": "a", "agentId": "learning", "action": "noop" }),
    ]);
    expect_only(
        &errors(&plan),
        "$.steps[0].action",
        "(its actions: initialize_session, process_interaction)",
    );
}

#[test]
fn sleep_input_is_checked_by_the_catalog() {
    let sleep = |input: Value| {
        plan_of(vec![
            json!({ "id": "nap", "agentId": "system", "action": "sleep", "input": input }),
        ])
    };
    let good = valid(&sleep(json!({ "ms": 0 })));
    assert_eq!(good.steps[0].input, json!({ "ms": 0 }));
    valid(&sleep(json!({ "ms": 250 })));

    expect_only(
        &errors(&sleep(json!({ "ms": -5 }))),
        "$.steps[0].input",
        "bad input for system.sleep: `ms` must be a non-negative integer",
    );
    expect_only(
        &errors(&sleep(json!({ "ms": "5" }))),
        "$.steps[0].input",
        "bad input for system.sleep: ",
    );
    expect_only(
        &errors(&sleep(json!(5))),
        "$.steps[0].input",
        "bad input for system.sleep: input must be an object",
    );
    // No input at all is null, which is not an object either.
    let no_input = plan_of(vec![
        json!({ "id": "nap", "agentId": "system", "action": "sleep" }),
    ]);
    expect_only(
        &errors(&no_input),
        "$.steps[0].input",
        "input must be an object",
    );
}

#[test]
fn agent_without_action_is_rejected() {
    let plan = plan_of(vec![json!({ "id": "a", "agentId": "system" })]);
    expect_only(
        &errors(&plan),
        "$.steps[0].action",
        "missing: a step with an agentId needs an action",
    );
}

#[test]
fn action_without_agent_is_rejected() {
    let plan = plan_of(vec![json!({ "id": "a", "action": "noop" })]);
    expect_only(
        &errors(&plan),
        "$.steps[0].agentId",
        "missing: a step with an action needs an agentId",
    );
}

#[test]
fn a_step_with_neither_agent_nor_action_is_a_join() {
    let plan = valid(&plan_of(vec![
        noop("a"),
        noop("b"),
        json!({ "id": "gather", "dependencies": ["a", "b"] }),
    ]));
    let join = &plan.steps[2];
    assert_eq!(join.kind, StepKind::Join);
    assert_eq!(join.agent_id(), None);
    assert_eq!(join.action(), None);
    assert_eq!(join.dependencies, vec![0, 1]);
    assert_eq!(
        plan.steps[0].kind,
        StepKind::Agent {
            agent_id: "system".into(),
            action: "noop".into()
        }
    );
    assert_eq!(plan.steps[0].agent_id(), Some("system"));
    assert_eq!(plan.steps[0].action(), Some("noop"));
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

#[test]
fn plan_timeout_must_be_positive() {
    let max = Limits::default().max_timeout_ms;
    let base = plan_of(vec![noop("a")]);
    expect_only(
        &errors(&with(base.clone(), "timeout", json!(-1))),
        "$.timeout",
        &format!("must be between 1 and {max}, got -1"),
    );
    expect_only(
        &errors(&with(base.clone(), "timeout", json!(0))),
        "$.timeout",
        &format!("must be between 1 and {max}, got 0"),
    );
    assert_eq!(valid(&with(base, "timeout", json!(1))).timeout_ms, Some(1));
}

#[test]
fn step_timeout_over_the_maximum_is_rejected() {
    let max = Limits::default().max_timeout_ms;
    let ok = valid(&one_step_with("timeout", json!(max)));
    assert_eq!(ok.steps[0].timeout_ms, Some(max));
    expect_only(
        &errors(&one_step_with("timeout", json!(max + 1))),
        "$.steps[0].timeout",
        &format!("must be between 1 and {max}, got {}", max + 1),
    );
    expect_only(
        &errors(&one_step_with("timeout", json!(0))),
        "$.steps[0].timeout",
        "got 0",
    );
}

#[test]
fn custom_limits_bound_the_timeout() {
    let limits = Limits {
        max_timeout_ms: 1_000,
        ..Limits::default()
    };
    let plan = with(plan_of(vec![noop("a")]), "timeout", json!(1_001));
    expect_only(
        &errors_with(&plan, &limits),
        "$.timeout",
        "must be between 1 and 1000, got 1001",
    );
}

#[test]
fn max_retries_must_be_in_range() {
    let max = Limits::default().max_retries;
    expect_only(
        &errors(&retry_plan(json!({ "maxRetries": -1 }))),
        "$.steps[0].retryPolicy.maxRetries",
        &format!("must be between 0 and {max}, got -1"),
    );
    expect_only(
        &errors(&retry_plan(json!({ "maxRetries": 1000 }))),
        "$.steps[0].retryPolicy.maxRetries",
        &format!("must be between 0 and {max}, got 1000"),
    );
    let at_max = valid(&retry_plan(json!({ "maxRetries": max })));
    assert_eq!(at_max.steps[0].retry.max_retries, max);
}

#[test]
fn max_retries_is_required_in_a_retry_policy() {
    expect_only(
        &errors(&retry_plan(json!({ "backoffMs": 10 }))),
        "$.steps[0].retryPolicy",
        "missing field `maxRetries`",
    );
}

#[test]
fn negative_backoff_is_rejected() {
    expect_only(
        &errors(&retry_plan(json!({ "maxRetries": 1, "backoffMs": -100 }))),
        "$.steps[0].retryPolicy.backoffMs",
        "got -100",
    );
}

#[test]
fn max_backoff_over_the_limit_is_rejected() {
    let max = Limits::default().max_backoff_ms;
    expect_only(
        &errors(&retry_plan(
            json!({ "maxRetries": 1, "maxBackoffMs": max + 1 }),
        )),
        "$.steps[0].retryPolicy.maxBackoffMs",
        &format!("must be between 0 and {max}, got {}", max + 1),
    );
    let ok = valid(&retry_plan(json!({ "maxRetries": 1, "maxBackoffMs": max })));
    assert_eq!(ok.steps[0].retry.max_backoff_ms, Some(max));
}

#[test]
fn several_bad_retry_numbers_are_all_reported() {
    let errs = errors(&retry_plan(
        json!({ "maxRetries": -1, "backoffMs": -1, "maxBackoffMs": -1 }),
    ));
    assert_eq!(errs.len(), 3, "{}", list(&errs));
    expect_error(&errs, "$.steps[0].retryPolicy.maxRetries", "got -1");
    expect_error(&errs, "$.steps[0].retryPolicy.backoffMs", "got -1");
    expect_error(&errs, "$.steps[0].retryPolicy.maxBackoffMs", "got -1");
}

#[test]
fn mistyped_numbers_report_the_fields_path() {
    expect_only(
        &errors(&one_step_with("timeout", json!("30s"))),
        "$.steps[0].timeout",
        "invalid type: string \"30s\", expected i64",
    );
    expect_only(
        &errors(&with(plan_of(vec![noop("a")]), "timeout", json!("30s"))),
        "$.timeout",
        "invalid type: string \"30s\"",
    );
    expect_only(
        &errors(&retry_plan(json!({ "maxRetries": "2" }))),
        "$.steps[0].retryPolicy.maxRetries",
        "invalid type: string \"2\"",
    );
    expect_only(
        &errors(&one_step_with("timeout", json!(1.5))),
        "$.steps[0].timeout",
        "invalid type: floating point `1.5`",
    );
}

#[test]
fn numbers_beyond_i64_are_rejected_with_the_path() {
    let text = r#"{"timeout": 18446744073709551615, "steps": [{"id": "a"}]}"#;
    let errs = text_errors(text, &Limits::default());
    expect_only(&errs, "$.timeout", "18446744073709551615");
    let text = r#"{"steps": [{"id": "a", "timeout": 1e30}]}"#;
    let errs = text_errors(text, &Limits::default());
    expect_only(&errs, "$.steps[0].timeout", "invalid type: floating point");
}

#[test]
fn other_mistyped_fields_report_their_path() {
    expect_only(
        &errors(&with(plan_of(vec![noop("a")]), "parallel", json!("yes"))),
        "$.parallel",
        "invalid type: string \"yes\", expected a boolean",
    );
    expect_only(
        &errors(&one_step_with("dependencies", json!("b"))),
        "$.steps[0].dependencies",
        "invalid type: string \"b\", expected a sequence",
    );
    expect_only(
        &errors(&plan_of(vec![
            noop("a"),
            noop_after("b", &[]),
            json!({ "id": "c", "dependencies": ["a", 7] }),
        ])),
        "$.steps[2].dependencies[1]",
        "invalid type: integer `7`",
    );
}

// ---------------------------------------------------------------------------
// Backoff strategies
// ---------------------------------------------------------------------------

#[test]
fn strategies_parse() {
    for (name, strategy) in [
        ("exponential", BackoffStrategy::Exponential),
        ("linear", BackoffStrategy::Linear),
        ("fixed", BackoffStrategy::Fixed),
    ] {
        let plan = valid(&retry_plan(
            json!({ "maxRetries": 3, "backoffMs": 10, "strategy": name, "jitter": true }),
        ));
        assert_eq!(
            plan.steps[0].retry,
            RetryPolicy {
                max_retries: 3,
                backoff_ms: 10,
                strategy,
                max_backoff_ms: None,
                jitter: true,
            },
            "strategy {name}"
        );
    }
}

#[test]
fn unknown_strategy_is_rejected_with_its_path() {
    let errs = errors(&retry_plan(
        json!({ "maxRetries": 3, "strategy": "quadratic" }),
    ));
    expect_only(
        &errs,
        "$.steps[0].retryPolicy.strategy",
        "unknown variant `quadratic`",
    );
    // Strategy names are lowercase only.
    let errs = errors(&retry_plan(
        json!({ "maxRetries": 3, "strategy": "Linear" }),
    ));
    expect_only(
        &errs,
        "$.steps[0].retryPolicy.strategy",
        "unknown variant `Linear`",
    );
}

// ---------------------------------------------------------------------------
// Unknown fields
// ---------------------------------------------------------------------------

#[test]
fn unknown_step_field_is_rejected_with_its_path() {
    let plan = plan_of(vec![noop("a"), json!({ "id": "b", "dependsOn": ["a"] })]);
    let errs = errors(&plan);
    expect_only(&errs, "$.steps[1].dependsOn", "unknown field `dependsOn`");
    assert!(
        errs[0].message.contains("dependencies"),
        "lists the expected fields"
    );
}

#[test]
fn unknown_plan_field_is_rejected_with_its_path() {
    let plan = with(plan_of(vec![noop("a")]), "fail_fast", json!(true));
    expect_only(&errors(&plan), "$.fail_fast", "unknown field `fail_fast`");
}

#[test]
fn unknown_retry_policy_field_is_rejected_with_its_path() {
    let errs = errors(&retry_plan(json!({ "maxRetries": 1, "retries": 3 })));
    expect_only(
        &errs,
        "$.steps[0].retryPolicy.retries",
        "unknown field `retries`",
    );
}

#[test]
fn unknown_field_in_a_fallback_plan_is_rejected_with_its_path() {
    let plan = with(
        plan_of(vec![noop("a")]),
        "fallbackPlan",
        json!({ "steps": [noop("b")], "retry": true }),
    );
    expect_only(
        &errors(&plan),
        "$.fallbackPlan.retry",
        "unknown field `retry`",
    );
}

// ---------------------------------------------------------------------------
// Size limits
// ---------------------------------------------------------------------------

#[test]
fn more_steps_than_the_limit_are_rejected() {
    let limits = Limits {
        max_steps: 3,
        ..Limits::default()
    };
    let steps = |n: usize| plan_of((0..n).map(|i| noop(&format!("s{i}"))).collect());
    assert_eq!(valid_with(&steps(3), &limits).steps.len(), 3);
    expect_only(
        &errors_with(&steps(4), &limits),
        "$.steps",
        "4 steps, over the limit of 3",
    );
}

#[test]
fn step_input_over_the_limit_is_rejected() {
    let limits = Limits {
        max_input_bytes: 64,
        ..Limits::default()
    };
    // {"text":"xxx…"} serialises to 11 + 100 = 111 bytes.
    let big = one_step_with("input", json!({ "text": "x".repeat(100) }));
    expect_only(
        &errors_with(&big, &limits),
        "$.steps[0].input",
        "input is 111 bytes, over the limit of 64 bytes",
    );
    // Exactly at the limit is fine: {"text":"…"} with 53 characters is 64 bytes.
    let fits = one_step_with("input", json!({ "text": "x".repeat(53) }));
    valid_with(&fits, &limits);
}

#[test]
fn plan_text_over_the_limit_is_rejected_before_parsing() {
    let text = serde_json::to_string(&plan_of(vec![noop("a"), noop("b")])).unwrap();
    let limits = Limits {
        max_plan_bytes: text.len() - 1,
        ..Limits::default()
    };
    expect_only(
        &text_errors(&text, &limits),
        "$",
        &format!(
            "plan is {} bytes, over the limit of {} bytes",
            text.len(),
            text.len() - 1
        ),
    );
    // At the limit it parses.
    let limits = Limits {
        max_plan_bytes: text.len(),
        ..Limits::default()
    };
    parse_and_validate(&text, &TestCatalog, &limits).expect("fits exactly");
    // Size comes first: oversized garbage is reported as oversized.
    let garbage = "{".repeat(100);
    let small = Limits {
        max_plan_bytes: 10,
        ..Limits::default()
    };
    expect_only(&text_errors(&garbage, &small), "$", "plan is 100 bytes");
}

// ---------------------------------------------------------------------------
// Fallback plans
// ---------------------------------------------------------------------------

#[test]
fn fallback_nesting_at_the_limit_is_accepted() {
    let limits = Limits::default();
    let depth = limits.max_fallback_depth;
    let plan = valid(&nested_fallbacks(depth));
    assert_eq!(plan.fallback_depth(), depth);
    let mut level = &plan;
    for i in 0..=depth {
        assert_eq!(&*level.steps[0].id, format!("level{i}"));
        if let Some(next) = &level.fallback {
            level = next;
        }
    }
    assert!(level.fallback.is_none());
}

#[test]
fn fallback_nesting_over_the_limit_is_rejected() {
    let max = Limits::default().max_fallback_depth;
    let errs = errors(&nested_fallbacks(max + 1));
    let path = format!("${}", ".fallbackPlan".repeat(max + 1));
    expect_only(
        &errs,
        &path,
        &format!(
            "fallback plans nested {} deep, over the limit of {max}",
            max + 1
        ),
    );
}

#[test]
fn fallback_depth_follows_the_limits() {
    let none = Limits {
        max_fallback_depth: 0,
        ..Limits::default()
    };
    valid_with(&nested_fallbacks(0), &none);
    expect_only(
        &errors_with(&nested_fallbacks(1), &none),
        "$.fallbackPlan",
        "nested 1 deep, over the limit of 0",
    );
    let one = Limits {
        max_fallback_depth: 1,
        ..Limits::default()
    };
    assert_eq!(valid_with(&nested_fallbacks(1), &one).fallback_depth(), 1);
    expect_only(
        &errors_with(&nested_fallbacks(2), &one),
        "$.fallbackPlan.fallbackPlan",
        "nested 2 deep",
    );
}

#[test]
fn errors_inside_a_fallback_carry_its_path() {
    let fallback = plan_of(vec![
        json!({ "id": "a", "agentId": "ghost", "action": "noop" }),
        noop_after("b", &["nope"]),
    ]);
    let plan = with(plan_of(vec![noop("a")]), "fallbackPlan", fallback);
    let errs = errors(&plan);
    assert_eq!(errs.len(), 2, "{}", list(&errs));
    expect_error(
        &errs,
        "$.fallbackPlan.steps[0].agentId",
        "unknown agent 'ghost'",
    );
    expect_error(
        &errs,
        "$.fallbackPlan.steps[1].dependencies[0]",
        "unknown step 'nope'",
    );
}

#[test]
fn errors_deep_in_the_fallback_chain_carry_the_full_path() {
    let inner = with(plan_of(vec![noop("a")]), "timeout", json!(-3));
    let middle = with(plan_of(vec![noop("a")]), "fallbackPlan", inner);
    let plan = with(plan_of(vec![noop("a")]), "fallbackPlan", middle);
    expect_only(
        &errors(&plan),
        "$.fallbackPlan.fallbackPlan.timeout",
        "got -3",
    );
}

#[test]
fn fallback_must_be_a_plan_object() {
    let plan = with(plan_of(vec![noop("a")]), "fallbackPlan", json!([noop("b")]));
    expect_only(
        &errors(&plan),
        "$.fallbackPlan",
        "a plan must be a JSON object, got an array",
    );
    let plan = with(plan_of(vec![noop("a")]), "fallbackPlan", json!({}));
    expect_only(&errors(&plan), "$.fallbackPlan.steps", "missing");
}

#[test]
fn null_fallback_means_none_and_fallback_ids_are_separate() {
    let plan = valid(&with(plan_of(vec![noop("a")]), "fallbackPlan", Value::Null));
    assert!(plan.fallback.is_none());
    // A fallback has its own id space: reusing `a` is fine, depending on the
    // main plan's steps is not.
    let plan = valid(&with(
        plan_of(vec![noop("a")]),
        "fallbackPlan",
        plan_of(vec![noop("a")]),
    ));
    assert_eq!(&*plan.fallback.as_ref().unwrap().steps[0].id, "a");
    let cross = with(
        plan_of(vec![noop("a")]),
        "fallbackPlan",
        plan_of(vec![noop_after("b", &["a"])]),
    );
    expect_only(
        &errors(&cross),
        "$.fallbackPlan.steps[0].dependencies[0]",
        "unknown step 'a'",
    );
}

// ---------------------------------------------------------------------------
// Sequential plans
// ---------------------------------------------------------------------------

#[test]
fn sequential_plan_rejects_a_dependency_on_a_later_step() {
    let steps = vec![noop_after("a", &["b"]), noop("b")];
    let plan = with(plan_of(steps.clone()), "parallel", json!(false));
    expect_only(
        &errors(&plan),
        "$.steps[0].dependencies[0]",
        "in a sequential plan (parallel: false) a step can only depend on steps listed before it; 'b' comes after",
    );
    // The same steps are fine in a parallel plan.
    let plan = valid(&with(plan_of(steps), "parallel", json!(true)));
    assert!(plan.parallel);
    assert_eq!(plan.steps[0].dependencies, vec![1]);
    assert_eq!(plan.steps[1].dependents, vec![0]);
}

#[test]
fn sequential_plan_accepts_dependencies_on_earlier_steps() {
    let plan = with(
        plan_of(vec![
            noop("a"),
            noop_after("b", &["a"]),
            noop_after("c", &["a", "b"]),
        ]),
        "parallel",
        json!(false),
    );
    let plan = valid(&plan);
    assert!(!plan.parallel);
    assert_eq!(plan.steps[2].dependencies, vec![0, 1]);
}

// ---------------------------------------------------------------------------
// Every error at once
// ---------------------------------------------------------------------------

#[test]
fn all_errors_are_reported_at_once() {
    let plan = json!({
        "timeout": 0,
        "steps": [
            { "id": "a", "agentId": "ghost", "action": "noop" },
            { "id": "b", "agentId": "system", "action": "noop", "timeout": -5 },
            { "id": "c", "agentId": "system", "action": "noop", "dependencies": ["zzz"] },
            { "id": "d", "agentId": "system", "action": "noop", "dependsOn": ["a"] },
            { "id": "bad id", "agentId": "system", "action": "explode" },
            { "id": "a" },
            { "id": "nap", "agentId": "system", "action": "sleep", "input": { "ms": -1 } },
            { "id": "e", "retryPolicy": { "maxRetries": 1000, "strategy": "fixed" } }
        ],
        "fallbackPlan": { "steps": [{ "id": "fb", "action": "noop" }] }
    });
    let errs = errors(&plan);
    let mut paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "$.fallbackPlan.steps[0].agentId",
            "$.steps[0].agentId",
            "$.steps[1].timeout",
            "$.steps[2].dependencies[0]",
            "$.steps[3].dependsOn",
            "$.steps[4].action",
            "$.steps[4].id",
            "$.steps[5].id",
            "$.steps[6].input",
            "$.steps[7].retryPolicy.maxRetries",
            "$.timeout",
        ],
        "got:\n{}",
        list(&errs)
    );
    expect_error(&errs, "$.steps[0].agentId", "unknown agent 'ghost'");
    expect_error(&errs, "$.steps[1].timeout", "got -5");
    expect_error(&errs, "$.steps[2].dependencies[0]", "unknown step 'zzz'");
    expect_error(&errs, "$.steps[3].dependsOn", "unknown field `dependsOn`");
    expect_error(&errs, "$.steps[4].action", "no action 'explode'");
    expect_error(&errs, "$.steps[4].id", "contains ' '");
    expect_error(&errs, "$.steps[5].id", "duplicate step id 'a'");
    expect_error(&errs, "$.steps[6].input", "bad input for system.sleep");
    expect_error(&errs, "$.steps[7].retryPolicy.maxRetries", "got 1000");
    expect_error(&errs, "$.timeout", "got 0");
    expect_error(&errs, "$.fallbackPlan.steps[0].agentId", "needs an agentId");
}

#[test]
fn a_cycle_is_reported_alongside_errors_in_other_steps() {
    let plan = plan_of(vec![
        json!({ "id": "a", "agentId": "ghost", "action": "noop" }),
        noop_after("b", &["c"]),
        noop_after("c", &["b"]),
        with(noop("d"), "timeout", json!(-1)),
    ]);
    let errs = errors(&plan);
    assert_eq!(errs.len(), 3, "{}", list(&errs));
    expect_error(&errs, "$.steps[0].agentId", "unknown agent 'ghost'");
    expect_error(&errs, "$.steps[3].timeout", "got -1");
    expect_error(
        &errs,
        "$.steps[1].dependencies",
        "dependency cycle: b -> c -> b",
    );
}

#[test]
fn a_cycle_through_a_step_with_other_errors_is_still_reported() {
    let plan = plan_of(vec![
        json!({ "id": "a", "agentId": "ghost", "action": "noop", "dependencies": ["b"] }),
        noop_after("b", &["a"]),
    ]);
    let errs = errors(&plan);
    assert_eq!(errs.len(), 2, "{}", list(&errs));
    expect_error(&errs, "$.steps[0].agentId", "unknown agent 'ghost'");
    expect_error(
        &errs,
        "$.steps[0].dependencies",
        "dependency cycle: a -> b -> a",
    );
}

#[test]
fn a_bad_plan_header_does_not_hide_step_errors() {
    let plan = json!({
        "timeout": "soon",
        "steps": [
            { "id": "a", "agentId": "ghost", "action": "noop" },
            { "id": "b", "dependencies": ["nope"] }
        ]
    });
    let errs = errors(&plan);
    assert_eq!(errs.len(), 3, "{}", list(&errs));
    expect_error(&errs, "$.timeout", "invalid type: string \"soon\"");
    expect_error(&errs, "$.steps[0].agentId", "unknown agent 'ghost'");
    expect_error(&errs, "$.steps[1].dependencies[0]", "unknown step 'nope'");
}

#[test]
fn a_bad_plan_header_keeps_the_sequential_rule() {
    // `parallel: false` is still honoured while `timeout` is broken.
    let plan = json!({
        "parallel": false,
        "timeout": -1.5,
        "steps": [noop_after("a", &["b"]), noop("b")]
    });
    let errs = errors(&plan);
    assert_eq!(errs.len(), 2, "{}", list(&errs));
    expect_error(&errs, "$.timeout", "invalid type: floating point `-1.5`");
    expect_error(&errs, "$.steps[0].dependencies[0]", "'b' comes after");
}

// ---------------------------------------------------------------------------
// Valid plans
// ---------------------------------------------------------------------------

const SEED_PLAN: &str = r#"{
  "id": "seed-plan",
  "steps": [
    {
      "id": "init_learning",
      "agentId": "learning",
      "action": "initialize_session",
      "input": { "userId": "u-1", "topic": "fractions" }
    },
    {
      "id": "init_tutor",
      "agentId": "learning",
      "action": "process_interaction",
      "dependencies": ["init_learning"],
      "retryPolicy": { "maxRetries": 2, "backoffMs": 1000 },
      "timeout": 5000
    }
  ],
  "parallel": true,
  "timeout": 30000,
  "failFast": true
}"#;

#[test]
fn seed_plan_parses_into_its_checked_form() {
    let plan = parse_and_validate(SEED_PLAN, &TestCatalog, &Limits::default())
        .unwrap_or_else(|e| panic!("seed plan rejected:\n{e}"));
    assert_eq!(plan.id.as_deref(), Some("seed-plan"));
    assert!(plan.parallel);
    assert!(plan.fail_fast);
    assert_eq!(plan.timeout_ms, Some(30_000));
    assert!(plan.fallback.is_none());
    assert_eq!(plan.fallback_depth(), 0);
    assert_eq!(plan.steps.len(), 2);
    assert_eq!(plan.step_index("init_learning"), Some(0));
    assert_eq!(plan.step_index("init_tutor"), Some(1));
    assert_eq!(plan.step_index("missing"), None);

    let learning = &plan.steps[0];
    assert_eq!(&*learning.id, "init_learning");
    assert_eq!(
        learning.kind,
        StepKind::Agent {
            agent_id: "learning".into(),
            action: "initialize_session".into()
        }
    );
    assert_eq!(
        learning.input,
        json!({ "userId": "u-1", "topic": "fractions" })
    );
    assert!(learning.dependencies.is_empty());
    assert_eq!(learning.dependents, vec![1]);
    assert_eq!(learning.retry, RetryPolicy::NONE);
    assert_eq!(learning.retry.max_attempts(), 1);
    assert_eq!(learning.timeout_ms, None);

    let tutor = &plan.steps[1];
    assert_eq!(tutor.action(), Some("process_interaction"));
    assert_eq!(tutor.input, Value::Null);
    assert_eq!(tutor.dependencies, vec![0]);
    assert!(tutor.dependents.is_empty());
    assert_eq!(
        tutor.retry,
        RetryPolicy {
            max_retries: 2,
            backoff_ms: 1000,
            strategy: BackoffStrategy::Exponential,
            max_backoff_ms: None,
            jitter: false,
        }
    );
    assert_eq!(tutor.retry.max_attempts(), 3);
    assert_eq!(tutor.timeout_ms, Some(5000));
}

#[test]
fn header_defaults_apply_when_absent() {
    let plan = valid(&plan_of(vec![noop("a")]));
    assert!(plan.parallel, "parallel defaults to true");
    assert!(!plan.fail_fast, "failFast defaults to false");
    assert_eq!(plan.timeout_ms, None);
    assert_eq!(plan.id, None);
    assert!(plan.fallback.is_none());
    let plan = valid(&with(plan_of(vec![noop("a")]), "failFast", json!(false)));
    assert!(!plan.fail_fast);
}

#[test]
fn retry_policy_defaults_with_only_max_retries() {
    let plan = valid(&retry_plan(json!({ "maxRetries": 4 })));
    assert_eq!(
        plan.steps[0].retry,
        RetryPolicy {
            max_retries: 4,
            backoff_ms: 0,
            strategy: BackoffStrategy::Exponential,
            max_backoff_ms: None,
            jitter: false,
        }
    );
}

#[test]
fn dependents_are_the_reverse_edges_in_listed_order() {
    let plan = valid(&plan_of(vec![
        noop("root"),
        noop_after("x", &["root"]),
        noop_after("y", &["x", "root"]),
        noop_after("z", &["root"]),
    ]));
    assert_eq!(plan.steps[0].dependents, vec![1, 2, 3]);
    assert_eq!(plan.steps[1].dependents, vec![2]);
    assert_eq!(plan.steps[2].dependencies, vec![1, 0], "listed order kept");
    for (i, step) in plan.steps.iter().enumerate() {
        for &d in &step.dependencies {
            assert!(plan.steps[d].dependents.contains(&i));
        }
        for &d in &step.dependents {
            assert!(plan.steps[d].dependencies.contains(&i));
        }
    }
}

#[test]
fn text_value_and_typed_entry_points_agree() {
    let from_text = parse_and_validate(SEED_PLAN, &TestCatalog, &Limits::default()).unwrap();
    let value: Value = serde_json::from_str(SEED_PLAN).unwrap();
    let from_value = validate_value(&value, &TestCatalog, &Limits::default()).unwrap();
    let doc: PlanDoc = serde_json::from_value(value).unwrap();
    let from_doc = validate(&doc, &TestCatalog, &Limits::default()).unwrap();
    assert_eq!(from_text, from_value);
    assert_eq!(from_text, from_doc);
}

#[test]
fn typed_documents_are_checked_like_json() {
    let mut doc: PlanDoc = serde_json::from_str(SEED_PLAN).unwrap();
    doc.timeout = Some(-1);
    doc.steps[1].dependencies.push("ghost".into());
    doc.steps[0].agent_id = Some("nobody".into());
    let errs = validate(&doc, &TestCatalog, &Limits::default())
        .unwrap_err()
        .0;
    assert_eq!(errs.len(), 3, "{}", list(&errs));
    expect_error(&errs, "$.timeout", "got -1");
    expect_error(&errs, "$.steps[1].dependencies[1]", "unknown step 'ghost'");
    expect_error(&errs, "$.steps[0].agentId", "unknown agent 'nobody'");
}

// ---------------------------------------------------------------------------
// PlanErrors
// ---------------------------------------------------------------------------

fn two_errors() -> PlanErrors {
    validate_value(
        &json!({ "timeout": -1, "steps": [{ "id": "a", "agentId": "ghost", "action": "x" }] }),
        &TestCatalog,
        &Limits::default(),
    )
    .unwrap_err()
}

#[test]
fn plan_errors_display_one_path_and_message_per_line() {
    let errs = two_errors();
    assert_eq!(errs.0.len(), 2);
    let text = errs.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(!text.ends_with('\n'), "no trailing newline: {text:?}");
    for (line, err) in lines.iter().zip(&errs.0) {
        assert_eq!(*line, format!("{}: {}", err.path, err.message));
        assert_eq!(*line, err.to_string());
    }
    assert!(text.contains("$.timeout: must be between 1 and "));
    assert!(text.contains("$.steps[0].agentId: unknown agent 'ghost'"));
}

#[test]
fn a_single_error_displays_without_a_newline() {
    let errs = PlanErrors(vec![PlanError {
        path: "$.steps".into(),
        message: "a plan needs at least one step".into(),
    }]);
    assert_eq!(errs.to_string(), "$.steps: a plan needs at least one step");
}

#[test]
fn plan_errors_serialise_to_an_array_of_path_and_message() {
    let errs = two_errors();
    let json = serde_json::to_value(&errs).unwrap();
    let array = json.as_array().expect("a JSON array");
    assert_eq!(array.len(), 2);
    for (item, err) in array.iter().zip(&errs.0) {
        assert_eq!(item, &json!({ "path": err.path, "message": err.message }));
    }
    let back: PlanErrors = serde_json::from_value(json).unwrap();
    assert_eq!(back, errs);

    let fixed = PlanErrors(vec![PlanError {
        path: "$.id".into(),
        message: "must not be empty".into(),
    }]);
    assert_eq!(
        serde_json::to_string(&fixed).unwrap(),
        r#"[{"path":"$.id","message":"must not be empty"}]"#
    );
}
