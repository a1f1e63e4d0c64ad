//! Benchmark of the in-memory store's transitions alone, on one thread:
//! create a 5-step chain, then claim and complete its steps, repeated. It
//! bounds what the embedded engine can do per core. Run:
//! `cargo bench -p baton-engine --bench store_only`.

use baton_store::{MemoryStore, NewPlan, Store};
use std::time::Instant;
fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reg = baton_agents::Registry::with_builtins();
        let steps: Vec<_> = (0..5).map(|i| serde_json::json!({"id": format!("s{i}"), "agentId":"system","action":"noop","dependencies": if i==0 {vec![]} else {vec![format!("s{}", i-1)]}})).collect();
        let plan = baton_plan::validate_value(&serde_json::json!({"steps": steps}), &reg, &Default::default()).unwrap();
        let store = MemoryStore::new();
        let q = vec!["system".to_string()];
        let n = 200000;
        let t = Instant::now();
        for i in 0..n {
            let np = NewPlan { id: format!("p{i}"), plan: plan.clone(), queues: vec![Some("system".into()); 5], parent: None, submitted_at: 0 };
            store.create_plan(np).await.unwrap();
            loop { let jobs = store.claim(&q, "w", 30000, 8).await.unwrap(); if jobs.is_empty() {break}
              for job in jobs { store.complete(&job.key, serde_json::Value::Null).await.unwrap(); } }
            if i % 10000 == 9999 { store.purge_ended(u64::MAX).await.unwrap(); }
        }
        let el = t.elapsed().as_secs_f64();
        println!("store transitions only, 5-step chains: {:.0} steps/s", (n * 5) as f64 / el);
    });
}
