//! Process-level tests of the `baton` binary: each test runs the real
//! executable (`CARGO_BIN_EXE_baton`) with `std::process::Command` and checks
//! its exit code, standard output (the result JSON) and standard error
//! (validation errors, events, the progress display).
//!
//! Tests are parallel-safe: plans written to disk go to uniquely named files
//! under the system temp directory, removed when the test ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Longest any one `baton` process may run before the test kills it.
const HARD_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn baton() -> &'static str {
    env!("CARGO_BIN_EXE_baton")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> PathBuf {
    let p = repo_root().join("examples").join(name);
    assert!(p.is_file(), "missing example {}", p.display());
    p
}

const EXAMPLES: [&str; 5] = [
    "session-init.json",
    "parallel-analysis.json",
    "fallback.json",
    "sequential-session.json",
    "learning-session.json",
];

/// A file under the temp directory, unique to this process and test, removed
/// on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(test: &str, contents: &[u8]) -> TempFile {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "baton-cli-test-{}-{test}-{n}.json",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("writing a temp plan");
        TempFile(path)
    }

    fn json(test: &str, plan: &Value) -> TempFile {
        TempFile::new(test, plan.to_string().as_bytes())
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a finished process left behind.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output parsed as exactly one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status.code(),
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Reads a pipe to the end on a thread of its own.
fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child`, killing it (and failing the test) past [`HARD_LIMIT`].
fn wait_bounded(child: &mut std::process::Child, started: Instant) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("waiting for baton") {
            return status;
        }
        if started.elapsed() > HARD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("baton ran for more than {HARD_LIMIT:?}; killed");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `program args`, feeding `stdin` (or nothing), and collects its output.
fn run_program(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_remove("BATON_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    let feeder = stdin.map(|bytes| {
        let bytes = bytes.to_vec();
        let mut pipe = child.stdin.take().expect("stdin pipe");
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_bounded(&mut child, started);
    let elapsed = started.elapsed();
    if let Some(f) = feeder {
        f.join().expect("stdin feeder");
    }
    Run {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        elapsed,
    }
}

fn run_baton(args: &[&str]) -> Run {
    run_program(baton(), args, None)
}

fn run_baton_stdin(args: &[&str], stdin: &[u8]) -> Run {
    run_program(baton(), args, Some(stdin))
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("path is UTF-8")
}

/// Runs a plan that must succeed and returns its result JSON.
fn run_ok(plan: &Path) -> Value {
    let r = run_baton(&["run", path_arg(plan)]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let v = r.json();
    assert_eq!(v["status"], "succeeded", "{}", r.describe());
    assert_eq!(v["success"], true, "{}", r.describe());
    v
}

/// The result's `results` object.
fn results(v: &Value) -> &serde_json::Map<String, Value> {
    v["results"].as_object().expect("results is an object")
}

/// Checks the fields every plan result carries.
fn assert_result_shape(v: &Value) {
    for key in [
        "planId",
        "status",
        "success",
        "duration",
        "results",
        "submittedAt",
        "startedAt",
        "finishedAt",
        "fallbackUsed",
    ] {
        assert!(v.get(key).is_some(), "result lacks `{key}`: {v:#}");
    }
    for (id, step) in results(v) {
        for key in ["success", "status", "data", "attempts", "duration"] {
            assert!(step.get(key).is_some(), "step {id} lacks `{key}`: {step:#}");
        }
    }
    let (s, st, f) = (
        v["submittedAt"].as_u64().unwrap(),
        v["startedAt"].as_u64().unwrap(),
        v["finishedAt"].as_u64().unwrap(),
    );
    assert!(s <= st && st <= f, "timestamps out of order: {v:#}");
}

/// Parses every non-empty line of `text` as one JSON event.
fn event_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {l:?}\n{text}"))
        })
        .collect()
}

fn assert_event_shape(events: &[Value]) {
    for e in events {
        assert!(e["type"].is_string(), "event without type: {e}");
        assert!(e["planId"].is_string(), "event without planId: {e}");
        assert!(e["timestamp"].is_u64(), "event without timestamp: {e}");
        assert!(e["id"].is_u64(), "event without id: {e}");
    }
}

fn event_types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `baton args` under a pseudo-terminal with `script`; `None` (after a
/// printed note) when `script` is missing or cannot open a terminal.
fn run_in_pty(test: &str, args: &[&str]) -> Option<Run> {
    if !which("script") {
        eprintln!("note: {test} skipped: the `script` utility is not installed");
        return None;
    }
    let cmd = std::iter::once(baton())
        .chain(args.iter().copied())
        .map(sh_quote)
        .collect::<Vec<_>>()
        .join(" ");
    let r = run_program("script", &["-qec", &cmd, "/dev/null"], None);
    let lower = format!("{}{}", r.stdout, r.stderr).to_lowercase();
    if r.code() != Some(0)
        && (lower.contains("pseudo-terminal")
            || lower.contains("openpty")
            || lower.contains("unrecognized option")
            || lower.contains("invalid option"))
    {
        eprintln!(
            "note: {test} skipped: `script` cannot run a pseudo-terminal here:\n{}",
            r.describe()
        );
        return None;
    }
    Some(r)
}

/// Terminal output with carriage returns and the progress bar's line clears
/// removed.
fn strip_terminal(s: &str) -> String {
    s.replace("\x1b[2K", "").replace('\r', "")
}

/// The pretty-printed result JSON at the end of terminal output.
fn result_in_terminal_output(out: &str) -> Value {
    let clean = strip_terminal(out);
    let start = clean
        .find("{\n  \"planId\"")
        .unwrap_or_else(|| panic!("no result JSON in terminal output:\n{clean}"));
    serde_json::from_str(clean[start..].trim())
        .unwrap_or_else(|e| panic!("result JSON does not parse ({e}):\n{}", &clean[start..]))
}

// ---------------------------------------------------------------------------
// 1. `baton run` of every example
// ---------------------------------------------------------------------------

#[test]
fn run_every_example_succeeds_with_one_result_document() {
    for name in EXAMPLES {
        let r = run_baton(&["run", path_arg(&example(name))]);
        assert_eq!(r.code(), Some(0), "{name}: {}", r.describe());
        let v = r.json();
        assert_eq!(v["status"], "succeeded", "{name}: {v:#}");
        assert_eq!(v["success"], true, "{name}: {v:#}");
        assert_result_shape(&v);
        // Without a terminal there is no progress display, and nothing is
        // logged on a clean run.
        assert!(
            r.stderr.trim().is_empty(),
            "{name}: unexpected stderr:\n{}",
            r.stderr
        );
    }
}

#[test]
fn run_session_init() {
    let v = run_ok(&example("session-init.json"));
    assert_eq!(v["planId"], "session_learner_123");
    assert_eq!(v["fallbackUsed"], false);
    assert!(v.get("errors").is_none(), "{v:#}");
    let r = results(&v);
    assert_eq!(
        r.keys().collect::<Vec<_>>(),
        ["init_learning", "init_tutor"],
        "results in listed order"
    );
    let input =
        json!({"subject": "mathematics", "gradeLevel": 5, "sessionId": "session_learner_123"});
    assert_eq!(r["init_learning"]["data"]["input"], input);
    assert_eq!(r["init_tutor"]["data"]["input"], input);
    // init_tutor depends on init_learning and sees its result.
    assert_eq!(
        r["init_tutor"]["data"]["dependencies"]["init_learning"],
        r["init_learning"]["data"]
    );
    for step in r.values() {
        assert_eq!(step["status"], "succeeded");
        assert_eq!(step["attempts"], 1);
    }
}

#[test]
fn run_parallel_analysis() {
    let v = run_ok(&example("parallel-analysis.json"));
    assert_eq!(v["planId"], "multi_agent_analysis");
    assert_eq!(v["fallbackUsed"], false);
    let r = results(&v);
    assert_eq!(
        r.keys().collect::<Vec<_>>(),
        [
            "learning_analysis",
            "speech_analysis",
            "tutor_analysis",
            "combine_report"
        ]
    );
    assert_eq!(r["learning_analysis"]["data"], json!({"sleptMs": 300}));
    assert_eq!(r["speech_analysis"]["data"], json!({"sleptMs": 200}));
    assert_eq!(r["tutor_analysis"]["attempts"], 2);
    assert_eq!(r["tutor_analysis"]["data"], json!({"attempts": 2}));
    assert_eq!(r["tutor_analysis"]["status"], "succeeded");
    // The join gathers the three analyses.
    let combined = r["combine_report"]["data"].as_object().unwrap();
    assert_eq!(
        combined.keys().collect::<Vec<_>>(),
        ["learning_analysis", "speech_analysis", "tutor_analysis"]
    );
    for (id, data) in combined {
        assert_eq!(data, &r[id]["data"], "combine_report.{id}");
    }
    // The analyses ran in parallel: the plan took less than the two sleeps
    // back to back.
    let d = v["duration"].as_u64().unwrap();
    let sleeps = r["learning_analysis"]["duration"].as_u64().unwrap()
        + r["speech_analysis"]["duration"].as_u64().unwrap();
    assert!(d >= 300 && d < sleeps, "duration {d} ms: {v:#}");
}

#[test]
fn run_fallback() {
    let v = run_ok(&example("fallback.json"));
    assert_eq!(v["planId"], "predict_with_fallback");
    assert_eq!(v["fallbackUsed"], true);
    assert_eq!(v["primaryStatus"], "failed");
    let primary = &results(&v)["ml_predict"];
    assert_eq!(primary["status"], "failed");
    assert_eq!(primary["success"], false);
    assert_eq!(primary["attempts"], 2, "maxRetries 1 means two attempts");
    assert_eq!(primary["error"], "model unavailable");
    assert_eq!(v["errors"]["ml_predict"], "model unavailable");

    let fb = &v["fallback"];
    assert!(
        fb["planId"].as_str().unwrap().ends_with("/fallback"),
        "{fb:#}"
    );
    assert_eq!(fb["planId"], "predict_with_fallback/fallback");
    assert_eq!(fb["status"], "succeeded");
    assert_eq!(fb["success"], true);
    assert_result_shape(fb);
    let step = &results(fb)["gpt4_predict"];
    assert_eq!(step["status"], "succeeded");
    assert_eq!(step["data"]["input"], json!({"strategy": "llm"}));
}

#[test]
fn run_sequential_session() {
    let v = run_ok(&example("sequential-session.json"));
    assert_eq!(v["planId"], "learning_session");
    let r = results(&v);
    assert_eq!(r.len(), 4);
    assert_eq!(
        r.keys().collect::<Vec<_>>(),
        ["init", "activity_1", "tutor_feedback", "activity_2"]
    );
    for (id, step) in r {
        assert_eq!(step["status"], "succeeded", "{id}");
        assert_eq!(step["success"], true, "{id}");
        assert_eq!(step["attempts"], 1, "{id}");
    }
    assert_eq!(
        r["tutor_feedback"]["data"]["dependencies"]["activity_1"],
        json!({"sleptMs": 100})
    );
    // One step at a time: at least the two 100 ms sleeps back to back.
    assert!(v["duration"].as_u64().unwrap() >= 200, "{v:#}");
}

// ---------------------------------------------------------------------------
// 2. An invalid plan
// ---------------------------------------------------------------------------

#[test]
fn run_cycle_is_rejected_with_exit_2() {
    let plan = repo_root().join("examples/invalid/cycle.json");
    let r = run_baton(&["run", path_arg(&plan)]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert_eq!(r.stdout, "", "nothing on stdout for a rejected plan");
    assert!(r.stderr.contains("a -> b -> c -> a"), "{}", r.describe());
    assert!(
        r.stderr.contains("$.steps[0].dependencies"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr
            .contains("$.steps[0].dependencies: dependency cycle: a -> b -> c -> a"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("invalid plan"), "{}", r.describe());
}

// ---------------------------------------------------------------------------
// 3. The plan from standard input
// ---------------------------------------------------------------------------

#[test]
fn run_reads_the_plan_from_stdin() {
    let text = std::fs::read(example("session-init.json")).unwrap();
    let r = run_baton_stdin(&["run", "-"], &text);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let v = r.json();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["planId"], "session_learner_123");
    assert_eq!(results(&v).len(), 2);
}

#[test]
fn run_from_stdin_rejects_an_invalid_plan() {
    let text = std::fs::read(repo_root().join("examples/invalid/cycle.json")).unwrap();
    let r = run_baton_stdin(&["run", "-"], &text);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("a -> b -> c -> a"), "{}", r.describe());
}

#[test]
fn validate_reads_the_plan_from_stdin() {
    let text = std::fs::read(example("fallback.json")).unwrap();
    let r = run_baton_stdin(&["validate", "-"], &text);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert!(r.stdout.contains("valid"), "{}", r.describe());
    assert!(r.stdout.contains("fallback depth 1"), "{}", r.describe());
}

// ---------------------------------------------------------------------------
// 4. Plans that fail or time out
// ---------------------------------------------------------------------------

#[test]
fn run_failed_plan_exits_1_with_failed_result() {
    let plan = TempFile::json(
        "failed",
        &json!({
            "id": "doomed",
            "steps": [
                {"id": "boom", "agentId": "system", "action": "fail",
                 "input": {"permanent": true, "message": "broken for good"},
                 "retryPolicy": {"maxRetries": 3, "backoffMs": 10}},
                {"id": "after", "agentId": "system", "action": "noop", "dependencies": ["boom"]}
            ]
        }),
    );
    let r = run_baton(&["run", plan.arg()]);
    assert_eq!(r.code(), Some(1), "{}", r.describe());
    let v = r.json();
    assert_result_shape(&v);
    assert_eq!(v["planId"], "doomed");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["success"], false);
    let boom = &results(&v)["boom"];
    assert_eq!(boom["status"], "failed");
    assert_eq!(boom["attempts"], 1, "a permanent failure is not retried");
    assert_eq!(boom["error"], "broken for good");
    assert_eq!(results(&v)["after"]["status"], "skipped");
    assert_eq!(v["errors"]["boom"], "broken for good");
}

fn timeout_plan(test: &str, sleep_ms: u64) -> TempFile {
    TempFile::json(
        test,
        &json!({
            "steps": [
                {"id": "slow", "agentId": "system", "action": "sleep", "input": {"ms": sleep_ms}}
            ],
            "timeout": 100
        }),
    )
}

fn assert_timed_out(r: &Run) {
    assert_eq!(r.code(), Some(1), "{}", r.describe());
    let v = r.json();
    assert_result_shape(&v);
    assert_eq!(v["status"], "timed_out", "{v:#}");
    assert_eq!(v["success"], false);
    let slow = &results(&v)["slow"];
    assert_ne!(slow["status"], "succeeded", "{v:#}");
    assert!(
        slow["error"].as_str().unwrap_or("").contains("timed out"),
        "{v:#}"
    );
    let d = v["duration"].as_u64().unwrap();
    assert!((100..1000).contains(&d), "plan duration {d} ms: {v:#}");
}

/// Status and exit code of a timed-out plan (the step sleeps 1 s only, so
/// that the slow exit of [`run_timed_out_plan_exits_promptly`] costs little).
#[test]
fn run_timed_out_plan_exits_1_with_timed_out_result() {
    let plan = timeout_plan("timed-out", 1000);
    let r = run_baton(&["run", plan.arg()]);
    assert_timed_out(&r);
}

#[test]
fn run_timed_out_plan_exits_promptly() {
    let plan = timeout_plan("timed-out-promptly", 5000);
    let r = run_baton(&["run", plan.arg()]);
    assert_timed_out(&r);
    assert!(
        r.elapsed < Duration::from_secs(3),
        "baton took {:?} to exit after a 100 ms plan timeout",
        r.elapsed
    );
}

/// A `baton run --events` in progress, its event lines delivered as they
/// arrive with the time since the spawn.
struct LiveRun {
    child: std::process::Child,
    started: Instant,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
    lines: mpsc::Receiver<(Duration, String)>,
}

impl LiveRun {
    fn spawn(args: &[&str]) -> LiveRun {
        let started = Instant::now();
        let mut child = Command::new(baton())
            .args(args)
            .env_remove("BATON_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning baton");
        let stdout = drain(child.stdout.take());
        let (tx, lines) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send((started.elapsed(), line.clone()));
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        LiveRun {
            child,
            started,
            stdout,
            stderr,
            lines,
        }
    }

    /// Waits up to `limit` for an event line of type `ty`; returns when it
    /// arrived (since the spawn).
    fn wait_for(&self, ty: &str, limit: Duration) -> Option<Duration> {
        let needle = format!("\"type\":\"{ty}\"");
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(&needle) => return Some(at),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn finish(mut self) -> (Run, Vec<(Duration, String)>) {
        let status = wait_bounded(&mut self.child, self.started);
        let elapsed = self.started.elapsed();
        let run = Run {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
            elapsed,
        };
        (run, self.lines.try_iter().collect())
    }
}

/// Runs a plan whose one step sleeps `sleep_ms`, sends SIGINT once the step
/// has started, and returns the run with the time from SIGINT to exit.
/// `None` when there is no `kill` command.
fn run_and_interrupt(test: &str, sleep_ms: u64) -> Option<(Run, Duration)> {
    if !which("kill") {
        eprintln!("note: {test} skipped: no `kill` command");
        return None;
    }
    let plan = TempFile::json(
        test,
        &json!({
            "id": format!("interrupted-{}", std::process::id()),
            "steps": [
                {"id": "slow", "agentId": "system", "action": "sleep", "input": {"ms": sleep_ms}}
            ]
        }),
    );
    let live = LiveRun::spawn(&["run", "--events", plan.arg()]);
    // The step:started line may come late (see
    // `run_events_are_printed_as_they_happen`); by a second in, the run loop
    // waits on its Ctrl-C handler either way.
    let _ = live.wait_for("step:started", Duration::from_secs(1));
    thread::sleep(Duration::from_millis(200));
    let interrupted = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &live.child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success(), "kill -INT failed");
    let (run, _) = live.finish();
    Some((run, interrupted.elapsed()))
}

fn assert_cancelled(r: &Run) {
    assert_eq!(r.code(), Some(1), "{}", r.describe());
    let v = r.json();
    assert_eq!(v["status"], "cancelled", "{v:#}");
    assert_eq!(v["success"], false);
    assert_ne!(results(&v)["slow"]["status"], "succeeded");
}

#[test]
fn run_cancels_the_plan_on_sigint() {
    let Some((r, _)) = run_and_interrupt("sigint", 2000) else {
        return;
    };
    assert_cancelled(&r);
    let types = event_types(&event_lines(&r.stderr))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(
        types.last().map(String::as_str),
        Some("plan:cancelled"),
        "{}",
        r.describe()
    );
}

#[test]
fn run_exits_promptly_on_sigint() {
    let Some((r, after_signal)) = run_and_interrupt("sigint-promptly", 5000) else {
        return;
    };
    assert_cancelled(&r);
    assert!(
        after_signal < Duration::from_secs(3),
        "baton took {after_signal:?} to exit after SIGINT"
    );
}

// ---------------------------------------------------------------------------
// 5. Unreadable plans
// ---------------------------------------------------------------------------

#[test]
fn run_malformed_json_exits_2() {
    let plan = TempFile::new("malformed", b"{\"steps\": [\n  {\"id\": }\n");
    let r = run_baton(&["run", plan.arg()]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains("malformed JSON at line 2"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains(plan.arg()), "{}", r.describe());
}

#[test]
fn validate_malformed_json_exits_2() {
    let plan = TempFile::new("malformed-validate", b"{\"steps\": [}");
    let r = run_baton(&["validate", plan.arg()]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("malformed JSON at line 1"),
        "{}",
        r.describe()
    );
}

#[test]
fn run_missing_file_fails_naming_the_file() {
    let missing = std::env::temp_dir().join(format!(
        "baton-cli-test-{}-does-not-exist.json",
        std::process::id()
    ));
    for cmd in ["run", "validate"] {
        let r = run_baton(&[cmd, path_arg(&missing)]);
        assert_ne!(r.code(), Some(0), "{cmd}: {}", r.describe());
        assert!(r.code().is_some(), "{cmd}: killed by a signal");
        assert_eq!(r.stdout, "", "{cmd}");
        assert!(
            r.stderr.contains(path_arg(&missing)),
            "{cmd}: {}",
            r.describe()
        );
    }
}

#[test]
fn run_empty_file_exits_2() {
    let plan = TempFile::new("empty", b"");
    let r = run_baton(&["run", plan.arg()]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("malformed JSON"), "{}", r.describe());

    let r = run_baton(&["validate", plan.arg()]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());

    let r = run_baton_stdin(&["run", "-"], b"");
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert_eq!(r.stdout, "");
}

// ---------------------------------------------------------------------------
// 6. `baton validate`
// ---------------------------------------------------------------------------

#[test]
fn validate_valid_examples() {
    for (name, steps, depth) in [
        ("session-init.json", 2, 0),
        ("parallel-analysis.json", 4, 0),
        ("fallback.json", 1, 1),
        ("sequential-session.json", 4, 0),
    ] {
        let path = example(name);
        let r = run_baton(&["validate", path_arg(&path)]);
        assert_eq!(r.code(), Some(0), "{name}: {}", r.describe());
        assert!(r.stdout.contains("valid"), "{name}: {}", r.describe());
        assert!(!r.stdout.contains("invalid"), "{name}: {}", r.describe());
        assert!(
            r.stdout.contains(&if steps == 1 {
                "(1 step,".to_string()
            } else {
                format!("({steps} steps,")
            }),
            "{name}: {}",
            r.describe()
        );
        assert!(
            r.stdout.contains(&format!("fallback depth {depth}")),
            "{name}: {}",
            r.describe()
        );
        assert!(r.stdout.contains(path_arg(&path)), "{name}");
        assert_eq!(r.stderr, "", "{name}");
    }
}

#[test]
fn validate_lists_every_error() {
    let plan = TempFile::json(
        "many-errors",
        &json!({
            "id": "bad id!",
            "timeout": -5,
            "steps": [
                {"id": "a", "agentId": "nobody", "action": "x"},
                {"id": "a", "agentId": "system", "action": "sleep", "input": {}},
                {"id": "c", "agentId": "system", "action": "noop",
                 "dependencies": ["zz"], "retryPolicy": {"maxRetries": -1}}
            ]
        }),
    );
    let expected_paths = [
        "$.id",
        "$.timeout",
        "$.steps[1].id",
        "$.steps[0].agentId",
        "$.steps[1].input",
        "$.steps[2].dependencies[0]",
        "$.steps[2].retryPolicy.maxRetries",
    ];
    for cmd in ["validate", "run"] {
        let r = run_baton(&[cmd, plan.arg()]);
        assert_eq!(r.code(), Some(2), "{cmd}: {}", r.describe());
        assert_eq!(r.stdout, "", "{cmd}");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert!(
            lines[0].contains(&format!("invalid plan ({} errors)", expected_paths.len())),
            "{cmd}: {}",
            r.describe()
        );
        // One error per line, each "path: message".
        let errors: Vec<&str> = lines[1..].iter().map(|l| l.trim()).collect();
        assert_eq!(
            errors.len(),
            expected_paths.len(),
            "{cmd}: {}",
            r.describe()
        );
        for path in expected_paths {
            let prefix = format!("{path}: ");
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&prefix) && e.len() > prefix.len()),
                "{cmd}: no error line for {path}:\n{}",
                r.stderr
            );
        }
        for e in &errors {
            assert!(e.starts_with('$') && e.contains(": "), "{cmd}: {e:?}");
        }
        assert!(r.stderr.contains("duplicate step id 'a'"), "{cmd}");
        assert!(r.stderr.contains("unknown agent 'nobody'"), "{cmd}");
        assert!(r.stderr.contains("unknown step 'zz'"), "{cmd}");
    }
}

#[test]
fn validate_cycle_exits_2() {
    let plan = repo_root().join("examples/invalid/cycle.json");
    let r = run_baton(&["validate", path_arg(&plan)]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert_eq!(r.stdout, "");
    assert!(r
        .stderr
        .lines()
        .any(|l| l.trim() == "$.steps[0].dependencies: dependency cycle: a -> b -> c -> a"));
}

// ---------------------------------------------------------------------------
// 7. `baton schema`
// ---------------------------------------------------------------------------

fn schema() -> Value {
    let r = run_baton(&["schema"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert_eq!(r.stderr, "");
    r.json()
}

/// The schema's definitions (`$defs` or the older `definitions`).
fn defs(schema: &Value) -> &serde_json::Map<String, Value> {
    schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object)
        .expect("schema has $defs or definitions")
}

/// Resolves a local `$ref` (`#`, `#/$defs/X`, `#/definitions/X`).
fn resolve<'a>(root: &'a Value, reference: &str) -> &'a Value {
    if reference == "#" {
        return root;
    }
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("non-local $ref {reference}"));
    root.pointer(pointer)
        .unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown schema type {other}"),
    }
}

/// A small structural JSON Schema check: `$ref`, `anyOf`, `type`, `enum`,
/// `minimum`, `required`, `properties`, `additionalProperties: false`,
/// `items`. Pushes one message per violation.
fn check_schema(root: &Value, schema: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if schema == &Value::Bool(true) {
        return;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        check_schema(root, resolve(root, r), v, path, errs);
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        let ok = branches.iter().any(|b| {
            let mut e = Vec::new();
            check_schema(root, b, v, path, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(format!("{path}: matches no anyOf branch"));
        }
    }
    if let Some(ty) = schema.get("type") {
        let ok = match ty {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)),
            _ => panic!("bad type keyword {ty}"),
        };
        if !ok {
            errs.push(format!("{path}: {v} is not of type {ty}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            errs.push(format!("{path}: {v} not in {options:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errs.push(format!("{path}: {n} < minimum {min}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for k in req {
                if !obj.contains_key(k.as_str().unwrap()) {
                    errs.push(format!("{path}: missing required {k}"));
                }
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check_schema(root, s, val, &format!("{path}.{k}"), errs),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errs.push(format!("{path}: unexpected property {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check_schema(root, items, item, &format!("{path}[{i}]"), errs);
        }
    }
}

fn schema_errors(schema: &Value, plan: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    check_schema(schema, schema, plan, "$", &mut errs);
    errs
}

#[test]
fn schema_describes_the_plan_format() {
    let s = schema();
    assert!(
        s["$schema"]
            .as_str()
            .is_some_and(|u| u.contains("json-schema.org")),
        "{s:#}"
    );
    assert_eq!(s["title"], "baton orchestration plan");
    assert_eq!(s["type"], "object");
    let props = s["properties"].as_object().expect("properties");
    for key in [
        "id",
        "steps",
        "parallel",
        "timeout",
        "failFast",
        "fallbackPlan",
    ] {
        assert!(props.contains_key(key), "plan property {key} missing");
    }
    assert_eq!(s["required"], json!(["steps"]));
    assert_eq!(props["steps"]["type"], "array");
    assert_eq!(props["parallel"]["type"], "boolean");
    assert_eq!(props["parallel"]["default"], true);

    // Steps are described in the definitions, through a $ref.
    let step_ref = props["steps"]["items"]["$ref"]
        .as_str()
        .expect("steps.items is a $ref");
    let step = resolve(&s, step_ref);
    assert!(defs(&s).values().any(|d| d == step));
    let step_props = step["properties"].as_object().expect("step properties");
    for key in [
        "id",
        "agentId",
        "action",
        "input",
        "dependencies",
        "retryPolicy",
        "timeout",
    ] {
        assert!(step_props.contains_key(key), "step property {key} missing");
    }
    assert_eq!(step["required"], json!(["id"]));
    assert_eq!(step_props["dependencies"]["items"]["type"], "string");

    // The retry policy, also a definition.
    let retry = defs(&s)
        .values()
        .find(|d| d["properties"].get("maxRetries").is_some())
        .expect("a retry policy definition");
    for key in [
        "maxRetries",
        "backoffMs",
        "strategy",
        "maxBackoffMs",
        "jitter",
    ] {
        assert!(
            retry["properties"].get(key).is_some(),
            "retry property {key} missing"
        );
    }
    let mut strategies = Vec::new();
    check_schema(
        &s,
        &retry["properties"]["strategy"],
        &json!("sometimes"),
        "$",
        &mut strategies,
    );
    assert!(!strategies.is_empty(), "an unknown strategy must not match");

    // The fallback plan is a plan again.
    assert!(
        props["fallbackPlan"].to_string().contains("\"$ref\":\"#\""),
        "{:#}",
        props["fallbackPlan"]
    );
}

#[test]
fn schema_accepts_every_example_and_rejects_structural_errors() {
    let s = schema();
    let mut plans: Vec<(String, Value)> = EXAMPLES
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(example(n)).unwrap();
            (n.to_string(), serde_json::from_str(&text).unwrap())
        })
        .collect();
    // A cycle is a semantic error the schema cannot express.
    let cycle = std::fs::read_to_string(repo_root().join("examples/invalid/cycle.json")).unwrap();
    plans.push((
        "invalid/cycle.json".into(),
        serde_json::from_str(&cycle).unwrap(),
    ));
    for (name, plan) in &plans {
        let errs = schema_errors(&s, plan);
        assert!(
            errs.is_empty(),
            "{name} does not match the schema: {errs:#?}"
        );
    }

    for bad in [
        json!({}),
        json!({"steps": [], "bogus": 1}),
        json!({"steps": "nope"}),
        json!({"steps": [{"agentId": "system"}]}),
        json!({"steps": [{"id": "a", "retries": 1}]}),
        json!({"steps": [{"id": "a", "dependencies": [1]}]}),
        json!({"steps": [{"id": "a", "retryPolicy": {"backoffMs": 10}}]}),
        json!({"steps": [{"id": "a"}], "timeout": 0}),
        json!({"steps": [{"id": "a"}], "parallel": "yes"}),
        json!({"steps": [{"id": "a"}], "fallbackPlan": {"steps": [{"id": "b", "x": 1}]}}),
    ] {
        assert!(
            !schema_errors(&s, &bad).is_empty(),
            "schema accepts {bad} (baton rejects it)"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. `baton run --events`
// ---------------------------------------------------------------------------

/// Checks an event stream: shape, order, first and last event, and that no
/// event of the store was left out (ids count up by one from 1: the run's
/// store holds only this plan and its fallbacks).
fn assert_event_stream(events: &[Value], root: &str) {
    assert!(!events.is_empty(), "no events");
    assert_event_shape(events);
    let types = event_types(events);
    assert_eq!(types.first(), Some(&"plan:submitted"), "{types:?}");
    assert_eq!(types.last(), Some(&"plan:completed"), "{types:?}");
    assert_eq!(events[0]["planId"], root);
    assert_eq!(events.last().unwrap()["planId"], root);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["id"].as_u64(),
            Some(i as u64 + 1),
            "event {i} out of order or an event is missing: {e}"
        );
        let plan = e["planId"].as_str().unwrap();
        assert!(
            plan == root || plan.starts_with(&format!("{root}/fallback")),
            "event of another plan: {e}"
        );
    }
    let mut last = 0;
    for e in events {
        let t = e["timestamp"].as_u64().unwrap();
        assert!(t + 5 >= last, "timestamps run backwards: {e}");
        last = last.max(t);
    }
}

#[test]
fn run_events_prints_every_event_as_a_json_line() {
    let r = run_baton(&[
        "run",
        "--events",
        path_arg(&example("parallel-analysis.json")),
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    // The result still goes to stdout, alone.
    assert_eq!(r.json()["status"], "succeeded");
    let events = event_lines(&r.stderr);
    assert_event_stream(&events, "multi_agent_analysis");
    let types = event_types(&events);
    assert_eq!(types[1], "plan:started");
    let count = |t: &str| types.iter().filter(|&&x| x == t).count();
    assert_eq!(count("plan:submitted"), 1);
    assert_eq!(count("plan:completed"), 1);
    assert_eq!(count("step:completed"), 4);
    assert_eq!(count("step:retrying"), 1, "tutor_analysis retried once");
    assert_eq!(count("step:started"), 5, "4 steps, one of them twice");
    // Each step starts before it completes; the join completes last.
    for step in [
        "learning_analysis",
        "speech_analysis",
        "tutor_analysis",
        "combine_report",
    ] {
        let pos = |t: &str| {
            events
                .iter()
                .position(|e| e["type"] == t && e["stepId"] == step)
                .unwrap_or_else(|| panic!("no {t} for {step}"))
        };
        assert!(pos("step:started") < pos("step:completed"), "{step}");
    }
    let completions: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "step:completed")
        .map(|e| e["stepId"].as_str().unwrap())
        .collect();
    assert_eq!(completions.last(), Some(&"combine_report"));
}

#[test]
fn run_events_follows_the_fallback_plan() {
    let r = run_baton(&["run", "--events", path_arg(&example("fallback.json"))]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert_eq!(r.json()["fallbackUsed"], true);
    let events = event_lines(&r.stderr);
    assert_event_stream(&events, "predict_with_fallback");
    let types = event_types(&events);
    let fallback = types
        .iter()
        .position(|&t| t == "plan:fallback")
        .expect("a plan:fallback event");
    assert!(types[..fallback].contains(&"step:dead_lettered"));
    assert!(events
        .iter()
        .any(|e| e["planId"] == "predict_with_fallback/fallback" && e["type"] == "plan:completed"));
}

#[test]
fn run_without_events_is_silent_on_stderr() {
    let r = run_baton(&["run", path_arg(&example("fallback.json"))]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert_eq!(r.stderr, "");
}

/// Events reach stderr while the plan runs, not when the next event comes.
/// Regression guard: progress.rs keeps events received before
/// `Watcher::follow` names the plan and replays them only when another event
/// arrives; with the multi-thread runtime `baton run` used before, all of a
/// plan's first events came before `follow` in about 1 run in 8 and nothing
/// was printed until the step ended. The one-thread runtime hides the race.
#[test]
fn run_events_are_printed_as_they_happen() {
    let plan = TempFile::json(
        "live-events",
        &json!({"id": "live", "steps": [
            {"id": "slow", "agentId": "system", "action": "sleep", "input": {"ms": 500}}
        ]}),
    );
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let path = plan.arg().to_string();
            thread::spawn(move || {
                let live = LiveRun::spawn(&["run", "--events", &path]);
                let (run, lines) = live.finish();
                let at = |ty: &str| {
                    let needle = format!("\"type\":\"{ty}\"");
                    lines
                        .iter()
                        .find(|(_, l)| l.contains(&needle))
                        .map(|(at, _)| *at)
                        .unwrap_or_else(|| panic!("no {ty} line:\n{}", run.describe()))
                };
                (at("step:started"), at("step:completed"))
            })
        })
        .collect();
    for h in handles {
        let (started, completed) = h.join().unwrap();
        // The step sleeps 500 ms between the two events; a step:started line
        // held back until step:completed arrives with it.
        assert!(
            completed.saturating_sub(started) >= Duration::from_millis(250),
            "step:started printed at {started:?}, step:completed at {completed:?}"
        );
    }
}

#[test]
fn run_events_never_drops_events() {
    let steps: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"id": format!("s{i}"), "agentId": "system", "action": "fail",
                   "input": {"times": 2}, "retryPolicy": {"maxRetries": 2, "backoffMs": 0}})
        })
        .collect();
    let plan = TempFile::json("many-events", &json!({"id": "busy", "steps": steps}));
    let r = run_baton(&["run", "--events", plan.arg()]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let events = event_lines(&r.stderr);
    // Per step: 3 x step:started, 2 x (agent:error, step:failed,
    // step:retrying), 1 x step:completed; plus the plan's 3 events.
    assert_eq!(events.len(), 1000 * 10 + 3, "events were dropped");
    assert_event_stream(&events, "busy");
}

// ---------------------------------------------------------------------------
// 9. The progress display on a terminal
// ---------------------------------------------------------------------------

#[test]
fn progress_display_on_a_terminal() {
    let plan = example("parallel-analysis.json");
    let Some(r) = run_in_pty("progress_display_on_a_terminal", &["run", path_arg(&plan)]) else {
        return;
    };
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert!(r.stdout.contains("steps"), "no progress bar:\n{}", r.stdout);
    assert!(
        r.stdout.contains("\x1b[2K"),
        "the bar is not cleared:\n{:?}",
        r.stdout
    );
    let v = result_in_terminal_output(&r.stdout);
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["planId"], "multi_agent_analysis");
}

#[test]
fn no_progress_hides_the_display_on_a_terminal() {
    let plan = example("parallel-analysis.json");
    let Some(r) = run_in_pty(
        "no_progress_hides_the_display_on_a_terminal",
        &["run", "--no-progress", path_arg(&plan)],
    ) else {
        return;
    };
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert!(!r.stdout.contains("steps"), "bar shown:\n{}", r.stdout);
    assert!(!r.stdout.contains("\x1b["), "escape codes:\n{:?}", r.stdout);
    let v = result_in_terminal_output(&r.stdout);
    assert_eq!(v["status"], "succeeded");
    // Nothing but the result was printed.
    let clean = strip_terminal(&r.stdout);
    assert!(clean.trim_start().starts_with('{'), "{clean}");
}

#[test]
fn events_on_a_terminal_are_not_mixed_with_the_bar() {
    let plan = example("parallel-analysis.json");
    let Some(r) = run_in_pty(
        "events_on_a_terminal_are_not_mixed_with_the_bar",
        &["run", "--events", path_arg(&plan)],
    ) else {
        return;
    };
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    // Each "\r\x1b[2K" returns to the line start and clears it; what is left
    // of a line after the last clear is what the terminal shows.
    let shown: Vec<String> = r
        .stdout
        .split('\n')
        .map(|l| {
            let l = l.trim_end_matches('\r');
            l.rsplit("\r\x1b[2K").next().unwrap_or(l).to_string()
        })
        .collect();
    let event_lines: Vec<&String> = shown.iter().filter(|l| l.contains("\"type\":")).collect();
    assert_eq!(event_lines.len(), 15, "{shown:#?}");
    for l in event_lines {
        assert!(
            l.starts_with('{'),
            "event line garbled by the progress bar: {l:?}"
        );
        serde_json::from_str::<Value>(l).expect("event line is JSON");
    }
}

// ---------------------------------------------------------------------------
// 10. Help and usage
// ---------------------------------------------------------------------------

#[test]
fn help_lists_the_commands() {
    let r = run_baton(&["--help"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    for word in ["run", "validate", "schema", "Usage"] {
        assert!(
            r.stdout.contains(word),
            "--help lacks {word}:\n{}",
            r.stdout
        );
    }
    let r = run_baton(&["help"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert!(r.stdout.contains("validate"));
}

#[test]
fn run_help_describes_its_options() {
    let r = run_baton(&["run", "--help"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    for word in [
        "baton run",
        "[FILE]",
        "--template",
        "--events",
        "--no-progress",
        "--workers",
        "--concurrency",
    ] {
        assert!(
            r.stdout.contains(word),
            "run --help lacks {word}:\n{}",
            r.stdout
        );
    }
    for cmd in ["validate", "schema"] {
        let r = run_baton(&[cmd, "--help"]);
        assert_eq!(r.code(), Some(0), "{cmd}: {}", r.describe());
        assert!(
            r.stdout.contains(&format!("baton {cmd}")),
            "{cmd}: {}",
            r.stdout
        );
    }
}

#[test]
fn version_and_usage_errors() {
    let r = run_baton(&["--version"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert!(r.stdout.starts_with("baton "), "{}", r.stdout);

    for args in [&[][..], &["frobnicate"][..], &["run"][..]] {
        let r = run_baton(args);
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.describe());
        assert_eq!(r.stdout, "", "{args:?}");
        assert!(r.stderr.contains("Usage"), "{args:?}: {}", r.describe());
    }
}

#[test]
fn run_with_one_worker_and_concurrency_one() {
    let r = run_baton(&[
        "run",
        "--workers",
        "1",
        "--concurrency",
        "1",
        path_arg(&example("parallel-analysis.json")),
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let v = r.json();
    assert_eq!(v["status"], "succeeded");
    // One step at a time: the two sleeps (300 + 200 ms) no longer overlap.
    assert!(v["duration"].as_u64().unwrap() >= 500, "{v:#}");
}

// ---------------------------------------------------------------------------
// Limits from flags and the environment
// ---------------------------------------------------------------------------

#[test]
fn limits_come_from_flags() {
    let plan = example("parallel-analysis.json");
    let r = run_baton(&["validate", "--max-steps", "2", path_arg(&plan)]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("$.steps: 4 steps, over the limit of 2"),
        "{}",
        r.describe()
    );
    let r = run_baton(&["run", "--max-input-bytes", "5", path_arg(&plan)]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(
        r.stderr
            .contains("$.steps[0].input: input is 10 bytes, over the limit of 5 bytes"),
        "{}",
        r.describe()
    );
}

#[test]
fn limits_come_from_the_environment() {
    let plan = example("fallback.json");
    let out = std::process::Command::new(baton())
        .args(["run", path_arg(&plan)])
        .env("BATON_MAX_FALLBACK_DEPTH", "0")
        .output()
        .expect("baton runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("$.fallbackPlan: fallback plans nested 1 deep, over the limit of 0"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// HTTP agents: the Python example agent, reached through an agents file
// ---------------------------------------------------------------------------

/// The example Python agent on a free port; killed on drop.
struct PythonAgent {
    child: std::process::Child,
    url: String,
}

impl PythonAgent {
    /// Starts it and waits for the line that names its address.
    fn start() -> Option<PythonAgent> {
        if !which("python3") {
            eprintln!("python3 not found: skipping the HTTP agent test");
            return None;
        }
        let mut child = std::process::Command::new("python3")
            .arg(repo_root().join("examples/agents/reading_agent.py"))
            .arg("0")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the agent prints its address");
        let url = line
            .trim()
            .strip_prefix("reading agent on ")
            .expect("the address line")
            .to_string();
        Some(PythonAgent { child, url })
    }
}

impl Drop for PythonAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agents_file(test: &str, url: &str) -> TempFile {
    let toml = format!(
        "[http]\nallowed_hosts = [\"127.0.0.1\"]\n\n[[agents]]\nkind = \"http\"\nid = \"reading\"\n\
         url = \"{url}\"\nactions = [\"analyze\"]\ntimeout_ms = 5000\n"
    );
    TempFile::new(test, toml.as_bytes())
}

#[test]
fn http_agents_in_any_language_run_plan_steps() {
    let Some(agent) = PythonAgent::start() else {
        return;
    };
    let agents = agents_file("http-agent", &agent.url);
    let plan = example("http-agent.json");
    let r = run_baton(&["run", "--events", "--agents", agents.arg(), path_arg(&plan)]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let v = r.json();
    let results = results(&v);
    let easy = results["easy"]["data"]["readingEase"].as_f64().unwrap();
    let hard = results["hard"]["data"]["readingEase"].as_f64().unwrap();
    assert!(easy > 90.0 && hard < 30.0, "{v:#}");
    assert_eq!(results["report"]["data"]["easy"], results["easy"]["data"]);
    // The agent's insight became an event of the step that produced it.
    let insights: Vec<Value> = event_lines(&r.stderr)
        .into_iter()
        .filter(|e| e["type"] == "agent:insight")
        .collect();
    assert_eq!(insights.len(), 1, "{}", r.stderr);
    assert_eq!(insights[0]["stepId"], "hard");
    assert_eq!(insights[0]["agentId"], "reading");
    assert_eq!(insights[0]["data"]["type"], "reading_too_hard");
}

#[test]
fn an_http_agent_refusing_the_input_fails_the_step_for_good() {
    let Some(agent) = PythonAgent::start() else {
        return;
    };
    let agents = agents_file("http-agent-400", &agent.url);
    let plan = TempFile::json(
        "http-agent-400-plan",
        &json!({"steps": [{"id": "s", "agentId": "reading", "action": "analyze",
                           "input": {"text": 5},
                           "retryPolicy": {"maxRetries": 3, "backoffMs": 10}}]}),
    );
    let r = run_baton(&["run", "--agents", agents.arg(), plan.arg()]);
    assert_eq!(r.code(), Some(1), "{}", r.describe());
    let v = r.json();
    let s = &results(&v)["s"];
    assert_eq!(s["attempts"], 1, "a 400 is not retried: {v:#}");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("input.text must be a string"),
        "{v:#}"
    );
}

#[test]
fn a_bad_agents_file_exits_2_naming_the_problem() {
    let agents = agents_file("bad-agents", "http://example.com:80");
    let plan = example("http-agent.json");
    for cmd in ["run", "validate"] {
        let r = run_baton(&[cmd, "--agents", agents.arg(), path_arg(&plan)]);
        assert_eq!(r.code(), Some(2), "{}", r.describe());
        assert!(
            r.stderr
                .contains("host 'example.com' is not in http.allowed_hosts (127.0.0.1)"),
            "{}",
            r.describe()
        );
    }
    // Without the agents file the plan names an unknown agent.
    let r = run_baton(&["validate", path_arg(&plan)]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(
        r.stderr
            .contains("$.steps[0].agentId: unknown agent 'reading'"),
        "{}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------

fn templates_dir() -> String {
    repo_root()
        .join("examples/templates")
        .to_str()
        .expect("UTF-8 path")
        .to_string()
}

#[test]
fn templates_are_listed_with_parameters_and_triggers() {
    let dir = templates_dir();
    let r = run_baton(&["templates", "list", "--templates", &dir]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].starts_with("quick_check\tparams: learnerId*, skills, subject"));
    assert!(lines[1]
        .starts_with("struggling_help\tparams: learnerId*, skill\ttriggers: struggling_detected"));
}

#[test]
fn a_template_runs_by_name_with_parameters() {
    let dir = templates_dir();
    let r = run_baton(&[
        "run",
        "--templates",
        &dir,
        "--template",
        "quick_check",
        "--param",
        "learnerId=cli-l1",
        "--param",
        r#"skills=["reading"]"#,
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let v = r.json();
    assert_eq!(results(&v)["next"]["data"]["skill"], "reading");
    assert_eq!(results(&v)["next"]["data"]["learnerId"], "cli-l1");

    // A required parameter missing, an unknown template: exit 2, named.
    let r = run_baton(&["run", "--templates", &dir, "--template", "quick_check"]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("parameter 'learnerId' is required"),
        "{}",
        r.describe()
    );
    let r = run_baton(&["run", "--templates", &dir, "--template", "nope"]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(r.stderr.contains("no template 'nope'"), "{}", r.describe());
}
