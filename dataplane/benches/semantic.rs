//! The semantic cache: the index's search at 100,000 entries (p50 and p99 of single
//! searches), and a whole lookup (embedding a 128-token message with the MiniLM encoder,
//! then searching) when an encoder artifact is at hand.
//!
//! The entries are 384-dimensional unit vectors in 500 clusters (a centre plus noise), as
//! sentence embeddings cluster by topic; searches are near an entry's cluster. Three cases:
//! every entry in the searched partition, 100 partitions (each a graph of its own, of
//! 1,000 entries), and 1,000 partitions of 100 entries (each scanned exactly). In the one
//! partition it also counts the graph's recall of near-duplicates: an entry's vector with
//! a little noise (cosine about 0.98 to it) must find that entry first, as a paraphrase
//! must find its cached answer. The encoder comes from `ROUTEIQ_BENCH_ENCODER`, a
//! routing-model artifact with the minilm featurizer (default
//! `/tmp/routeiq-artifacts/minilm/knn`), with ONNX Runtime at `ORT_DYLIB_PATH`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use routeiq_dataplane::cache::semantic::{Index, Origin};
use routeiq_dataplane::state::{Lasting, LiveState, SemanticEmbedder};
use routeiq_proto::{CacheSettings, EncoderSource, SemanticSettings, Snapshot};

const DIM: usize = 384;
const ENTRIES: usize = 100_000;
const CLUSTERS: usize = 500;
/// The synthetic vectors' encoder id.
const ENCODER: &str = "bench";

/// xorshift: the same vectors every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 20_001) as f32 / 10_000.0 - 1.0
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A point of `centre`'s cluster: cosine about 0.75 to the centre, about 0.55 to another
/// point of the cluster, about 0 to other clusters' points (as sentence embeddings on one
/// topic are to each other).
fn near(centre: &[f32], rng: &mut Rng) -> Vec<f32> {
    unit(centre.iter().map(|c| c + 0.078 * rng.next()).collect())
}

fn percentiles(mut samples: Vec<u64>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5) as f64 / 1e3, at(0.99) as f64 / 1e3)
}

fn partition(i: usize, partitions: usize) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..8].copy_from_slice(&((i % partitions) as u64).to_le_bytes());
    p
}

/// Entries' keys and vectors.
type Sample = Vec<([u8; 32], Vec<f32>)>;

/// An index of [`ENTRIES`] entries of `encoder` in `partitions` partitions, how long
/// filling it took, and every 97th entry's key and vector (`None`, reported, if usearch
/// refused an entry).
fn build(
    encoder: &std::sync::Arc<str>,
    partitions: usize,
    centres: &[Vec<f32>],
    rng: &mut Rng,
) -> Option<(Index, Duration, Sample)> {
    let index = Index::new(ENTRIES);
    let mut sample = Vec::new();
    let t = Instant::now();
    for i in 0..ENTRIES {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let v: std::sync::Arc<[f32]> = near(&centres[i % CLUSTERS], rng).into();
        let p = partition(i, partitions);
        if let Err(e) = index.insert(Origin::Local, encoder, p, key, u64::MAX, &v, || true) {
            eprintln!("{e}");
            return None;
        }
        if i % 97 == 0 {
            sample.push((key, v.to_vec()));
        }
    }
    Some((index, t.elapsed(), sample))
}

/// How many of `sample`'s entries a search finds first from a near-duplicate of their
/// vector, of how many, and the near-duplicates' mean cosine to their entries.
fn near_duplicate_recall(
    index: &Index,
    target: &[u8; 32],
    sample: &[([u8; 32], Vec<f32>)],
    rng: &mut Rng,
) -> (usize, usize, f32) {
    let mut found = 0;
    let mut cosine = 0.0;
    for (key, v) in sample {
        let q = unit(v.iter().map(|x| x + 0.018 * rng.next()).collect());
        cosine += routeiq_dataplane::routing::learned::artifact::dot(&q, v);
        match index.search(ENCODER, target, &q, 0) {
            Ok(m) if m.first().map(|m| m.key) == Some(*key) => found += 1,
            Ok(_) => {}
            Err(e) => eprintln!("{e}"),
        }
    }
    (found, sample.len(), cosine / sample.len().max(1) as f32)
}

fn encoder() -> Option<std::sync::Arc<routeiq_dataplane::routing::learned::featurize::Encoder>> {
    let dir = std::env::var_os("ROUTEIQ_BENCH_ENCODER").map_or_else(
        || PathBuf::from("/tmp/routeiq-artifacts/minilm/knn"),
        PathBuf::from,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .ok()?;
    let lasting = Lasting::default();
    let live = LiveState::prepare(
        Snapshot {
            cache: Some(CacheSettings {
                semantic: Some(SemanticSettings {
                    encoder: EncoderSource::Path(dir.to_string_lossy().into_owned()),
                    max_messages: 1,
                    max_entries: ENTRIES as u32,
                }),
                ..CacheSettings::default()
            }),
            ..Snapshot::default()
        },
        &lasting,
    )
    .ok()?;
    lasting.models.start(rt.handle());
    let Some(SemanticEmbedder::Encoder(slot)) = live.semantic.clone() else {
        return None;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(e) = slot.encoder() {
            return Some(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "no encoder loaded from {}: {}",
        dir.display(),
        slot.status()
    );
    None
}

fn benches(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS)
        .map(|_| unit((0..DIM).map(|_| rng.next()).collect()))
        .collect();
    let queries: Vec<Vec<f32>> = (0..10_000)
        .map(|i| near(&centres[(i * 7) % CLUSTERS], &mut rng))
        .collect();
    let mut report = Vec::new();
    for partitions in [1usize, 100, 1000] {
        let Some((index, took, sample)) = build(&ENCODER.into(), partitions, &centres, &mut rng)
        else {
            return;
        };
        let target = partition(0, partitions);
        let samples = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                black_box(index.search(ENCODER, &target, black_box(q), 0).ok());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        let (p50, p99) = percentiles(samples);
        report.push(format!(
            "search, {ENTRIES} entries in {partitions} partition(s): p50 {p50:.1} µs, p99 {p99:.1} µs (built in {:.1} s, {:.0} µs per insert)",
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / ENTRIES as f64
        ));
        if partitions == 1 {
            let (found, of, cosine) = near_duplicate_recall(&index, &target, &sample, &mut rng);
            report.push(format!(
                "near-duplicates (cosine {cosine:.3}) found first, {ENTRIES} entries in 1 partition: {found} of {of}"
            ));
        }
        c.bench_function(&format!("semantic_search_100k_{partitions}p"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(index.search(ENCODER, &target, &queries[i], 0).ok())
            })
        });
    }
    let encoder = encoder();
    // The one-partition index again, under the encoder's id.
    let built = encoder
        .as_ref()
        .and_then(|e| build(&e.id, 1, &centres, &mut rng).map(|(index, ..)| (e, index)));
    if let Some((encoder, index)) = built {
        // "word " is one token; [CLS] and [SEP] make two more: 128 tokens.
        let text = "word ".repeat(126);
        let target = partition(0, 1);
        let samples = (0..60)
            .map(|i| {
                let t = Instant::now();
                // A fresh text each time: the encoder's own cache must not answer.
                let v = encoder.embed_now(&format!("{text}{i}")).ok();
                if let Some(v) = v {
                    black_box(index.search(&encoder.id, &target, &v, 0).ok());
                }
                t.elapsed().as_nanos() as u64
            })
            .collect();
        let (p50, p99) = percentiles(samples);
        report.push(format!(
            "lookup, embedding 128 tokens + search at {ENTRIES}: p50 {:.2} ms, p99 {:.2} ms",
            p50 / 1e3,
            p99 / 1e3
        ));
    }
    println!("\nsingle-call percentiles:");
    for line in report {
        println!("  {line}");
    }
}

criterion_group! {
    name = semantic;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(semantic);
