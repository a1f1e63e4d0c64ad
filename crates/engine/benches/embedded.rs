//! Benchmark of the embedded engine with `system.noop` steps (not a timed
//! test: it prints figures). Run: `cargo bench -p baton-engine --bench embedded`
//! (`-- --quick` for a short run; `BENCH_WORKERS=N` sets the number of
//! apalis workers, 2 by default).
//!
//! Workloads: 5-step chains and 3-way fan-out + join, many plans in flight;
//! and one 5-step chain at a time (unloaded latency). The baseline, measured
//! in the same run, is apalis alone: the same worker set-up (concurrency,
//! one spawned task per job) pulling noop jobs from apalis's own in-memory
//! backend, so the ratio shows what baton's coordination costs on top.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::backend::dequeue::VecDequeBackend;
use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use baton_agents::Registry;
use baton_coordinator::CoordinatorConfig;
use baton_engine::{Engine, EngineConfig, MemoryStore};
use baton_plan::{Limits, ValidPlan};
use baton_store::Store;
use tokio::sync::Semaphore;

const CONCURRENCY: usize = 256;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plans = if quick { 5_000 } else { 100_000 };
    println!(
        "baton embedded benchmark ({} cores, {plans} plans per workload, 2000 in flight)",
        num_cpus()
    );
    // The runtime `baton run` uses: everything on one thread.
    let one = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("-- one-thread runtime (as `baton run`)");
    one.block_on(bench(quick, plans));
    drop(one);
    // Both cores. The benchmark runs as a task of the runtime, so that
    // submitting and awaiting plans happens on its two worker threads rather
    // than on a third thread competing for the two cores.
    let two = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("-- two-thread runtime");
    two.block_on(async { tokio::spawn(bench(quick, plans)).await })
        .expect("benchmark task");
}

async fn bench(quick: bool, plans: usize) {
    let base = baseline(plans * 5).await;
    println!("baseline      apalis alone, noop jobs: {base:>10.0} jobs/s");
    for (name, plan) in [("chain5", chain(5)), ("fanout3+join", fanout(3))] {
        let r = load(&plan, plans, 2_000).await;
        println!(
            "{name:<13} {:>10.0} steps/s ({:.2}x baseline)  {:>8.0} plans/s  latency p50 {:>7.2} ms  p99 {:>7.2} ms",
            r.steps_per_s,
            r.steps_per_s / base,
            r.plans_per_s,
            r.p50_ms,
            r.p99_ms
        );
    }
    let (p50, p99) = unloaded(&chain(5), if quick { 500 } else { 2_000 }).await;
    println!("unloaded chain5 (one plan at a time): p50 {p50:.3} ms  p99 {p99:.3} ms");
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn registry() -> Registry {
    Registry::with_builtins()
}

fn validate(json: serde_json::Value) -> ValidPlan {
    baton_plan::validate_value(&json, &registry(), &Limits::default())
        .expect("benchmark plan is valid")
}

fn chain(n: usize) -> ValidPlan {
    let steps: Vec<_> = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i == 0 { vec![] } else { vec![format!("s{}", i - 1)] };
            serde_json::json!({"id": format!("s{i}"), "agentId": "system", "action": "noop", "dependencies": deps})
        })
        .collect();
    validate(serde_json::json!({ "steps": steps }))
}

fn fanout(n: usize) -> ValidPlan {
    let mut steps: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"id": format!("b{i}"), "agentId": "system", "action": "noop"}))
        .collect();
    let deps: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    steps.push(serde_json::json!({"id": "join", "dependencies": deps}));
    validate(serde_json::json!({ "steps": steps }))
}

fn engine() -> Engine<MemoryStore> {
    let workers = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let cfg = EngineConfig {
        workers,
        concurrency: CONCURRENCY,
        coordinator: CoordinatorConfig {
            retention_ms: 0,
            purge_every_ms: 1000,
            ..CoordinatorConfig::default()
        },
        ..EngineConfig::default()
    };
    Engine::start(MemoryStore::new(), registry(), cfg)
}

struct LoadResult {
    steps_per_s: f64,
    plans_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `plans` copies of `plan`, at most `in_flight` at once.
async fn load(plan: &ValidPlan, plans: usize, in_flight: usize) -> LoadResult {
    let engine = Arc::new(engine());
    let gate = Arc::new(Semaphore::new(in_flight));
    let run = format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ (std::process::id() as u128)
    );
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(plans);
    for i in 0..plans {
        let permit = gate.clone().acquire_owned().await.expect("semaphore open");
        let (engine, mut p) = (engine.clone(), plan.clone());
        p.id = Some(format!("bench-{run}-{i}"));
        tasks.push(tokio::spawn(async move {
            let took = run_one(&engine, p).await;
            drop(permit);
            took
        }));
    }
    let mut lat = Vec::with_capacity(plans);
    for t in tasks {
        lat.push(t.await.expect("plan task"));
    }
    let wall = start.elapsed().as_secs_f64();
    Arc::try_unwrap(engine)
        .ok()
        .expect("engine unshared")
        .shutdown()
        .await;
    let (p50_ms, p99_ms) = percentiles(&mut lat);
    LoadResult {
        steps_per_s: (plans * plan.steps.len()) as f64 / wall,
        plans_per_s: plans as f64 / wall,
        p50_ms,
        p99_ms,
    }
}

/// Submits one plan and waits for its end: the plan's latency.
async fn run_one(engine: &Engine<MemoryStore>, plan: ValidPlan) -> Duration {
    let t0 = Instant::now();
    let submission = engine.planner().submit(plan).await.expect("submit");
    let r = engine
        .store()
        .wait_result(submission.id())
        .await
        .expect("result");
    assert!(r.success, "benchmark plan failed: {r:?}");
    t0.elapsed()
}

/// Latency of one plan at a time on an idle engine.
async fn unloaded(plan: &ValidPlan, n: usize) -> (f64, f64) {
    let engine = engine();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let mut p = plan.clone();
        p.id = Some(format!("unloaded-{i}"));
        lat.push(run_one(&engine, p).await);
    }
    engine.shutdown().await;
    percentiles(&mut lat)
}

fn percentiles(lat: &mut [Duration]) -> (f64, f64) {
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

/// apalis alone: `jobs` noop jobs through its in-memory backend with the
/// same concurrency and one spawned task per job, as baton's workers run.
async fn baseline(jobs: usize) -> f64 {
    use apalis::layers::WorkerBuilderExt;
    use apalis_core::task::data::Data;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count {
        done: AtomicUsize,
        target: usize,
        all_done: tokio::sync::Notify,
    }
    async fn noop(_job: u64, count: Data<Arc<Count>>) -> Result<(), BoxDynError> {
        tokio::spawn(async {}).await?;
        if count.done.fetch_add(1, Ordering::Relaxed) + 1 == count.target {
            count.all_done.notify_one();
        }
        Ok(())
    }
    let mut backend = VecDequeBackend::<u64>::new();
    for i in 0..jobs as u64 {
        backend.push(i).await.expect("push");
    }
    let count = Arc::new(Count {
        done: AtomicUsize::new(0),
        target: jobs,
        all_done: tokio::sync::Notify::new(),
    });
    let start = Instant::now();
    let worker = WorkerBuilder::new("baseline")
        .backend(backend)
        .data(count.clone())
        .concurrency(CONCURRENCY)
        .build(noop);
    let signal = {
        let count = count.clone();
        async move {
            count.all_done.notified().await;
            Ok::<(), std::io::Error>(())
        }
    };
    worker.run_until(signal).await.expect("baseline worker");
    jobs as f64 / start.elapsed().as_secs_f64()
}
