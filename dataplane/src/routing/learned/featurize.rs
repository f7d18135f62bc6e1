//! Query featurizers shared by the learned strategies (`models/ARTIFACTS.md`): the hashed
//! n-gram featurizer and the structure measures, computed inline in a few microseconds,
//! and the MiniLM sentence encoder, run on the blocking pool behind a semaphore and cached
//! by prompt hash.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tokenizers::Tokenizer;

use super::onnx::SessionPool;
use super::LoadError;

/// Bytes of the query the hashed featurizer reads.
const MAX_QUERY_BYTES: usize = 8192;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// `hashed-ngram` version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashedNgram {
    pub dim: usize,
}

impl HashedNgram {
    /// The L2-normalised feature vector of `text`.
    pub fn features(&self, text: &str) -> Vec<f32> {
        let bytes = &text.as_bytes()[..text.len().min(MAX_QUERY_BYTES)];
        let lower: Vec<u8> = bytes.iter().map(u8::to_ascii_lowercase).collect();
        let words: Vec<&[u8]> = lower
            .split(|b| !(b.is_ascii_alphanumeric() || *b >= 0x80))
            .filter(|w| !w.is_empty())
            .collect();
        let mut v = vec![0f32; self.dim];
        let mut add = |parts: &[&[u8]]| {
            let h = fnv1a(parts);
            let bucket = (h % self.dim as u64) as usize;
            v[bucket] += if h >> 63 == 0 { 1.0 } else { -1.0 };
        };
        let mut gram = Vec::with_capacity(64);
        for (i, w) in words.iter().enumerate() {
            add(&[b"w:", w]);
            if let Some(next) = words.get(i + 1) {
                add(&[b"b:", w, b" ", next]);
            }
            gram.clear();
            gram.push(b'^');
            gram.extend_from_slice(w);
            gram.push(b'$');
            for tri in gram.windows(3) {
                add(&[b"c:", tri]);
            }
        }
        let bits = usize::BITS - words.len().leading_zeros();
        add(&[b"n:", bits.to_string().as_bytes()]);
        normalise(&mut v);
        v
    }
}

/// Values of `structure` version 1.
pub const STRUCTURE_DIM: usize = 16;
const CODE_MARKERS: [&[u8]; 8] = [
    b"```",
    b"def ",
    b"return",
    b"#include",
    b"function",
    b"=>",
    b"import ",
    b"class ",
];
const MATH_MARKERS: [&[u8]; 3] = [b"$", b"\\", b"^"];

/// `structure` version 1: 16 measures of the query's form, each in [0, 1], computed in f64
/// and stored in f32 (`models/ARTIFACTS.md` defines each).
pub fn structure(text: &str) -> [f32; STRUCTURE_DIM] {
    let raw = &text.as_bytes()[..text.len().min(MAX_QUERY_BYTES)];
    // One pass counting each class of byte, words and option letters.
    let mut c = Counts::default();
    let mut prev = b'\n';
    let mut in_word = false;
    let mut options = [false; 5];
    for (i, &b) in raw.iter().enumerate() {
        let word_byte = b.is_ascii_alphanumeric() || b >= 0x80;
        if word_byte {
            c.word_bytes += 1;
            c.words += usize::from(!in_word);
        }
        in_word = word_byte;
        match b {
            b'0'..=b'9' => c.digits += 1,
            b'A'..=b'Z' => {
                c.upper += 1;
                if b <= b'E' {
                    let next = raw.get(i + 1).copied().unwrap_or(0);
                    if (prev == b'(' && next == b')')
                        || (matches!(prev, b' ' | b'\t' | b'\n')
                            && matches!(next, b'.' | b')' | b':'))
                    {
                        options[usize::from(b - b'A')] = true;
                    }
                }
            }
            b' ' | b'\t' | b'\r' => c.space += 1,
            b'\n' => {
                c.space += 1;
                c.newlines += 1;
            }
            0x80.. => c.high += 1,
            _ => {}
        }
        if (33..=126).contains(&b) && !b.is_ascii_alphanumeric() {
            c.punct += 1;
            match b {
                b'+' | b'-' | b'*' | b'/' | b'=' | b'^' | b'<' | b'>' => c.math += 1,
                b'{' | b'}' | b'[' | b']' | b';' => c.code += 1,
                b'?' => c.questions += 1,
                _ => {}
            }
        }
        prev = b;
    }
    let n = raw.len().max(1) as f64;
    let share = |x: usize| x as f64 / n;
    let contains = |m: &[u8]| memchr::memmem::find(raw, m).is_some();
    let end = raw.len()
        - raw
            .iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
    let stripped = &raw[..end];
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    let log = |x: usize, scale: f64| ((1.0 + x as f64).log2() / scale).min(1.0);
    let v: [f64; STRUCTURE_DIM] = [
        log(raw.len(), 13.0),
        log(c.words, 12.0),
        log(c.newlines, 12.0),
        share(c.digits),
        share(c.upper),
        share(c.high),
        share(c.space),
        share(c.punct),
        share(c.math),
        share(c.code),
        c.questions.min(4) as f64 / 4.0,
        flag(stripped.ends_with(b"?") || stripped.ends_with("\u{ff1f}".as_bytes())),
        flag(CODE_MARKERS.iter().any(|m| contains(m))),
        flag(MATH_MARKERS.iter().any(|m| contains(m))),
        options.iter().filter(|o| **o).count() as f64 / 5.0,
        (c.word_bytes as f64 / c.words.max(1) as f64).min(20.0) / 20.0,
    ];
    v.map(|x| x as f32)
}

/// Byte counts of a query for [`structure`].
#[derive(Default)]
struct Counts {
    words: usize,
    word_bytes: usize,
    digits: usize,
    upper: usize,
    high: usize,
    space: usize,
    newlines: usize,
    punct: usize,
    math: usize,
    code: usize,
    questions: usize,
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// L2 normalisation computed in f64, as the pipeline does.
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// Sentence embeddings cached per prompt hash.
const CACHE_ENTRIES: usize = 4096;

/// all-MiniLM-L6-v2 in ONNX: tokenise (truncated, unpadded), encode, mean-pool, normalise.
pub struct Encoder {
    tokenizer: Tokenizer,
    sessions: SessionPool,
    pub dim: usize,
    /// Tokens read at most (the rest of a longer text is cut off).
    pub max_tokens: usize,
    /// Identifies the embeddings this encoder makes (its files and truncation): vectors of
    /// two encoders are not comparable.
    pub id: Arc<str>,
    cache: Mutex<lru::LruCache<u64, Arc<[f32]>>>,
    /// Bounds the embeddings computed at once (one per pooled session).
    permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("dim", &self.dim).finish()
    }
}

impl Encoder {
    pub fn new(
        model: &[u8],
        tokenizer: &[u8],
        max_tokens: usize,
        dim: usize,
        id: String,
    ) -> Result<Self, LoadError> {
        let mut tokenizer = Tokenizer::from_bytes(tokenizer)
            .map_err(|e| LoadError::Invalid(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| LoadError::Invalid(format!("tokenizer truncation: {e}")))?;
        let sessions = SessionPool::new(model, encoder_sessions())?;
        let permits = Arc::new(tokio::sync::Semaphore::new(sessions.size()));
        Ok(Self {
            tokenizer,
            sessions,
            dim,
            max_tokens,
            id: id.into(),
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
            permits,
        })
    }

    fn cached(&self, key: u64) -> Option<Arc<[f32]>> {
        self.cache.lock().ok()?.get(&key).cloned()
    }

    /// The embedding of `text`, computed on the blocking pool (at most one per pooled
    /// session at a time) unless cached.
    pub async fn embed(self: &Arc<Self>, text: &Arc<str>) -> Result<Arc<[f32]>, LoadError> {
        let key = prompt_hash(text);
        if let Some(e) = self.cached(key) {
            return Ok(e);
        }
        let t = Arc::clone(text);
        let e = self.on_pool(move |me| me.embed_now(&t)).await?;
        self.keep(key, &e);
        Ok(e)
    }

    /// [`Encoder::embed_whole`] on the blocking pool, unless cached.
    pub async fn embed_whole_async(
        self: &Arc<Self>,
        text: &Arc<str>,
    ) -> Result<Option<Arc<[f32]>>, LoadError> {
        let key = prompt_hash(text);
        // A cached embedding may be of a cut text; a short text's is whole.
        if let Some(e) = self.cached(key).filter(|_| self.short(text)) {
            return Ok(Some(e));
        }
        let t = Arc::clone(text);
        let e = self.on_pool(move |me| me.embed_whole(&t)).await?;
        if let Some(e) = &e {
            self.keep(key, e);
        }
        Ok(e)
    }

    async fn on_pool<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Encoder) -> Result<T, LoadError> + Send + 'static,
    ) -> Result<T, LoadError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| LoadError::Invalid("encoder closed".into()))?;
        let me = Arc::clone(self);
        // The permit goes with the work: a caller that stops waiting does not free it
        // before the embedding is done.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&me)
        })
        .await
        .map_err(|e| LoadError::Invalid(format!("encoder task: {e}")))?
    }

    fn keep(&self, key: u64, e: &Arc<[f32]>) {
        if let Ok(mut c) = self.cache.lock() {
            c.put(key, Arc::clone(e));
        }
    }

    /// A text this short always fits: a WordPiece token (all-MiniLM-L6-v2's tokenizer) is
    /// at least one byte of the text, plus [CLS] and [SEP].
    fn short(&self, text: &str) -> bool {
        text.len() + 2 <= self.max_tokens
    }

    /// The embedding of the whole of `text`, on this thread; `None` when the encoder would
    /// read only its first [`Encoder::max_tokens`] tokens (two texts alike up to there
    /// would get the same embedding).
    pub fn embed_whole(&self, text: &str) -> Result<Option<Arc<[f32]>>, LoadError> {
        let enc = self.tokenize(text)?;
        if !enc.get_overflowing().is_empty() {
            return Ok(None);
        }
        self.embed_encoding(&enc).map(Some)
    }

    fn tokenize(&self, text: &str) -> Result<tokenizers::Encoding, LoadError> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| LoadError::Invalid(format!("tokenize: {e}")))
    }

    /// The embedding of `text`, on this thread.
    pub fn embed_now(&self, text: &str) -> Result<Arc<[f32]>, LoadError> {
        self.embed_encoding(&self.tokenize(text)?)
    }

    fn embed_encoding(&self, enc: &tokenizers::Encoding) -> Result<Arc<[f32]>, LoadError> {
        let ids: Vec<i64> = enc.get_ids().iter().map(|x| i64::from(*x)).collect();
        let mask: Vec<i64> = enc
            .get_attention_mask()
            .iter()
            .map(|x| i64::from(*x))
            .collect();
        let types: Vec<i64> = enc.get_type_ids().iter().map(|x| i64::from(*x)).collect();
        let tokens = ids.len();
        let hidden = self.sessions.encode(ids, mask, types)?;
        if tokens == 0 || hidden.len() != tokens * self.dim {
            return Err(LoadError::Invalid(format!(
                "encoder returned {} values for {tokens} tokens of dimension {}",
                hidden.len(),
                self.dim
            )));
        }
        let mut pooled = vec![0f32; self.dim];
        for row in hidden.chunks_exact(self.dim) {
            for (p, x) in pooled.iter_mut().zip(row) {
                *p += x;
            }
        }
        for p in pooled.iter_mut() {
            *p /= tokens as f32;
        }
        normalise(&mut pooled);
        Ok(pooled.into())
    }
}

/// Sessions (and concurrent embeddings) per encoder: the cores, at most 4.
fn encoder_sessions() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

fn prompt_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word() {
        let f = HashedNgram { dim: 1 << 20 };
        let v = f.features("Hi");
        // w:hi, c:^hi, c:hi$, n:1: four features, each ±1 in its own bucket.
        let nonzero: Vec<f32> = v.iter().copied().filter(|x| *x != 0.0).collect();
        assert_eq!(nonzero.len(), 4);
        assert!(nonzero.iter().all(|x| (x.abs() - 0.5).abs() < 1e-7));
        let h = fnv1a(&[b"w:", b"hi"]);
        let expect = if h >> 63 == 0 { 0.5 } else { -0.5 };
        assert_eq!(v[(h % (1 << 20)) as usize], expect);
    }

    #[test]
    fn empty_and_case() {
        let f = HashedNgram { dim: 64 };
        let empty = f.features("");
        assert_eq!(empty.iter().filter(|x| **x != 0.0).count(), 1);
        assert_eq!(f.features("Hello World"), f.features("hello world"));
        assert_eq!(f.features("hello, world!"), f.features("hello world"));
    }

    #[test]
    fn long_input_is_bounded() {
        let f = HashedNgram { dim: 256 };
        let long = "word ".repeat(10_000);
        let v = f.features(&long);
        let norm: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn structure_of_a_short_question() {
        let v = structure("What is 2+2?");
        let n = 12.0;
        let want = [
            13f64.log2() / 13.0,
            5f64.log2() / 12.0,
            0.0,
            2.0 / n,
            1.0 / n,
            0.0,
            2.0 / n,
            2.0 / n,
            1.0 / n,
            0.0,
            0.25,
            1.0,
            0.0,
            0.0,
            0.0,
            8.0 / 4.0 / 20.0,
        ];
        for (i, (got, want)) in v.iter().zip(want).enumerate() {
            assert_eq!(*got, want as f32, "measure {i}");
        }
        assert_eq!(structure(""), [0.0; STRUCTURE_DIM]);
    }

    #[test]
    fn structure_markers() {
        let mc = "Pick one:\n(A) red\n(B) blue\nC. green\nD: plain A) B.";
        assert_eq!(structure(mc)[14], 0.8);
        assert_eq!(structure("Plan A is fine")[14], 0.0);
        assert_eq!(structure("```py\nx = 1\n```")[12], 1.0);
        assert_eq!(structure("compute $x^2$")[13], 1.0);
        let cjk = structure("机器学习是什么？");
        assert_eq!((cjk[5], cjk[11]), (1.0, 1.0));
        let long = "Why? ".repeat(5000);
        let v = structure(&long);
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)), "{v:?}");
        assert_eq!(v, structure(&long[..8192]));
    }

    /// The pipeline's own vectors for the parity queries and a few more
    /// (`tests/fixtures/llmrouter/structure_expected.json`, checked on the Python side to
    /// be its current output): equal value for value.
    #[test]
    fn structure_matches_the_pipeline() {
        #[derive(serde::Deserialize)]
        struct Row {
            query: String,
            structure: Vec<f32>,
        }
        // Read when the test runs (not compiled in: image builds leave the fixtures out).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/llmrouter/structure_expected.json"
        );
        let rows: Vec<Row> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(rows.len() >= 40);
        for row in rows {
            assert_eq!(
                structure(&row.query).to_vec(),
                row.structure,
                "{:?}",
                row.query
            );
        }
    }
}
