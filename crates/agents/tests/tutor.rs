//! The `tutor` agent against a local server that speaks the OpenAI
//! chat-completions API (axum on a free port): streamed and whole answers,
//! the conversation kept across calls, the bearer key, error classification
//! (429/5xx retryable, 4xx permanent) and the `[tutor]` settings checks.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use baton_agents::tutor::{Message, TutorAgent, TutorConfig};
use baton_agents::{
    Agent, AgentCall, AgentError, AgentsConfig, Dependencies, EventSink, LocalState, Registry,
};
use serde_json::{json, Value};

/// What the fake API saw: the messages and authorization of each request.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(Vec<Message>, Option<String>)>>,
}

async fn serve() -> (String, Arc<Seen>) {
    async fn chat(
        State(seen): State<Arc<Seen>>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, [(&'static str, &'static str); 1], String) {
        let messages: Vec<Message> = serde_json::from_value(body["messages"].clone()).unwrap();
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let n = messages.len();
        let last = messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        seen.requests.lock().unwrap().push((messages, auth));
        let json_type = [("content-type", "application/json")];
        let err = |code: StatusCode, msg: &str| {
            (
                code,
                json_type,
                json!({"error": {"message": msg}}).to_string(),
            )
        };
        if last.contains("trigger429") {
            return err(StatusCode::TOO_MANY_REQUESTS, "rate limited");
        }
        if last.contains("trigger500") {
            return err(StatusCode::INTERNAL_SERVER_ERROR, "overloaded");
        }
        if last.contains("trigger400") {
            return err(StatusCode::BAD_REQUEST, "bad request");
        }
        let reply = format!("reply to {n} messages");
        if body["stream"] == json!(true) {
            let mut sse = String::new();
            for piece in ["reply ", "to ", &format!("{n} messages")] {
                let chunk = json!({"choices": [{"delta": {"content": piece}}]});
                sse.push_str(&format!("data: {chunk}\n\n"));
            }
            sse.push_str("data: [DONE]\n\n");
            (StatusCode::OK, [("content-type", "text/event-stream")], sse)
        } else {
            let whole = json!({"choices": [{"message": {"role": "assistant", "content": reply}}]});
            (StatusCode::OK, json_type, whole.to_string())
        }
    }
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

fn tutor(base_url: &str, stream: bool, key_env: &str) -> TutorAgent {
    TutorAgent::new(TutorConfig {
        base_url: base_url.into(),
        model: "test-model".into(),
        api_key_env: key_env.into(),
        timeout_ms: 5_000,
        stream,
        max_history: 4,
        max_response_bytes: 1 << 20,
    })
    .unwrap()
}

#[derive(Default)]
struct Tokens(Mutex<Vec<String>>);

impl EventSink for Tokens {
    fn insight(&self, kind: &str, data: Value) {
        assert_eq!(kind, "tutor_token");
        self.0
            .lock()
            .unwrap()
            .push(data["delta"].as_str().unwrap().to_string());
    }
}

async fn call(
    agent: &TutorAgent,
    state: &LocalState,
    events: &Tokens,
    action: &str,
    input: Value,
) -> Result<Value, AgentError> {
    let deps = [(Arc::from("update"), json!({"mastery": 0.4}))];
    agent
        .call(AgentCall {
            plan_id: "p",
            step_id: "s",
            action,
            input: &input,
            dependencies: Dependencies(&deps),
            attempt: 1,
            events,
            state,
        })
        .await
}

#[tokio::test]
async fn a_streamed_conversation_is_kept_and_trimmed() {
    let (url, seen) = serve().await;
    // A key from an environment variable only this test sets.
    std::env::set_var("BATON_TEST_TUTOR_KEY_A", "sk-test");
    let t = tutor(&url, true, "BATON_TEST_TUTOR_KEY_A");
    let state = LocalState::default();
    let tokens = Tokens::default();
    let prep = call(
        &t,
        &state,
        &tokens,
        "prepare_conversation",
        json!({"learnerId": "l1", "subject": "fractions", "gradeLevel": 5}),
    )
    .await
    .unwrap();
    assert_eq!(prep["greeting"], "reply to 2 messages");
    assert!(prep["systemPrompt"]
        .as_str()
        .unwrap()
        .contains("grade 5, teaching fractions"));
    // Streamed: the tokens arrived one by one, in order.
    assert_eq!(*tokens.0.lock().unwrap(), ["reply ", "to ", "2 messages"]);

    let r = call(
        &t,
        &state,
        &tokens,
        "send_message",
        json!({"learnerId": "l1", "message": "what is 1/2 + 1/4?"}),
    )
    .await
    .unwrap();
    // system + user + assistant + this user message.
    assert_eq!(r["reply"], "reply to 4 messages");
    let fb = call(
        &t,
        &state,
        &tokens,
        "provide_feedback",
        json!({"learnerId": "l1", "answer": "3/4", "correct": true}),
    )
    .await
    .unwrap();
    // Trimmed: the system prompt and the last 4 messages, then the new one.
    assert_eq!(fb["feedback"], "reply to 6 messages");
    assert_eq!(fb["messages"], 5);

    let requests = seen.requests.lock().unwrap();
    assert_eq!(requests.len(), 3);
    for (_, auth) in requests.iter() {
        assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
    }
    let (last, _) = &requests[2];
    assert_eq!(last[0].role, "system");
    let asked = &last.last().unwrap().content;
    assert!(
        asked.contains("\"answer\":\"3/4\"") && asked.contains("\"mastery\":0.4"),
        "the feedback request carries the answer and the earlier steps: {asked}"
    );
}

#[tokio::test]
async fn whole_answers_work_without_streaming_and_without_a_key() {
    let (url, seen) = serve().await;
    let t = tutor(&url, false, "BATON_TEST_TUTOR_KEY_UNSET");
    let state = LocalState::default();
    let tokens = Tokens::default();
    let prep = call(
        &t,
        &state,
        &tokens,
        "prepare_conversation",
        json!({"learnerId": "l2"}),
    )
    .await
    .unwrap();
    assert_eq!(prep["greeting"], "reply to 2 messages");
    assert!(tokens.0.lock().unwrap().is_empty(), "nothing streamed");
    assert_eq!(
        seen.requests.lock().unwrap()[0].1,
        None,
        "no key, no header"
    );
}

#[tokio::test]
async fn api_errors_are_classified_and_nothing_is_saved() {
    let (url, _) = serve().await;
    let t = tutor(&url, true, "BATON_TEST_TUTOR_KEY_UNSET");
    let state = LocalState::default();
    let tokens = Tokens::default();
    call(
        &t,
        &state,
        &tokens,
        "prepare_conversation",
        json!({"learnerId": "l3"}),
    )
    .await
    .unwrap();
    let send = |message: &str| {
        call(
            &t,
            &state,
            &tokens,
            "send_message",
            json!({"learnerId": "l3", "message": message}),
        )
    };
    let limited = send("trigger429").await.unwrap_err();
    assert!(
        limited.retryable
            && limited.message.contains("429")
            && limited.message.contains("rate limited"),
        "{limited:?}"
    );
    let overloaded = send("trigger500").await.unwrap_err();
    assert!(
        overloaded.retryable && overloaded.message.contains("overloaded"),
        "{overloaded:?}"
    );
    let bad = send("trigger400").await.unwrap_err();
    assert!(
        !bad.retryable && bad.message.contains("bad request"),
        "{bad:?}"
    );
    // Failed turns were not saved: the next answer still counts 4 messages.
    let ok = send("hello").await.unwrap();
    assert_eq!(ok["reply"], "reply to 4 messages");
}

#[tokio::test]
async fn a_learner_without_a_conversation_is_a_permanent_error() {
    let (url, _) = serve().await;
    let t = tutor(&url, true, "BATON_TEST_TUTOR_KEY_UNSET");
    let e = call(
        &t,
        &LocalState::default(),
        &Tokens::default(),
        "send_message",
        json!({"learnerId": "nobody", "message": "hi"}),
    )
    .await
    .unwrap_err();
    assert!(
        !e.retryable && e.message.contains("run prepare_conversation first"),
        "{e:?}"
    );
}

#[test]
fn the_tutor_is_configured_in_the_agents_file() {
    let load = |text: &str| -> Result<Registry, String> {
        let cfg: AgentsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Registry::with_config(&cfg, "agents.toml").map_err(|e| e.to_string())
    };
    let r = load(
        "[http]\nallowed_hosts = [\"127.0.0.1\"]\n[tutor]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n",
    )
    .unwrap();
    assert!(r.get("tutor").is_some());
    assert!(
        load("").unwrap().get("tutor").is_none(),
        "no [tutor], no tutor"
    );
    let e =
        load("[tutor]\nbase_url = \"https://api.example.com/v1\"\nmodel = \"\"\nmax_history = 1\n")
            .unwrap_err();
    for part in [
        "tutor.base_url: host 'api.example.com' is not in http.allowed_hosts (empty)",
        "tutor.model: name the model",
        "tutor.max_history: keep at least 2 messages",
    ] {
        assert!(e.contains(part), "missing {part:?} in {e}");
    }
}
