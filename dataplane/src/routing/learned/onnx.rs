//! ONNX Runtime, loaded at run time (`ort` with `load-dynamic`): the shared library from
//! the PyPI `onnxruntime` wheel, found through `ORT_DYLIB_PATH` or next to the binary.
//! Nothing is downloaded at build time. Sessions need `&mut` to run, so each model keeps a
//! small pool of them.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;

use super::LoadError;

static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where the ONNX Runtime library is: `ORT_DYLIB_PATH`, else `libonnxruntime.so*` beside
/// the executable (the air-gapped bundle's layout).
fn library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
        .ok_or("cannot locate the executable's directory")?;
    std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .ok_or_else(|| {
            format!(
                "ONNX Runtime not found: set ORT_DYLIB_PATH to libonnxruntime.so (from the PyPI onnxruntime wheel, onnxruntime/capi/) or put it in {}",
                dir.display()
            )
        })
}

/// Loads ONNX Runtime once per process; later calls return the first outcome.
pub fn runtime() -> Result<&'static ort::environment::Environment, LoadError> {
    RUNTIME
        .get_or_init(|| {
            let path = library()?;
            let builder = ort::init_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let env = builder
                .with_name("routeiq")
                .build()
                .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
            tracing::info!(library = %path.display(), "ONNX Runtime loaded");
            Ok(env)
        })
        .as_ref()
        .map_err(|e| LoadError::Runtime(e.clone()))
}

/// Sessions of one model, each used by one caller at a time.
pub struct SessionPool {
    sessions: Vec<Mutex<Session>>,
}

fn onnx_err(what: &str) -> impl Fn(ort::Error) -> LoadError + '_ {
    move |e| LoadError::Invalid(format!("{what}: {e}"))
}

impl SessionPool {
    /// `n` single-threaded sessions of the model in `bytes`.
    pub fn new(bytes: &[u8], n: usize) -> Result<Self, LoadError> {
        let env = runtime()?;
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let session = Session::builder(env)
                .map_err(onnx_err("session options"))?
                .with_intra_threads(1)
                .map_err(|e| LoadError::Invalid(format!("session options: {e}")))?
                .with_inter_threads(1)
                .map_err(|e| LoadError::Invalid(format!("session options: {e}")))?
                // The runtime's fused skip-and-LayerNorm kernel is slower than the Add and
                // LayerNormalization it replaces (docs/benchmarks.md, "Thirty-third
                // session"); the training pipeline's encoder turns it off too, so both
                // embed alike. Scoring models have no LayerNorm.
                .with_disabled_optimizers("SkipLayerNormFusion")
                .map_err(|e| LoadError::Invalid(format!("session options: {e}")))?
                .commit_from_memory(bytes)
                .map_err(onnx_err("ONNX model"))?;
            sessions.push(Mutex::new(session));
        }
        Ok(Self { sessions })
    }

    /// Sessions in the pool.
    pub fn size(&self) -> usize {
        self.sessions.len()
    }

    /// A free session, else waits for the first.
    fn session(&self) -> Result<std::sync::MutexGuard<'_, Session>, LoadError> {
        for s in &self.sessions {
            if let Ok(g) = s.try_lock() {
                return Ok(g);
            }
        }
        self.sessions
            .first()
            .ok_or_else(|| LoadError::Invalid("no ONNX session".into()))?
            .lock()
            .map_err(|_| LoadError::Invalid("ONNX session poisoned".into()))
    }

    /// Runs a scoring model: input `features` `[1, dim]`, output `scores`.
    pub fn scores(&self, features: &[f32]) -> Result<Vec<f32>, LoadError> {
        let input = Tensor::from_array(([1usize, features.len()], features.to_vec()))
            .map_err(onnx_err("features tensor"))?;
        let mut session = self.session()?;
        let outputs = session
            .run(ort::inputs!["features" => input])
            .map_err(onnx_err("ONNX run"))?;
        let scores = outputs
            .get("scores")
            .ok_or_else(|| LoadError::Invalid("the model has no `scores` output".into()))?;
        let (_, data) = scores
            .try_extract_tensor::<f32>()
            .map_err(onnx_err("`scores` output"))?;
        Ok(data.to_vec())
    }

    /// Runs a sentence encoder; returns `last_hidden_state` `[1, T, dim]` flattened.
    pub fn encode(
        &self,
        ids: Vec<i64>,
        mask: Vec<i64>,
        types: Vec<i64>,
    ) -> Result<Vec<f32>, LoadError> {
        let t = ids.len();
        let tensor =
            |v: Vec<i64>| Tensor::from_array(([1usize, t], v)).map_err(onnx_err("token tensor"));
        let (ids, mask, types) = (tensor(ids)?, tensor(mask)?, tensor(types)?);
        let mut session = self.session()?;
        let outputs = session
            .run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
                "token_type_ids" => types,
            ])
            .map_err(onnx_err("encoder run"))?;
        let hidden = outputs
            .get("last_hidden_state")
            .ok_or_else(|| LoadError::Invalid("the encoder has no `last_hidden_state`".into()))?;
        let (_, data) = hidden
            .try_extract_tensor::<f32>()
            .map_err(onnx_err("`last_hidden_state`"))?;
        Ok(data.to_vec())
    }
}
