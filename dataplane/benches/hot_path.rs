//! Criterion benches for the pure code on every request: SSE parsing and stream
//! conversion, request translation, usage extraction, routing and config compilation.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use routeiq_dataplane::error::ClientApi;
use routeiq_dataplane::holder::Holder;
use routeiq_dataplane::sse;
use routeiq_dataplane::state::LiveState;
use routeiq_dataplane::translate::{anthropic_to_openai, openai_to_anthropic, stream, ChatFormat};
use routeiq_dataplane::usage;
use routeiq_proto::litellm as config;
use serde_json::{json, Map, Value};

// The gateway's allocator (`src/main.rs`), so that allocations cost here what they cost
// there (since 2026-12-05; the figures before that date are glibc malloc's).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn chat_request() -> Map<String, Value> {
    match json!({
        "model": "gpt", "max_tokens": 256, "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the weather in Paris today? Answer briefly."}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn openai_stream() -> String {
    let mut s = String::from("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
    for i in 0..50 {
        s.push_str(&format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}}}}]}}\n\n"));
    }
    s.push_str("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    s.push_str("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":50}}\n\ndata: [DONE]\n\n");
    s
}

fn benches(c: &mut Criterion) {
    let req = chat_request();
    c.bench_function("translate/openai_request_to_anthropic", |b| {
        b.iter(|| openai_to_anthropic::request(black_box(&req), "claude", None))
    });
    let areq = match openai_to_anthropic::request(&req, "claude", None) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    c.bench_function("translate/anthropic_request_to_openai", |b| {
        b.iter(|| anthropic_to_openai::request(black_box(&areq), "gpt"))
    });
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":9,"total_tokens":33}}"#;
    c.bench_function("usage/from_openai_body", |b| {
        b.iter(|| usage::from_body(black_box(body)))
    });

    let s = openai_stream();
    for (name, client) in [
        ("passthrough", ClientApi::OpenAi),
        ("to_anthropic", ClientApi::Anthropic),
    ] {
        c.bench_function(&format!("stream/openai_52_chunks_{name}"), |b| {
            b.iter(|| {
                let mut p = sse::Parser::default();
                let mut conv =
                    stream::converter(ChatFormat::OpenAi, client, false, "m", Default::default());
                let mut out = Vec::with_capacity(64);
                for ev in p.feed(black_box(s.as_bytes())).unwrap_or_default() {
                    conv.event(&ev, &mut out);
                }
                conv.finish(&mut out);
                out.len()
            })
        });
    }

    let cfg_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/example.yaml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap_or_default();
    c.bench_function("config/compile_example", |b| {
        b.iter(|| {
            config::compile(black_box(&cfg), &cfg_path, &|_| None)
                .map(|l| l.snapshot.deployments.len())
        })
    });
    if let Ok(loaded) = config::compile(&cfg, &cfg_path, &|_| None) {
        if let Ok(live) = LiveState::prepare(loaded.snapshot, &Default::default()) {
            // Allowed by the key's third entry (an access group) and the team's wildcard.
            let key = routeiq_proto::VirtualKey {
                models: vec!["a-model".into(), "b-model".into(), "gpt-4o-mini".into()].into(),
                team_models: vec!["claude-sonnet".into(), "gpt*".into()].into(),
                ..routeiq_proto::VirtualKey::default()
            };
            c.bench_function("access/check_3_key_models_2_team_models", |b| {
                b.iter(|| {
                    routeiq_dataplane::access::check(&live, Some(black_box(&key)), "gpt-4o-mini")
                        .is_ok()
                })
            });
        }
    }
}

/// Key lookup and a one-key delta on a state of 1,000,000 virtual keys.
fn keys(c: &mut Criterion) {
    use routeiq_proto::{Delta, DeltaOp, KeyHash, Snapshot, VirtualKey};
    use std::sync::Arc;
    let keys: Vec<Arc<VirtualKey>> = (0..1_000_000)
        .map(|i| {
            Arc::new(VirtualKey {
                hash: KeyHash::of(&format!("sk-bench-{i}")),
                models: vec!["gpt".into()].into(),
                max_budget: Some(10.0),
                ..VirtualKey::default()
            })
        })
        .collect();
    let Ok(live) = LiveState::prepare(
        Snapshot {
            keys,
            ..Snapshot::default()
        },
        &Default::default(),
    ) else {
        return;
    };
    let probe = KeyHash::of("sk-bench-777");
    c.bench_function("keys/lookup_1m", |b| {
        b.iter(|| live.keys.get(black_box(&probe)).map(|k| k.spend))
    });
    let delta = Delta {
        version: 1,
        ops: vec![DeltaOp::KeySpend {
            hash: probe,
            spend: 11.0,
        }],
    };
    c.bench_function("keys/apply_one_key_delta_1m", |b| {
        b.iter(|| live.apply(black_box(&delta)).map(|s| s.version))
    });
}

/// Admission and settlement of a request under a key's RPM, TPM and parallel limits.
fn limits(c: &mut Criterion) {
    use routeiq_dataplane::limits::Limiter;
    use routeiq_proto::{KeyHash, VirtualKey};
    let limiter = Limiter::default();
    let key = VirtualKey {
        hash: KeyHash::of("sk-bench-limits"),
        rpm_limit: Some(u64::MAX),
        tpm_limit: Some(u64::MAX),
        max_parallel_requests: Some(1_000),
        ..VirtualKey::default()
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    // What the harness itself costs per iteration (admission is async since Redis).
    c.bench_function("limits/block_on_baseline", |b| {
        b.iter(|| rt.block_on(async {}))
    });
    c.bench_function("limits/admit_and_settle_rpm_tpm_parallel", |b| {
        b.iter(|| {
            if let Ok(Some(a)) = rt.block_on(limiter.admit(&Holder::key(black_box(&key)), 300)) {
                a.settle(black_box(120));
            }
        })
    });
}

/// Admission and settlement of a request against a key's budget.
fn budgets(c: &mut Criterion) {
    use routeiq_dataplane::budgets::Budgets;
    use routeiq_proto::{KeyHash, VirtualKey};
    let budgets = Budgets::default();
    let key = VirtualKey {
        hash: KeyHash::of("sk-bench-budget"),
        max_budget: Some(f64::MAX),
        ..VirtualKey::default()
    };
    c.bench_function("budgets/admit_and_settle", |b| {
        b.iter(|| {
            if let Ok(Some(h)) = budgets.admit(&Holder::key(black_box(&key)), 1, 0.001) {
                h.settle(black_box(0.0004));
            }
        })
    });
}

fn routes(c: &mut Criterion) {
    use routeiq_dataplane::handlers::routes::{Found, ROUTES};
    let post = http::Method::POST;
    for (name, path) in [
        ("chat", "/v1/chat/completions"),
        (
            "passthrough",
            "/bedrock/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse",
        ),
        ("unknown", "/v1/no/such/path"),
    ] {
        c.bench_function(&format!("routes/lookup_{name}"), |b| {
            b.iter(|| {
                let found = ROUTES.find(&post, std::hint::black_box(path));
                std::hint::black_box(matches!(found, Found::Route(..)))
            })
        });
    }
}

/// What the exact response cache adds to a request it cannot answer (memory tier only):
/// the key over a realistic body (`bench/chat-realistic.lua`'s), the lookup that misses,
/// and keeping the answer. Each iteration is a new prompt, so every lookup misses.
fn cache_miss(c: &mut Criterion) {
    use routeiq_dataplane::cache::{Answer, Api, Cache, Plan};
    use routeiq_dataplane::handlers::request::RawObject;
    use routeiq_proto::CacheSettings;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let Ok(cache) = Cache::new(None) else {
        return;
    };
    let cache = std::sync::Arc::new(cache);
    let settings = CacheSettings::default();
    cache.configure(Some(&settings));
    let body = |i: u64| {
        format!(
            r#"{{"model":"bench","messages":[{{"role":"system","content":"You are a careful assistant for an online bookshop. Answer in two or three sentences, cite the catalogue section when you can, and never invent prices or availability."}},{{"role":"user","content":"I am looking for a readable introduction to distributed systems for a team of backend engineers. Which book would you suggest? ({i})"}}],"temperature":0.7,"top_p":0.95,"max_tokens":256,"n":1,"stream":false,"user":"bench-user-0001"}}"#
        )
        .into_bytes()
    };
    let answer = bytes::Bytes::from_static(br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":9,"total_tokens":33}}"#);
    let mut i = 0u64;
    let plan_of = |i: u64| {
        let Ok(mut req) = RawObject::parse(&body(i)) else {
            return None;
        };
        Plan::of(Some(&settings), None, Api::Chat, "bench", &mut req, None)
            .ok()
            .flatten()
    };
    // What parsing the body costs (the request's own work, with or without the cache).
    c.bench_function("cache/parse_body_baseline", |b| {
        b.iter(|| {
            i += 1;
            black_box(RawObject::parse(&body(i)).is_ok())
        })
    });
    // Its parts: the key alone (the body parsed outside the timing), then the lookup that
    // misses and keeping the answer (the plan made outside the timing).
    c.bench_function("cache/key_of_parsed_body", |b| {
        b.iter_batched(
            || {
                i += 1;
                RawObject::parse(&body(i)).ok()
            },
            |req| {
                let mut req = req?;
                Plan::of(Some(&settings), None, Api::Chat, "bench", &mut req, None).ok()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("cache/lookup_miss_and_keep", |b| {
        b.iter_batched(
            || {
                i += 1;
                plan_of(i)
            },
            |plan| {
                let Some(mut plan) = plan else {
                    return;
                };
                plan.epoch = cache.epoch();
                if rt.block_on(cache.get(&plan)).is_none() {
                    cache.put(&plan, Answer::Full(answer.clone()), None, 0.001);
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("cache/miss_key_lookup_and_keep", |b| {
        b.iter(|| {
            i += 1;
            let Some(mut plan) = plan_of(i) else {
                return;
            };
            plan.epoch = cache.epoch();
            if rt.block_on(cache.get(&plan)).is_none() {
                cache.put(&plan, Answer::Full(answer.clone()), None, 0.001);
            }
        })
    });
}

criterion_group!(hot_path, benches, keys, limits, budgets, routes, cache_miss);
criterion_main!(hot_path);
