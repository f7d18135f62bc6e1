//! OpenAI and Azure OpenAI media: transcriptions and translations of a WAV upload
//! (`multipart/form-data`; the duration read from the WAV header is the usage), and
//! speech (the audio streamed back in chunks); image edits of a PNG upload.

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::{self, State};
use crate::openai::bearer_ok;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})),
    )
        .into_response()
}

/// A multipart body's plain fields, and its file's bytes.
type Form = (Vec<(String, String)>, Option<Vec<u8>>);

/// The fields and the file (its bytes) of a multipart body.
pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, String> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_owned())
        .ok_or("expected multipart/form-data with a boundary")?;
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut fields = Vec::new();
    let mut file = None;
    let mut rest = text;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let Some(start) = find(rest, delimiter.as_bytes()) else {
        return Err("no boundary".into());
    };
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").ok_or("bad boundary line")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("part headers do not end")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        rest = &rest[head_end + 4..];
        let end = find(rest, format!("\r\n{delimiter}").as_bytes()).ok_or("part does not end")?;
        let content = &rest[..end];
        rest = &rest[end + 2 + delimiter.len()..];
        let name = head
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.trim_matches('"').to_owned())
            .ok_or("part without a name")?;
        if head.contains("filename=") {
            file = Some(content.to_vec());
        } else {
            fields.push((name, String::from_utf8_lossy(content).to_string()));
        }
    }
    Ok((fields, file))
}

/// Seconds of audio in a PCM WAV file (data bytes / byte rate).
fn wav_seconds(wav: &[u8]) -> Option<f64> {
    if wav.len() < 44 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return None;
    }
    let byte_rate = u32::from_le_bytes(wav[28..32].try_into().ok()?) as f64;
    (byte_rate > 0.0).then(|| (wav.len() - 44) as f64 / byte_rate)
}

async fn answer(
    state: &State,
    task: &str,
    headers: &HeaderMap,
    body: Bytes,
    model: Option<String>,
) -> Response {
    let (fields, file) = match parse(headers, &body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let model = model.or_else(|| field("model")).unwrap_or_default();
    let size = file.as_ref().map_or(0, Vec::len);
    let mut recorded = json!({"file_bytes": size});
    for (k, v) in &fields {
        recorded[k] = json!(v);
    }
    state.record(&format!("/v1/audio/{task}"), headers, &recorded);
    let Some(file) = file else {
        return error(StatusCode::BAD_REQUEST, "file is required");
    };
    let Some(seconds) = wav_seconds(&file) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid file format. Supported formats: wav",
        );
    };
    if let (Some(e), _) = state.inject(&model, 1).await {
        return crate::openai::injected(e);
    }
    let text = format!("mock {task} of {size} bytes");
    match field("response_format").as_deref().unwrap_or("json") {
        "text" => (
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
        "verbose_json" => Json(json!({
            "task": task, "language": "english", "duration": seconds, "text": text, "segments": [],
        }))
        .into_response(),
        _ => Json(json!({"text": text, "usage": {"type": "duration", "seconds": seconds.ceil()}}))
            .into_response(),
    }
}

/// The task of an `audio/{task}` path's last segment.
fn task(segment: &str) -> Option<&'static str> {
    match segment {
        "transcriptions" => Some("transcription"),
        "translations" => Some("translation"),
        _ => None,
    }
}

/// `POST /v1/audio/{task}`: transcriptions and translations.
pub async fn openai(
    AxumState(state): AxumState<State>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !bearer_ok(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided");
    }
    let Some(task) = task(&segment) else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    answer(&state, task, &headers, body, None).await
}

/// `POST /openai/deployments/{deployment}/audio/{task}`: Azure's, the deployment standing
/// for the model.
pub async fn azure(
    AxumState(state): AxumState<State>,
    Path((deployment, segment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("api-key").is_none() {
        return error(StatusCode::UNAUTHORIZED, "missing api-key header");
    }
    let Some(task) = task(&segment) else {
        return error(StatusCode::NOT_FOUND, "Resource not found");
    };
    answer(&state, task, &headers, body, Some(deployment)).await
}

/// `POST /v1/audio/speech`: a fake audio file, about 100 bytes a character, in chunks.
pub async fn speech(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record("/v1/audio/speech", &headers, &body);
    if !bearer_ok(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided");
    }
    let input = body.get("input").and_then(Value::as_str).unwrap_or("");
    if input.is_empty() || body.get("voice").is_none() {
        return error(StatusCode::BAD_REQUEST, "input and voice are required");
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (fault, stream_fault) = state.inject(&model, 1).await;
    if let Some(e) = fault {
        return crate::openai::injected(e);
    }
    let (content_type, magic): (&'static str, &[u8]) =
        match body.get("response_format").and_then(Value::as_str) {
            Some("wav") => ("audio/wav", b"RIFF"),
            _ => ("audio/mpeg", b"ID3\x04"),
        };
    let total = input.chars().count() * 100;
    let mut audio = magic.to_vec();
    audio.extend((0..total).map(|i| (i % 251) as u8));
    let chunks = audio.chunks(4096).map(Bytes::copy_from_slice).collect();
    common::streamed(chunks, stream_fault, content_type)
}

/// `POST /v1/images/edits` (and Azure's `deployments/{d}/images/edits`): a PNG `image`
/// and a `prompt`, answered as an image generation.
async fn edit(state: &State, headers: &HeaderMap, body: Bytes, model: Option<String>) -> Response {
    let (fields, file) = match parse(headers, &body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let mut request = json!({"image_bytes": file.as_ref().map_or(0, Vec::len)});
    for (k, v) in &fields {
        request[k] = match k.as_str() {
            "n" => v.parse::<u64>().map_or(json!(v), |n| json!(n)),
            _ => json!(v),
        };
    }
    state.record("/v1/images/edits", headers, &request);
    if !file.is_some_and(|f| f.starts_with(b"\x89PNG")) {
        return error(StatusCode::BAD_REQUEST, "image must be a PNG file");
    }
    let model = model
        .or_else(|| {
            request
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    crate::openai::generate(state, request, model).await
}

pub async fn edits(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !bearer_ok(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided");
    }
    edit(&state, &headers, body, None).await
}

pub async fn azure_edits(
    AxumState(state): AxumState<State>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("api-key").is_none() {
        return error(StatusCode::UNAUTHORIZED, "missing api-key header");
    }
    edit(&state, &headers, body, Some(deployment)).await
}
