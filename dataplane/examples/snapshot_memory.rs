//! Memory of a data plane holding N virtual keys, loaded the way attached mode loads them
//! (stored snapshot → `wire::decode_stored` → `LiveState::prepare`).
//!
//!     cargo run --release --example snapshot_memory -- [N]
//!
//! Prints the process RSS after each stage (Linux).

use std::sync::Arc;
use std::time::Instant;

use routeiq_dataplane::state::LiveState;
use routeiq_proto::{KeyHash, Snapshot, VirtualKey};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let snapshot = Snapshot {
        version: 1,
        keys: (0..n)
            .map(|i| {
                Arc::new(VirtualKey {
                    hash: KeyHash::of(&format!("sk-bench-{i}")),
                    models: vec!["priced".into()].into(),
                    max_budget: Some(100.0),
                    rpm_limit: Some(1000),
                    ..VirtualKey::default()
                })
            })
            .collect(),
        ..Snapshot::default()
    };
    let bytes = routeiq_proto::wire::encode_stored(&snapshot);
    drop(snapshot);
    println!(
        "encoded {:.1} MB; rss {:.0} MB",
        bytes.len() as f64 / 1e6,
        rss_mb()
    );
    let t = Instant::now();
    let Ok(snapshot) = routeiq_proto::wire::decode_stored(&bytes) else {
        return;
    };
    drop(bytes);
    println!("decoded in {:?}; rss {:.0} MB", t.elapsed(), rss_mb());
    let Ok(state) = LiveState::prepare(snapshot, &Default::default()) else {
        return;
    };
    println!("prepared at {:?}; rss {:.0} MB", t.elapsed(), rss_mb());
    std::thread::sleep(std::time::Duration::from_millis(500));
    println!(
        "{} keys; rss after 0.5 s idle {:.0} MB",
        state.keys.len(),
        rss_mb()
    );
    // What serving does to it: allocations let the allocator purge what it freed.
    for _ in 0..50 {
        let v: Vec<Vec<u8>> = (0..100).map(|i| vec![0u8; 64 + i]).collect();
        std::hint::black_box(v);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!("rss after 1 s of small allocations {:.0} MB", rss_mb());
}
