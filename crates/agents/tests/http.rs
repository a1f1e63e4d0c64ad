//! The `http` agent against a real local HTTP server (axum on a free port):
//! the request it sends, the envelope it reads, insights, failure
//! classification (retryable or permanent), timeouts, size limits, and the
//! checks of the agents file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use baton_agents::http::{HttpAgent, HttpAgentConfig};
use baton_agents::{Agent, AgentCall, AgentError, AgentsConfig, Dependencies, EventSink, Registry};
use baton_plan::Catalog;
use serde_json::{json, Value};

/// Serves the test routes on 127.0.0.1 at a free port; returns the base URL.
async fn serve() -> String {
    async fn action(
        UrlPath(action): UrlPath<String>,
        Json(body): Json<Value>,
    ) -> (StatusCode, String) {
        let ok = |v: Value| (StatusCode::OK, v.to_string());
        match action.as_str() {
            "echo" => ok(json!({ "data": body })),
            "insight" => ok(json!({
                "data": 1,
                "insights": [{"type": "struggling_detected", "data": {"skill": "fractions"}}]
            })),
            "busy" => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "slow down"}).to_string(),
            ),
            "broken" => (StatusCode::BAD_GATEWAY, "upstream gone".into()),
            "refuse" => (
                StatusCode::BAD_REQUEST,
                json!({"error": "no such learner"}).to_string(),
            ),
            "bare" => ok(json!({"result": 3})),
            "notjson" => (StatusCode::OK, "{\"data\": ".into()),
            "big" => ok(json!({ "data": "x".repeat(10_000) })),
            "slow" => {
                tokio::time::sleep(Duration::from_millis(2_000)).await;
                ok(json!({ "data": null }))
            }
            _ => (StatusCode::NOT_FOUND, String::new()),
        }
    }
    let app = Router::new().route("/{action}", post(action));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn agent(url: &str, timeout_ms: u64, max_response_bytes: usize) -> HttpAgent {
    let actions = [
        "echo", "insight", "busy", "broken", "refuse", "bare", "notjson", "big", "slow",
    ];
    HttpAgent::new(HttpAgentConfig {
        id: "svc".into(),
        url: url.into(),
        actions: actions.map(String::from).to_vec(),
        queue: None,
        timeout_ms,
        max_response_bytes,
    })
    .unwrap()
}

#[derive(Default)]
struct Recorded(Mutex<Vec<(String, Value)>>);

impl EventSink for Recorded {
    fn insight(&self, kind: &str, data: Value) {
        self.0.lock().unwrap().push((kind.to_string(), data));
    }
}

async fn call(agent: &HttpAgent, action: &str, events: &Recorded) -> Result<Value, AgentError> {
    let deps = [(Arc::from("prev"), json!({"score": 0.5}))];
    let input = json!({"learner": "l1"});
    agent
        .call(AgentCall {
            plan_id: "p1",
            step_id: "s1",
            action,
            input: &input,
            dependencies: Dependencies(&deps),
            attempt: 2,
            events,
            state: &baton_agents::LocalState::default(),
        })
        .await
}

#[tokio::test]
async fn posts_the_step_and_returns_the_envelopes_data() {
    let a = agent(&serve().await, 5_000, 1 << 20);
    let out = call(&a, "echo", &Recorded::default()).await.unwrap();
    assert_eq!(
        out,
        json!({"planId": "p1", "stepId": "s1", "action": "echo", "input": {"learner": "l1"},
               "dependencies": {"prev": {"score": 0.5}}, "attempt": 2})
    );
}

#[tokio::test]
async fn insights_in_the_answer_are_emitted() {
    let a = agent(&serve().await, 5_000, 1 << 20);
    let events = Recorded::default();
    assert_eq!(call(&a, "insight", &events).await.unwrap(), json!(1));
    assert_eq!(
        *events.0.lock().unwrap(),
        vec![(
            "struggling_detected".to_string(),
            json!({"skill": "fractions"})
        )]
    );
}

#[tokio::test]
async fn failures_are_classified_for_the_retry_policy() {
    let a = agent(&serve().await, 5_000, 1 << 20);
    let events = Recorded::default();
    let fails = |action| call(&a, action, &events);

    let busy = fails("busy").await.unwrap_err();
    assert!(busy.retryable, "{busy:?}");
    assert!(
        busy.message.contains("429") && busy.message.contains("slow down"),
        "{busy:?}"
    );
    let broken = fails("broken").await.unwrap_err();
    assert!(broken.retryable, "{broken:?}");
    assert!(
        broken.message.contains("502") && broken.message.contains("upstream gone"),
        "{broken:?}"
    );
    let refused = fails("refuse").await.unwrap_err();
    assert!(!refused.retryable, "{refused:?}");
    assert!(
        refused.message.contains("400") && refused.message.contains("no such learner"),
        "{refused:?}"
    );
    let bare = fails("bare").await.unwrap_err();
    assert!(
        !bare.retryable && bare.message.contains("{\"data\": ...}"),
        "{bare:?}"
    );
    let notjson = fails("notjson").await.unwrap_err();
    assert!(!notjson.retryable, "{notjson:?}");

    // Nothing listens on this port any more: unreachable is retryable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = agent(&format!("http://127.0.0.1:{port}"), 5_000, 1 << 20);
    let unreachable = call(&gone, "echo", &Recorded::default()).await.unwrap_err();
    assert!(
        unreachable.retryable && unreachable.message.contains("could not be reached"),
        "{unreachable:?}"
    );
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retryable() {
    let a = agent(&serve().await, 100, 1 << 20);
    let started = std::time::Instant::now();
    let e = call(&a, "slow", &Recorded::default()).await.unwrap_err();
    assert!(
        e.retryable && e.message.contains("timed out after 100 ms"),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn answers_over_the_size_limit_are_refused() {
    let a = agent(&serve().await, 5_000, 1_000);
    let e = call(&a, "big", &Recorded::default()).await.unwrap_err();
    assert!(
        !e.retryable && e.message.contains("more than 1000 bytes"),
        "{e:?}"
    );
}

fn config(text: &str) -> Result<Registry, String> {
    let cfg: AgentsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    Registry::with_config(&cfg, "agents.toml").map_err(|e| e.to_string())
}

#[test]
fn an_agents_file_registers_http_agents() {
    let r = config(
        r#"
        [http]
        allowed_hosts = ["127.0.0.1"]
        [[agents]]
        kind = "http"
        id = "reading"
        url = "http://127.0.0.1:9"
        actions = ["analyze"]
        queue = "py"
        "#,
    )
    .unwrap();
    assert_eq!(r.queue_of("reading").as_deref(), Some("py"));
    assert!(r.check("reading", "analyze", &json!(null)).is_ok());
    assert!(r.check("reading", "summarize", &json!(null)).is_err());
    assert!(
        r.check("system", "noop", &json!(null)).is_ok(),
        "built-ins stay"
    );
}

#[test]
fn bad_agents_files_are_refused_with_every_reason() {
    let e = config(
        r#"
        [http]
        allowed_hosts = ["127.0.0.1"]
        [[agents]]
        kind = "http"
        id = "system"
        url = "http://127.0.0.1:9"
        actions = ["a"]
        [[agents]]
        kind = "http"
        id = "remote"
        url = "http://example.com/agent"
        actions = []
        timeout_ms = 0
        [[agents]]
        kind = "http"
        id = "odd"
        url = "ftp://127.0.0.1/x"
        actions = ["a/b"]
        "#,
    )
    .unwrap_err();
    for part in [
        "agents.toml: ",
        "agents[0] (id 'system'): the id is taken",
        "agents[1] (id 'remote').actions: name at least one action",
        "agents[1] (id 'remote').timeout_ms: must be at least 1",
        "agents[1] (id 'remote').url: host 'example.com' is not in http.allowed_hosts (127.0.0.1)",
        "agents[2] (id 'odd').actions: 'a/b' is not a valid action name",
        "agents[2] (id 'odd').url: scheme 'ftp' is not http or https",
    ] {
        assert!(e.contains(part), "missing {part:?} in: {e}");
    }
    let unknown = config("[[agents]]\nkind = \"grpc\"\nid = \"x\"\n").unwrap_err();
    assert!(unknown.contains("grpc"), "{unknown}");
    let typo = config(
        "[[agents]]\nkind = \"http\"\nid = \"x\"\nurl = \"http://h\"\nactions = [\"a\"]\ntimeout = 5\n",
    )
    .unwrap_err();
    assert!(typo.contains("timeout"), "{typo}");
}
