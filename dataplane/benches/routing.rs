//! The routing decision, per strategy, for model groups of 10 and 100 deployments: the
//! candidate filters (breaker, pre-call checks) and the strategy's pick, as
//! `ModelGroup::pick` runs them on every request. Criterion reports the mean; the p50 and
//! p99 of single decisions are measured after it (200,000 timed calls) and printed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use routeiq_dataplane::clock::now_ms;
use routeiq_dataplane::routing::RouteRequest;
use routeiq_dataplane::state::LiveState;
use routeiq_proto::{Deployment, ModelInfo, RouterSettings, RoutingStrategy, Snapshot};

fn state(strategy: RoutingStrategy, n: usize) -> Option<LiveState> {
    let deployments = (0..n)
        .map(|i| Deployment {
            rpm: Some(10_000 + i as u64),
            tpm: Some(1_000_000),
            weight: Some(1.0 + (i % 4) as f64),
            model_info: ModelInfo {
                max_input_tokens: Some(128_000),
                input_cost_per_token: Some(1e-6 * (1 + i % 7) as f64),
                output_cost_per_token: Some(2e-6 * (1 + i % 5) as f64),
                ..ModelInfo::default()
            },
            ..Deployment::mock(&format!("d{i}"), "m")
        })
        .collect();
    let live = LiveState::prepare(
        Snapshot {
            deployments,
            router: RouterSettings {
                routing_strategy: strategy,
                enable_pre_call_checks: true,
                routing_strategy_args: serde_json::from_str(r#"{"lowest_latency_buffer": 0.1}"#)
                    .unwrap_or_default(),
                ..RouterSettings::default()
            },
            ..Snapshot::default()
        },
        &Default::default(),
    )
    .map_err(|e| eprintln!("bench snapshot: {e}"))
    .ok()?;
    // Some history: latencies, requests in flight, this minute's usage.
    if let Some(g) = live.group("m") {
        let now = now_ms();
        for (i, d) in g.deployments.iter().enumerate() {
            d.health
                .record_latency(Duration::from_millis(50 + (i as u64 * 37) % 200), None);
            for _ in 0..(i % 5) {
                d.health.start(1_000 + i as u64, now);
            }
        }
    }
    Some(live)
}

fn benches(c: &mut Criterion) {
    let req = RouteRequest {
        stream: false,
        prompt_tokens: 500,
        tokens: 756,
        tags: Vec::new(),
        query: None,
        pinned: None,
        key: None,
    };
    let mut report = Vec::new();
    for strategy in [
        RoutingStrategy::SimpleShuffle,
        RoutingStrategy::LeastBusy,
        RoutingStrategy::LatencyBased,
        RoutingStrategy::CostBased,
        RoutingStrategy::UsageBasedV2,
    ] {
        for n in [10, 100] {
            let name = format!("routing/{}/{n}", strategy.name());
            let Some(live) = state(strategy.clone(), n) else {
                continue;
            };
            let Some(group) = live.group("m") else {
                continue;
            };
            let settings = live.router_settings();
            c.bench_function(&name, |b| {
                b.iter(|| group.pick(settings, black_box(&req), &[], now_ms()).ok())
            });
            let mut samples: Vec<u64> = (0..200_000)
                .map(|_| {
                    let t = Instant::now();
                    black_box(group.pick(settings, black_box(&req), &[], now_ms()).ok());
                    t.elapsed().as_nanos() as u64
                })
                .collect();
            samples.sort_unstable();
            let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
            report.push(format!(
                "{name}: p50 {} ns, p99 {} ns, p99.9 {} ns",
                at(0.5),
                at(0.99),
                at(0.999)
            ));
        }
    }
    println!("\nsingle-decision percentiles (Instant around each call, ~20 ns of it timer):");
    for line in report {
        println!("  {line}");
    }
}

criterion_group!(routing, benches);
criterion_main!(routing);
