//! Learned routing: the whole decision per `llmrouter-*` strategy (featurize the query,
//! score, pick among nine deployments, as `ModelGroup::pick` runs it on every request),
//! and the MiniLM encoder's latency at 16, 128 and 256 tokens on one thread.
//!
//! Needs artifacts trained by the pipeline: `ROUTEIQ_BENCH_ARTIFACTS` (default
//! `/tmp/routeiq-artifacts`) holding `hashed/<strategy>/` and `minilm/knn/`, ONNX Runtime
//! (`ORT_DYLIB_PATH`), and queries from `ROUTEIQ_BENCH_QUERIES` (LLMRouter-format JSON,
//! default the committed fixture subset). Percentiles come from single timed decisions
//! (queries taken in turn, each a fresh request with nothing cached).
//! `ROUTEIQ_BENCH_ARGS`: a JSON object of more `routing_strategy_args` (e.g.
//! `{"conservative": true}` or `{"max_price_per_m": 0.5}`), to time those modes.
//! `learned/mlp+shadow` is `mlp` with `svm` as its shadow version: the request path's
//! share of shadowing (handing the query to the shadow worker), against `learned/mlp`.
//! `featurize/*` times the inline featurizers alone (no artifact needed); an artifact
//! directory whose `hashed/` holds strategies trained on another featurizer (e.g.
//! `--featurizer hashed-ngram+structure`) times their decisions the same way.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use routeiq_dataplane::clock::now_ms;
use routeiq_dataplane::routing::learned::{featurize, Query};
use routeiq_dataplane::routing::RouteRequest;
use routeiq_dataplane::state::{Lasting, LiveState};
use routeiq_proto::{Deployment, RouterSettings, RoutingStrategy, Snapshot};

fn artifacts() -> PathBuf {
    std::env::var_os("ROUTEIQ_BENCH_ARTIFACTS")
        .map_or_else(|| "/tmp/routeiq-artifacts".into(), PathBuf::from)
}

fn queries() -> Vec<String> {
    let path = std::env::var_os("ROUTEIQ_BENCH_QUERIES").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/llmrouter/routing_subset.json")
        },
        PathBuf::from,
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_default()).unwrap_or_default();
    rows.iter()
        .filter_map(|r| {
            r.get("question")
                .and_then(|q| q.as_str())
                .map(str::to_owned)
        })
        .collect()
}

fn candidates(dir: &Path) -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap_or_default())
            .unwrap_or_default();
    m["candidates"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A state whose group `auto` has one deployment per candidate, routed by `strategy`
/// from `dir` with `extra` arguments, with its models loaded.
fn state(
    rt: &tokio::runtime::Runtime,
    strategy: &str,
    dir: &Path,
    extra: serde_json::Value,
) -> Option<LiveState> {
    let deployments = candidates(dir)
        .iter()
        .map(|c| Deployment {
            upstream_model: c.clone(),
            ..Deployment::mock(c, "auto")
        })
        .collect();
    let mut args = serde_json::json!({"model_path": dir, "hot_reload": false});
    if let (Some(args), Some(extra)) = (args.as_object_mut(), extra.as_object()) {
        args.extend(extra.clone());
    }
    if let (Some(more), Some(args)) = (
        std::env::var("ROUTEIQ_BENCH_ARGS")
            .ok()
            .and_then(|a| serde_json::from_str::<serde_json::Map<_, _>>(&a).ok()),
        args.as_object_mut(),
    ) {
        args.extend(more);
    }
    let lasting = Lasting::default();
    let live = LiveState::prepare(
        Snapshot {
            deployments,
            router: RouterSettings {
                routing_strategy: RoutingStrategy::from_name(&format!("llmrouter-{strategy}")),
                routing_strategy_args: args.as_object().cloned().unwrap_or_default(),
                ..RouterSettings::default()
            },
            ..Snapshot::default()
        },
        &lasting,
    )
    .ok()?;
    lasting.models.start(rt.handle());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let s = lasting.models.status();
        let routers = s["routers"].as_array().cloned().unwrap_or_default();
        if let Some(e) = routers.iter().find_map(|r| r["last_error"].as_str()) {
            eprintln!("{strategy}: {e}");
            return None;
        }
        if !routers.is_empty() && routers.iter().all(|r| r["loaded"] == true) {
            return Some(live);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn request(q: &str) -> RouteRequest {
    RouteRequest {
        query: Some(Arc::new(Query::new(q.to_owned()))),
        ..RouteRequest::default()
    }
}

fn percentiles(mut samples: Vec<u64>) -> (u64, u64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

/// `routeiq_learned_shadow_decisions_total` by outcome (scored, unscored, dropped).
fn shadow_outcomes(live: &LiveState) -> String {
    live.lasting()
        .models
        .collectors()
        .iter()
        .flat_map(|c| c.collect())
        .filter(|f| f.name() == "routeiq_learned_shadow_decisions_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| {
                    let outcome = m.get_label().iter().find(|l| l.name() == "outcome");
                    format!(
                        "{} {}",
                        outcome.map_or("", |l| l.value()),
                        m.get_counter().get_value()
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn benches(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        return;
    };
    let queries = queries();
    if queries.is_empty() {
        eprintln!("no queries");
        return;
    }
    // The featurizers computed inline, alone (a decision includes one of them).
    let hashed = featurize::HashedNgram { dim: 1024 };
    let mut i = 0;
    c.bench_function("featurize/hashed-ngram-1024", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            hashed.features(black_box(&queries[i]))
        })
    });
    c.bench_function("featurize/structure", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            featurize::structure(black_box(&queries[i]))
        })
    });
    let mut report = Vec::new();
    let shadow = serde_json::json!({"shadow": {
        "strategy": "llmrouter-svm",
        "model_path": artifacts().join("hashed").join("svm"),
    }});
    for (name, strategy, extra) in [
        "knn", "svm", "mlp", "mf", "graph", "routerdc", "hybrid", "elo", "smallest", "largest",
    ]
    .map(|s| (s.to_owned(), s, serde_json::Value::Null))
    .into_iter()
    .chain([("mlp+shadow".to_owned(), "mlp", shadow)])
    {
        let dir = artifacts().join("hashed").join(strategy);
        let Some(live) = state(&rt, strategy, &dir, extra) else {
            eprintln!("skipping {strategy}: no artifact at {}", dir.display());
            continue;
        };
        let Some(group) = live.group("auto") else {
            continue;
        };
        let settings = live.router_settings();
        let mut i = 0;
        c.bench_function(&format!("learned/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                group
                    .pick(settings, black_box(&request(&queries[i])), &[], now_ms())
                    .ok()
            })
        });
        let samples = (0..20_000)
            .map(|n| {
                let req = request(&queries[n % queries.len()]);
                let t = Instant::now();
                black_box(group.pick(settings, black_box(&req), &[], now_ms()).ok());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        let (p50, p99) = percentiles(samples);
        report.push(format!(
            "decision llmrouter-{name}: p50 {:.1} µs, p99 {:.1} µs",
            p50 as f64 / 1e3,
            p99 as f64 / 1e3
        ));
        if name.ends_with("+shadow") {
            report.push(format!("  shadow decisions: {}", shadow_outcomes(&live)));
        }
    }
    // The encoder alone, one thread, at fixed token counts.
    let dir = artifacts().join("minilm").join("knn");
    if let Some(live) = state(&rt, "knn", &dir, serde_json::Value::Null) {
        let encoder = live.lasting().models.encoder_of("llmrouter-knn");
        if let Some(encoder) = encoder {
            for tokens in [16usize, 128, 256] {
                // "word " is one token; [CLS] and [SEP] make two more.
                let text = "word ".repeat(tokens - 2);
                let samples = (0..60)
                    .map(|_| {
                        let t = Instant::now();
                        black_box(encoder.embed_now(&text).ok());
                        t.elapsed().as_nanos() as u64
                    })
                    .collect();
                let (p50, p99) = percentiles(samples);
                report.push(format!(
                    "embedding {tokens} tokens: p50 {:.2} ms, p99 {:.2} ms",
                    p50 as f64 / 1e6,
                    p99 as f64 / 1e6
                ));
            }
        }
    }
    println!("\nsingle-call percentiles:");
    for line in report {
        println!("  {line}");
    }
}

criterion_group! {
    name = learned;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(learned);
