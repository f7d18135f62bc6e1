//! OpenAI's endpoints that take a `multipart/form-data` upload: `POST
//! /v1/audio/transcriptions`, `/v1/audio/translations`, `/v1/images/edits` and
//! `/v1/files`, to OpenAI and Azure deployments, through the same keys, access, limits,
//! budgets, routing, usage and cost as chat.
//!
//! The gateway reads the fields before the first file part (`model` first of all), renames
//! the model in place, and streams the rest of the upload to the deployment as it arrives:
//! an upload is never held whole. When `model` comes after a file (`curl -F file=@a.wav -F
//! model=...`), the body is read whole, within the request size limit, to find it.
//!
//! An upload cannot be replayed, so these requests are not retried or sent to fallbacks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::Value;

use super::attempt;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::multipart::{self, Parts};
use crate::providers::{self, Operation};
use crate::respond;
use crate::routing::Lease;
use crate::state::{App, LiveState};
use crate::upstream::{BodySource, UpstreamRequest};

/// The fields before an upload's file part may take this much; past it the body is read
/// whole (within the request size limit) as if `model` came after the file.
const HEAD_LIMIT: usize = 1024 * 1024;
/// The `response_format`s of OpenAI's transcriptions and translations.
const TRANSCRIPT_FORMATS: &[&str] = &[
    "json",
    "text",
    "srt",
    "verbose_json",
    "vtt",
    "diarized_json",
];

/// Largest answer accepted (edited images come back as base64).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// What is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Transcriptions,
    Translations,
    ImageEdits,
    /// A file for batches (or fine-tuning): kept by the deployment, its id naming it
    /// (`held`). The model group comes from `target_model_names` (LiteLLM's field) or
    /// `model`, and is not sent on.
    Files,
}

impl Upload {
    /// The provider operation; `None` for files, which are not a model call.
    fn op(self) -> Option<Operation> {
        match self {
            Self::Transcriptions => Some(Operation::Transcriptions),
            Self::Translations => Some(Operation::Translations),
            Self::ImageEdits => Some(Operation::ImageEdits),
            Self::Files => None,
        }
    }

    /// The `model_info.mode` of deployments that serve it (`None`: any).
    fn mode(self) -> Option<&'static str> {
        match self {
            Self::Transcriptions | Self::Translations => Some("audio_transcription"),
            Self::ImageEdits => Some("image_generation"),
            Self::Files => None,
        }
    }

    /// The field that names the model group, and whether it goes upstream (renamed).
    fn model_field(self, parts: &Parts, body: &[u8]) -> Option<(String, bool)> {
        let named = |f: &str| parts.field(body, f).filter(|m| !m.is_empty());
        match self {
            Self::Files => named("target_model_names")
                .map(|m| m.split(',').next().unwrap_or_default().trim())
                .or_else(|| named("model"))
                .map(|m| (m.to_owned(), false)),
            _ => named("model").map(|m| (m.to_owned(), true)),
        }
    }

    /// Whether a file part's field name is the one the endpoint takes.
    fn takes_file(self, name: &str) -> bool {
        match self {
            Self::Transcriptions | Self::Translations | Self::Files => name == "file",
            Self::ImageEdits => matches!(name, "image" | "image[]"),
        }
    }

    /// Fields the endpoint requires besides the model and the file.
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::ImageEdits => &["prompt"],
            Self::Files => &["purpose"],
            Self::Transcriptions | Self::Translations => &[],
        }
    }

    /// Whether the head holds what the request is checked and routed on.
    fn head_complete(self, parts: &Parts, body: &[u8]) -> bool {
        self.model_field(parts, body).is_some()
            && self
                .required()
                .iter()
                .all(|f| parts.field(body, f).is_some())
    }

    /// The file field, for errors.
    fn file_field(self) -> &'static str {
        match self {
            Self::Transcriptions | Self::Translations | Self::Files => "file",
            Self::ImageEdits => "image",
        }
    }
}

/// The client's body after the part already read: chunks as they arrive, no more than
/// the content length declared.
struct ClientBody<'s> {
    session: &'s mut Session,
    left: usize,
}

#[async_trait::async_trait]
impl BodySource for ClientBody<'_> {
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        if self.left == 0 {
            return Ok(None);
        }
        match self.session.read_request_body().await {
            Ok(Some(chunk)) if chunk.len() <= self.left => {
                self.left -= chunk.len();
                Ok(Some(chunk))
            }
            Ok(Some(_)) => Err(ApiError::bad_request(
                "the request body is longer than its content-length",
            )),
            Ok(None) => Err(ApiError::bad_request(
                "the request body ended before its content-length",
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "could not read the request body: {}",
                e.etype().as_str()
            ))),
        }
    }
}

/// Reads the body until the fields before its file part are known: the bytes read and
/// the parts. All of it is read when the client sent no length, or when `model` or a
/// required field comes after the file (`curl -F file=@a.wav -F model=...`). The
/// beginning is parsed again only once it has doubled, so a client that sends it byte by
/// byte costs linear time.
async fn read_head(
    session: &mut Session,
    kind: Upload,
    boundary: &str,
    limit: usize,
    declared: Option<usize>,
) -> Result<(BytesMut, Parts), ApiError> {
    let mut buf = BytesMut::new();
    let mut whole = declared.is_none();
    let mut parsed_at = 0;
    loop {
        if !whole && buf.len() >= (2 * parsed_at).max(1) {
            parsed_at = buf.len();
            if let Some(parts) = multipart::parse(&buf, boundary, false)? {
                if parts.end || kind.head_complete(&parts, &buf) {
                    return Ok((buf, parts));
                }
                // The file comes before `model` or a required field: read on to the end.
                whole = true;
            } else if buf.len() > HEAD_LIMIT {
                whole = true;
            }
        }
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    session.set_keepalive(None);
                    return Err(ApiError::too_large(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => {
                let parts = multipart::parse(&buf, boundary, true)?
                    .ok_or_else(|| ApiError::bad_request("the multipart body is incomplete"))?;
                return Ok((buf, parts));
            }
            Err(e) => {
                session.set_keepalive(None);
                return Err(ApiError::bad_request(format!(
                    "could not read the request body: {}",
                    e.etype().as_str()
                )));
            }
        }
    }
}

pub async fn upload(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    kind: Upload,
) -> Result<(), ApiError> {
    let header = session.req_header();
    let content_type = header
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(boundary) = multipart::boundary(&content_type).map(str::to_owned) else {
        return Err(ApiError::bad_request(
            "the body must be multipart/form-data with a `file` and a `model`",
        ));
    };
    let declared = header
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let limit = live.max_request_body_bytes;
    if declared.is_some_and(|n| n > limit) {
        session.set_keepalive(None);
        return Err(ApiError::too_large(limit));
    }
    let (head, parts) = read_head(session, kind, &boundary, limit, declared).await?;
    let unread = declared.is_some_and(|n| n > head.len());
    let sent = forward(
        app,
        live,
        session,
        ctx,
        kind,
        content_type,
        declared,
        head,
        parts,
    )
    .await;
    if sent.is_err() && unread {
        // The rest of the upload stays unread: the connection cannot be reused.
        session.set_keepalive(None);
    }
    sent
}

/// Checks an upload whose head is read, and streams it to a deployment.
#[allow(clippy::too_many_arguments)]
async fn forward(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    kind: Upload,
    content_type: String,
    declared: Option<usize>,
    head: BytesMut,
    parts: Parts,
) -> Result<(), ApiError> {
    let Some((model, model_goes_up)) = kind.model_field(&parts, &head) else {
        return Err(match kind {
            Upload::Files => ApiError::bad_request(
                "name the model group whose deployment keeps the file: `target_model_names` \
                 (or `model`)",
            )
            .with_param("target_model_names"),
            _ => ApiError::missing_field("model"),
        });
    };
    if parts
        .file
        .as_ref()
        .is_none_or(|(name, _)| !kind.takes_file(name))
    {
        return Err(ApiError::missing_field(kind.file_field()));
    }
    for field in kind.required() {
        if parts.field(&head, field).is_none_or(str::is_empty) {
            return Err(ApiError::missing_field(field));
        }
    }
    if matches!(kind, Upload::Transcriptions | Upload::Translations) {
        if let Some(format) = parts.field(&head, "response_format") {
            if !TRANSCRIPT_FORMATS.contains(&format) {
                return Err(ApiError::bad_request(format!(
                    "`response_format` `{format}` is not one of {}",
                    TRANSCRIPT_FORMATS.join(", ")
                ))
                .with_param("response_format"));
            }
        }
    }
    crate::access::check(live, ctx.key.as_deref(), &model)?;
    if let (Some(mode), Some(op)) = (kind.mode(), kind.op()) {
        super::check_mode(live, &model, Some(mode), op)?;
    }
    let (plan, d) = attempt::plan(
        app,
        live,
        ctx,
        attempt::Request {
            model: &model,
            // The audio is not text: only the fields count towards the prompt.
            body_len: parts.fields.iter().map(|f| f.value.len()).sum(),
            max_tokens: Some(0),
            stream: false,
            tags: Vec::new(),
            query: None,
            pinned: None,
        },
    )
    .await?;
    if !super::held::supported(&d) {
        plan.abandon(&d);
        return Err(match kind.op() {
            Some(op) => providers::unsupported(&d.deployment, d.deployment.provider.as_str(), op),
            None => ApiError::unsupported(format!(
                "model group `{model}` is served by {}, which RouteIQ does not keep files at",
                d.deployment.provider.as_str()
            ))
            .with_param("target_model_names"),
        });
    }
    let Some(target) = d.target.as_ref() else {
        plan.abandon(&d);
        return Err(ApiError::unsupported(format!(
            "{} has no upstream address",
            d.label
        )));
    };
    let head_len = head.len();
    let model_fields: Vec<&multipart::Field> = parts
        .fields
        .iter()
        .filter(|f| f.name == "model" || (kind == Upload::Files && f.name == "target_model_names"))
        .collect();
    if model_goes_up && model_fields.len() > 1 {
        return Err(ApiError::bad_request(
            "the upload names its model more than once; send one `model`",
        )
        .with_param("model"));
    }
    let first = match model_fields.as_slice() {
        [f] if model_goes_up => multipart::replace(&head, f, &d.deployment.upstream_model),
        // Fields the provider does not take, last first so that earlier ranges hold.
        fields if !model_goes_up => fields
            .iter()
            .rev()
            .fold(head.freeze(), |body, f| multipart::remove(&body, f)),
        _ => head.freeze(),
    };
    // The part read (renamed), then what is left of the declared length, streamed.
    let left = declared.map_or(0, |n| n.saturating_sub(head_len));
    let mut req: UpstreamRequest = match kind.op() {
        Some(op) => providers::get(d.deployment.provider).request(&d, target, op, Bytes::new())?,
        None => UpstreamRequest {
            method: http::Method::POST,
            path: super::held::path(&d, "/files"),
            headers: Vec::new(),
            body: Bytes::new(),
        },
    };
    req.headers.push(("content-type", content_type));
    req.headers
        .push(("content-length", (first.len() + left).to_string()));
    if let Some(t) = ctx.outgoing_trace(None) {
        req.headers.extend(t.headers());
    }
    req.body = first;
    providers::get(d.deployment.provider)
        .authorize(&app.upstream, &d, target, &mut req)
        .await?;
    let mut rest = ClientBody { session, left };
    ctx.lease = Some(Lease::start(&d, 0));
    let sent = std::time::Instant::now();
    let call = async {
        let mut ex = app
            .upstream
            .send_upload(target, req, &mut rest, Arc::clone(&d.label))
            .await?;
        let status = ex.status;
        let content_type = ex
            .header("content-type")
            .unwrap_or("application/json")
            .to_owned();
        let body = if (200..300).contains(&status) {
            ex.read_all(MAX_RESPONSE_BYTES).await?
        } else {
            ex.read_error_body().await
        };
        Ok::<_, ApiError>((status, content_type, body))
    };
    let result = tokio::time::timeout(d.timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::timeout(format!(
            "{} did not answer within {:.1}s (litellm_params.timeout / router_settings.timeout)",
            d.label,
            d.timeout.as_secs_f64()
        )))
        });
    let (status, content_type, mut body) = match result {
        Ok(r) => r,
        Err(e) => {
            plan.abandon(&d);
            return Err(e);
        }
    };
    if !(200..300).contains(&status) {
        plan.abandon(&d);
        return Err(providers::upstream_error(
            d.deployment.provider,
            status,
            &body,
        ));
    }
    plan.succeeded(&d);
    ctx.upstream_latency = Some(sent.elapsed());
    match kind {
        Upload::ImageEdits => {
            ctx.extra_cost += super::oneshot::images(&body) as f64 * d.prices.per_image;
            ctx.usage = Some(crate::usage::from_body(&body).unwrap_or_default());
        }
        Upload::Transcriptions | Upload::Translations => charge(ctx, &d.prices, &body),
        Upload::Files => {
            let held = super::held::Held::of(live, &d, ctx);
            body = super::held::rewrite(&body, &held, &[("id", super::held::FILE)]);
        }
    }
    let mut headers = response_headers(ctx, &d);
    headers.extend(super::cost_header(ctx));
    if respond::start(rest.session, ctx, 200, &content_type, &headers)
        .await
        .is_ok()
    {
        let _ = respond::stream_write(rest.session, &mut vec![body]).await;
        let _ = respond::stream_end(rest.session).await;
    }
    Ok(())
}

/// A transcription's usage and cost, from what the answer reports: OpenAI's `usage`
/// (`{"type": "tokens", ...}` or `{"type": "duration", "seconds": ...}`), or the
/// `duration` of a `verbose_json` answer, priced per second.
fn charge(ctx: &mut RequestCtx, prices: &crate::cost::Prices, body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return; // text, srt, vtt: nothing reported
    };
    let usage = v.get("usage");
    let seconds = usage
        .filter(|u| u.get("type").and_then(Value::as_str) == Some("duration"))
        .and_then(|u| u.get("seconds"))
        .or_else(|| v.get("duration"))
        .and_then(Value::as_f64);
    if let Some(s) = seconds {
        ctx.extra_cost += s * prices.per_second;
    }
    ctx.usage = Some(
        usage
            .and_then(crate::usage::Usage::from_json)
            .unwrap_or_default(),
    );
}
