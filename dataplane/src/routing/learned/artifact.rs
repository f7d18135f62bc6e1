//! Routing-model artifacts (`models/ARTIFACTS.md`): the manifest, its file hashes, and the
//! scoring model built from them. Building is fallible and happens off the request path;
//! a [`Model`] that exists has been verified whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::featurize::{Encoder, HashedNgram, STRUCTURE_DIM};
use super::onnx::SessionPool;
use super::operating::{Calibration, CalibrationSpec, Operating, OperatingSpec};
use super::LoadError;

pub const FORMAT: &str = "routeiq-router/1";
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Deserialize)]
pub struct Candidate {
    pub name: String,
    #[serde(default)]
    pub size_b: f64,
    #[serde(default)]
    pub input_price: f64,
    #[serde(default)]
    pub output_price: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum FeaturizerSpec {
    HashedNgram {
        version: u32,
        dim: usize,
    },
    Minilm {
        version: u32,
        dim: usize,
        max_tokens: usize,
        /// The transformer layers kept when the pipeline cut the encoder (informational).
        #[serde(default)]
        layers: Option<u32>,
    },
    Structure {
        version: u32,
        dim: usize,
    },
    /// Its parts' vectors side by side, the whole L2-normalised.
    Concat {
        version: u32,
        /// The sum of its parts' (checked when given).
        #[serde(default)]
        dim: Option<usize>,
        parts: Vec<FeaturizerSpec>,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub strategy: String,
    pub version: String,
    pub candidates: Vec<Candidate>,
    pub featurizer: Option<FeaturizerSpec>,
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub score_columns: Option<Vec<usize>>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub calibration: Option<CalibrationSpec>,
    #[serde(default)]
    pub operating: Option<OperatingSpec>,
}

/// The featurizer a model needs.
#[derive(Debug, Clone)]
pub enum Featurizer {
    /// Query-independent strategies.
    None,
    Hashed(HashedNgram),
    Encoder(Arc<Encoder>),
    Structure,
    /// Two or more of the above (none `None`, at most one encoder), side by side.
    Concat(Vec<Featurizer>),
}

impl Featurizer {
    pub fn dim(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Hashed(h) => h.dim,
            Self::Encoder(e) => e.dim,
            Self::Structure => STRUCTURE_DIM,
            Self::Concat(parts) => parts.iter().map(Self::dim).sum(),
        }
    }

    /// The sentence encoder whose embedding the features need, if any.
    pub fn encoder(&self) -> Option<&Arc<Encoder>> {
        match self {
            Self::Encoder(e) => Some(e),
            Self::Concat(parts) => parts.iter().find_map(Self::encoder),
            _ => None,
        }
    }

    /// The featurizer `spec` names, with the artifact's encoder files.
    fn of(spec: &FeaturizerSpec, manifest: &Manifest, files: &Files) -> Result<Self, LoadError> {
        Ok(match spec {
            FeaturizerSpec::HashedNgram { version: 1, dim } if *dim > 0 => {
                Self::Hashed(HashedNgram { dim: *dim })
            }
            FeaturizerSpec::Minilm {
                version: 1,
                dim,
                max_tokens,
                ..
            } if *dim > 0 && *max_tokens > 0 => Self::Encoder(Arc::new(Encoder::new(
                files.get("encoder.onnx")?,
                files.get("tokenizer.json")?,
                *max_tokens,
                *dim,
                encoder_id(manifest, *max_tokens),
            )?)),
            FeaturizerSpec::Structure { version: 1, dim } if *dim == STRUCTURE_DIM => {
                Self::Structure
            }
            FeaturizerSpec::Concat {
                version: 1,
                dim,
                parts,
            } if parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| !matches!(p, FeaturizerSpec::Concat { .. }))
                && parts
                    .iter()
                    .filter(|p| matches!(p, FeaturizerSpec::Minilm { .. }))
                    .count()
                    <= 1 =>
            {
                let concat = Self::Concat(
                    parts
                        .iter()
                        .map(|p| Self::of(p, manifest, files))
                        .collect::<Result<_, _>>()?,
                );
                if dim.is_some_and(|d| d != concat.dim()) {
                    return Err(invalid(format!(
                        "concat featurizer: dim {dim:?} is not its parts' sum {}",
                        concat.dim()
                    )));
                }
                concat
            }
            other => return Err(invalid(format!("unsupported featurizer {other:?}"))),
        })
    }
}

/// Scores per candidate from a feature vector (see the table in `models/ARTIFACTS.md`).
enum Scorer {
    Knn {
        k: usize,
        labels: Vec<usize>,
        /// Without a projection, the training rows transposed (one run of `rows` values
        /// per dimension, so a sparse query reads only its non-zero runs); with one, the
        /// projected rows as they are (`rows` runs of `p`).
        columns: Vec<f32>,
        rows: usize,
        /// `projection` (`p x dim`, stored transposed): rows and queries are compared
        /// after projecting to `p` dimensions and normalising.
        projection: Option<(Vec<f32>, usize)>,
    },
    Onnx {
        sessions: SessionPool,
        columns: Vec<usize>,
    },
    /// `mf`, `graph` and `routerdc`: `score_m = H_m . (W e) + b_m`, with `W` stored
    /// transposed; `routerdc` (`cosine`) normalises `W e` first (its `H` rows are unit).
    Projected {
        cosine: bool,
        /// `personalized`: a score bias per user; `gmt`: a latent shift per user.
        users: Users,
        w_t: Vec<f32>,
        d: usize,
        h: Vec<f32>,
        b: Vec<f32>,
    },
    Hybrid {
        small: usize,
        large: usize,
        coef: Vec<f32>,
        intercept: f32,
        threshold: f32,
    },
    Fixed(Vec<f32>),
}

/// Per-user terms of the personalised strategies, by end-user id.
enum Users {
    None,
    /// Added to the scores (K values).
    Bias(HashMap<String, Vec<f32>>),
    /// Added to the projected query (d values).
    Latent(HashMap<String, Vec<f32>>),
}

/// A verified, ready routing model.
pub struct Model {
    pub manifest: Manifest,
    /// SHA-256 of `manifest.json` (which pins every other file).
    pub sha256: String,
    pub featurizer: Featurizer,
    scorer: Scorer,
    /// Candidate index by name.
    index: HashMap<String, usize>,
    /// Mean of input and output price per candidate (cost-aware routing).
    pub unit_price: Vec<f64>,
    calibration: Option<Calibration>,
    /// The validated operating points (conservative mode, the dollar knob).
    pub operating: Option<Operating>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("strategy", &self.manifest.strategy)
            .field("version", &self.manifest.version)
            .finish()
    }
}

/// `a . b` in eight lanes (so it vectorises), summed lane by lane at the end.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The `n` rows with the highest similarity (ties: the lower row), in one pass keeping a
/// sorted list of the best `n` (`n` is small: knn's `k`).
fn nearest(sims: &[f32], n: usize) -> Vec<usize> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(n + 1);
    for (r, s) in sims.iter().copied().enumerate() {
        if best.len() == n && best.last().is_some_and(|(w, _)| s <= *w) {
            continue;
        }
        // After the entries at least as similar (earlier rows win ties).
        let at = best.partition_point(|(b, _)| *b >= s);
        best.insert(at, (s, r));
        best.truncate(n);
    }
    best.into_iter().map(|(_, r)| r).collect()
}

/// `W e` for `W` stored transposed (`dim` runs of `d`), reading only `e`'s non-zero
/// entries.
fn project(w_t: &[f32], d: usize, e: &[f32]) -> Vec<f32> {
    let mut q = vec![0f32; d];
    for (i, x) in e.iter().enumerate().filter(|(_, x)| **x != 0.0) {
        for (acc, w) in q.iter_mut().zip(&w_t[i * d..(i + 1) * d]) {
            *acc += x * w;
        }
    }
    q
}

/// What identifies an encoder's embeddings: its model's and tokenizer's SHA-256 (from the
/// manifest, checked against the files) and its truncation.
fn encoder_id(manifest: &Manifest, max_tokens: usize) -> String {
    let file = |name: &str| manifest.files.get(name).map_or("", String::as_str);
    format!(
        "{}:{}:{max_tokens}",
        file("encoder.onnx"),
        file("tokenizer.json")
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    routeiq_proto::hex(&Sha256::digest(bytes))
}

/// Reads the manifest of an artifact.
pub fn manifest(bytes: &[u8]) -> Result<Manifest, LoadError> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| LoadError::Invalid(format!("{MANIFEST}: {e}")))?;
    if m.format != FORMAT {
        return Err(LoadError::Invalid(format!(
            "{MANIFEST}: format `{}` is not `{FORMAT}`",
            m.format
        )));
    }
    if m.candidates.is_empty() {
        return Err(LoadError::Invalid(format!("{MANIFEST}: no candidates")));
    }
    for name in m.files.keys() {
        if name.contains('/') || name.contains("..") || name == MANIFEST {
            return Err(LoadError::Invalid(format!(
                "{MANIFEST}: file name `{name}` is not a plain file of the artifact"
            )));
        }
    }
    Ok(m)
}

fn parse<T: serde::de::DeserializeOwned>(files: &Files, name: &str) -> Result<T, LoadError> {
    serde_json::from_slice(files.get(name)?).map_err(|e| LoadError::Invalid(format!("{name}: {e}")))
}

/// An artifact's files by name, each checked against the manifest's hash.
pub struct Files(HashMap<String, Vec<u8>>);

impl Files {
    /// Verifies `files` (every file the manifest lists, by name) against `manifest`.
    pub fn verified(
        manifest: &Manifest,
        files: HashMap<String, Vec<u8>>,
    ) -> Result<Self, LoadError> {
        for (name, want) in &manifest.files {
            let bytes = files
                .get(name)
                .ok_or_else(|| LoadError::Invalid(format!("`{name}` is missing")))?;
            let got = sha256_hex(bytes);
            if !got.eq_ignore_ascii_case(want) {
                return Err(LoadError::Invalid(format!(
                    "`{name}` has sha256 {got}, the manifest says {want}"
                )));
            }
        }
        Ok(Self(files))
    }

    fn get(&self, name: &str) -> Result<&[u8], LoadError> {
        self.0
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| LoadError::Invalid(format!("the artifact has no `{name}`")))
    }
}

#[derive(Deserialize)]
struct KnnParams {
    k: usize,
    labels: Vec<usize>,
    #[serde(default)]
    projection: Option<Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct MfParams {
    #[serde(rename = "W")]
    w: Vec<Vec<f32>>,
    #[serde(rename = "P")]
    p: Vec<Vec<f32>>,
    #[serde(rename = "w")]
    weights: Vec<f32>,
}

#[derive(Deserialize)]
struct GraphParams {
    #[serde(rename = "W")]
    w: Vec<Vec<f32>>,
    #[serde(rename = "H")]
    h: Vec<Vec<f32>>,
    b: Vec<f32>,
    /// `personalized` (K per user) and `gmt` (d per user).
    #[serde(default)]
    users: HashMap<String, Vec<f32>>,
}

#[derive(Deserialize)]
struct RouterDcParams {
    #[serde(rename = "W")]
    w: Vec<Vec<f32>>,
    #[serde(rename = "H")]
    h: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct HybridParams {
    small: usize,
    large: usize,
    coef: Vec<f32>,
    intercept: f32,
    threshold: f32,
}

#[derive(Deserialize)]
struct EloParams {
    ratings: Vec<f32>,
}

fn invalid(msg: String) -> LoadError {
    LoadError::Invalid(msg)
}

/// `W` (`d` rows of `dim`) transposed to `dim` runs of `d`.
fn transposed(w: &[Vec<f32>], dim: usize) -> Result<(Vec<f32>, usize), LoadError> {
    let d = w.len();
    if d == 0 || w.iter().any(|r| r.len() != dim) {
        return Err(invalid(format!("W must be a non-empty d x {dim} matrix")));
    }
    let mut t = vec![0f32; d * dim];
    for (j, row) in w.iter().enumerate() {
        for (i, x) in row.iter().enumerate() {
            t[i * d + j] = *x;
        }
    }
    Ok((t, d))
}

impl Model {
    /// Builds the model of a verified artifact (loads ONNX sessions: blocking work).
    pub fn build(manifest: Manifest, sha256: String, files: Files) -> Result<Self, LoadError> {
        let k = manifest.candidates.len();
        let featurizer = match &manifest.featurizer {
            None => Featurizer::None,
            Some(spec) => Featurizer::of(spec, &manifest, &files)?,
        };
        let dim = featurizer.dim();
        let needs_features = |f: &Featurizer| {
            if matches!(f, Featurizer::None) {
                Err(invalid(format!(
                    "strategy `{}` needs a featurizer",
                    manifest.strategy
                )))
            } else {
                Ok(())
            }
        };
        let scorer = match manifest.strategy.as_str() {
            "knn" => {
                needs_features(&featurizer)?;
                let p: KnnParams = parse(&files, "params.json")?;
                let projection = p
                    .projection
                    .as_deref()
                    .map(|w| transposed(w, dim))
                    .transpose()?;
                let width = projection.as_ref().map_or(dim, |(_, d)| *d);
                let raw = files.get("knn.f32")?;
                let rows = p.labels.len();
                if raw.len() != rows * width * 4 || p.k == 0 || p.labels.iter().any(|l| *l >= k) {
                    return Err(invalid(format!(
                        "knn.f32 has {} bytes, expected {rows} rows x {width} x 4; k {} labels < {k}",
                        raw.len(),
                        p.k
                    )));
                }
                let values = raw
                    .chunks_exact(4)
                    .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]));
                // Projected rows are dense: kept row by row for dot products. Sparse
                // (hashed) rows are transposed so a query reads only its non-zero runs.
                let columns = if projection.is_some() {
                    values.collect()
                } else {
                    let mut columns = vec![0f32; rows * width];
                    for (j, v) in values.enumerate() {
                        columns[(j % width) * rows + j / width] = v;
                    }
                    columns
                };
                Scorer::Knn {
                    k: p.k.min(rows),
                    labels: p.labels,
                    columns,
                    rows,
                    projection,
                }
            }
            "svm" | "mlp" => {
                needs_features(&featurizer)?;
                let columns = manifest
                    .score_columns
                    .clone()
                    .unwrap_or_else(|| (0..k).collect());
                if columns.iter().any(|c| *c >= k) {
                    return Err(invalid(
                        "score_columns names a candidate that does not exist".into(),
                    ));
                }
                let sessions = SessionPool::new(files.get("model.onnx")?, 2)?;
                Scorer::Onnx { sessions, columns }
            }
            "mf" => {
                needs_features(&featurizer)?;
                let p: MfParams = parse(&files, "params.json")?;
                let (w_t, d) = transposed(&p.w, dim)?;
                if p.p.len() != k || p.p.iter().any(|r| r.len() != d) || p.weights.len() != d {
                    return Err(invalid(format!("mf: P must be {k} x {d} and w {d} long")));
                }
                let mut h = Vec::with_capacity(k * d);
                for row in &p.p {
                    let norm = row
                        .iter()
                        .map(|x| f64::from(*x).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let norm = if norm > 0.0 { norm } else { 1.0 };
                    h.extend(
                        row.iter()
                            .zip(&p.weights)
                            .map(|(x, w)| (f64::from(*x) / norm) as f32 * w),
                    );
                }
                Scorer::Projected {
                    cosine: false,
                    users: Users::None,
                    w_t,
                    d,
                    h,
                    b: vec![0.0; k],
                }
            }
            "graph" | "personalized" | "gmt" => {
                needs_features(&featurizer)?;
                let p: GraphParams = parse(&files, "params.json")?;
                let (w_t, d) = transposed(&p.w, dim)?;
                let strategy = manifest.strategy.as_str();
                if p.h.len() != k || p.h.iter().any(|r| r.len() != d) || p.b.len() != k {
                    return Err(invalid(format!(
                        "{strategy}: H must be {k} x {d} and b {k} long"
                    )));
                }
                let (users, width) = match strategy {
                    "personalized" => (Users::Bias(p.users), k),
                    "gmt" => (Users::Latent(p.users), d),
                    _ => (Users::None, 0),
                };
                let bad = match &users {
                    Users::Bias(u) | Users::Latent(u) => u.iter().find(|(_, v)| v.len() != width),
                    Users::None => None,
                };
                if let Some((user, _)) = bad {
                    return Err(invalid(format!(
                        "{strategy}: user `{user}` must have {width} values"
                    )));
                }
                Scorer::Projected {
                    cosine: false,
                    users,
                    w_t,
                    d,
                    h: p.h.concat(),
                    b: p.b,
                }
            }
            "routerdc" => {
                needs_features(&featurizer)?;
                let p: RouterDcParams = parse(&files, "params.json")?;
                let (w_t, d) = transposed(&p.w, dim)?;
                if p.h.len() != k || p.h.iter().any(|r| r.len() != d) {
                    return Err(invalid(format!("routerdc: H must be {k} x {d}")));
                }
                let mut h = p.h.concat();
                for row in h.chunks_exact_mut(d) {
                    super::featurize::normalise(row);
                }
                Scorer::Projected {
                    cosine: true,
                    users: Users::None,
                    w_t,
                    d,
                    h,
                    b: vec![0.0; k],
                }
            }
            "hybrid" => {
                needs_features(&featurizer)?;
                let p: HybridParams = parse(&files, "params.json")?;
                if p.small >= k || p.large >= k || p.coef.len() != dim {
                    return Err(invalid(format!(
                        "hybrid: small/large < {k}, coef {dim} long"
                    )));
                }
                Scorer::Hybrid {
                    small: p.small,
                    large: p.large,
                    coef: p.coef,
                    intercept: p.intercept,
                    threshold: p.threshold,
                }
            }
            "elo" => {
                let p: EloParams = parse(&files, "params.json")?;
                if p.ratings.len() != k {
                    return Err(invalid(format!("elo: {k} ratings expected")));
                }
                Scorer::Fixed(p.ratings)
            }
            "smallest" => Scorer::Fixed(
                manifest
                    .candidates
                    .iter()
                    .map(|c| -c.size_b as f32)
                    .collect(),
            ),
            "largest" => Scorer::Fixed(
                manifest
                    .candidates
                    .iter()
                    .map(|c| c.size_b as f32)
                    .collect(),
            ),
            other => return Err(invalid(format!("unknown strategy `{other}`"))),
        };
        let index = manifest
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let unit_price = manifest
            .candidates
            .iter()
            .map(|c| (c.input_price + c.output_price) / 2.0)
            .collect();
        let calibration = manifest
            .calibration
            .as_ref()
            .map(|c| Calibration::of(c, k))
            .transpose()
            .map_err(invalid)?;
        if manifest.operating.is_some() && calibration.is_none() {
            // Its margin and cost weights are in the calibrated scale.
            return Err(invalid("operating points need a calibration".into()));
        }
        let operating = manifest
            .operating
            .as_ref()
            .map(|o| Operating::of(o, k))
            .transpose()
            .map_err(invalid)?;
        Ok(Self {
            manifest,
            sha256,
            featurizer,
            scorer,
            index,
            unit_price,
            calibration,
            operating,
        })
    }

    pub fn candidate(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn strategy(&self) -> &str {
        &self.manifest.strategy
    }

    /// One score per candidate (`None`: unscored) from the query's features (`e` is empty
    /// for query-independent strategies): a probability when the artifact is calibrated.
    /// `user`: the request's end user, for the personalised strategies.
    pub fn scores<'a>(
        &'a self,
        e: &[f32],
        user: Option<&str>,
    ) -> Result<Vec<Option<f32>>, LoadError> {
        let k = self.manifest.candidates.len();
        let dim = self.featurizer.dim();
        if e.len() != dim {
            return Err(invalid(format!(
                "features have {} values, the model {dim}",
                e.len()
            )));
        }
        let mut scores = match &self.scorer {
            Scorer::Fixed(s) => s.iter().copied().map(Some).collect(),
            Scorer::Knn {
                k: nn,
                labels,
                columns,
                rows,
                projection,
            } => {
                let sims = match projection {
                    Some((p_t, d)) => {
                        let mut q = project(p_t, *d, e);
                        super::featurize::normalise(&mut q);
                        columns.chunks_exact(*d).map(|row| dot(row, &q)).collect()
                    }
                    None => {
                        let mut sims = vec![0f32; *rows];
                        for (i, x) in e.iter().enumerate().filter(|(_, x)| **x != 0.0) {
                            let col = &columns[i * rows..(i + 1) * rows];
                            for (s, c) in sims.iter_mut().zip(col) {
                                *s += x * c;
                            }
                        }
                        sims
                    }
                };
                let mut votes = vec![0f32; k];
                for r in nearest(&sims, *nn) {
                    votes[labels[r]] += 1.0;
                }
                votes.iter().map(|v| Some(v / *nn as f32)).collect()
            }
            Scorer::Onnx { sessions, columns } => {
                let out = sessions.scores(e)?;
                if out.len() != columns.len() {
                    return Err(invalid(format!(
                        "the model returned {} scores for {} columns",
                        out.len(),
                        columns.len()
                    )));
                }
                let mut s = vec![None; k];
                for (c, v) in columns.iter().zip(out) {
                    s[*c] = Some(v);
                }
                s
            }
            Scorer::Projected {
                cosine,
                users,
                w_t,
                d,
                h,
                b,
            } => {
                let mut q = project(w_t, *d, e);
                if *cosine {
                    super::featurize::normalise(&mut q);
                }
                let of = |u: &'a HashMap<String, Vec<f32>>| user.and_then(|id| u.get(id));
                if let Some(shift) = match users {
                    Users::Latent(u) => of(u),
                    _ => None,
                } {
                    for (x, s) in q.iter_mut().zip(shift) {
                        *x += s;
                    }
                }
                let bias = match users {
                    Users::Bias(u) => of(u),
                    _ => None,
                };
                h.chunks_exact(*d)
                    .zip(b)
                    .enumerate()
                    .map(|(m, (hm, bm))| {
                        let s = hm.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>() + bm;
                        Some(s + bias.map_or(0.0, |v| v[m]))
                    })
                    .collect()
            }
            Scorer::Hybrid {
                small,
                large,
                coef,
                intercept,
                threshold,
            } => {
                let gap: f32 = coef.iter().zip(e).map(|(c, x)| c * x).sum::<f32>() + intercept;
                let mut s = vec![None; k];
                let up = gap > *threshold;
                s[*large] = Some(if up { 1.0 } else { 0.0 });
                s[*small] = Some(if up { 0.0 } else { 1.0 });
                s
            }
        };
        if let Some(c) = &self.calibration {
            c.apply(&mut scores);
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::{dot, nearest};

    #[test]
    fn dot_products_in_lanes() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn nearest_rows_by_similarity_then_lower_row() {
        let sims = [0.1, 0.9, 0.5, 0.9, 0.5, -1.0];
        assert_eq!(nearest(&sims, 1), vec![1]);
        assert_eq!(nearest(&sims, 3), vec![1, 3, 2]);
        assert_eq!(nearest(&sims, 4), vec![1, 3, 2, 4]);
        assert_eq!(nearest(&sims, 10), vec![1, 3, 2, 4, 0, 5]);
    }
}
