//! Files and batches, kept by OpenAI and Azure deployments and reached through the ids
//! the gateway gives (`held`): `GET`/`DELETE /v1/files/{id}`, `GET /v1/files/{id}/content`,
//! `POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, and the
//! master key's listings `GET /v1/files` and `GET /v1/batches`. Uploads (`POST /v1/files`)
//! go through `uploads`.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use pingora::proxy::Session;
use routeiq_proto::KeyHash;
use serde_json::Value;

use super::held::{self, Held};
use super::request::RawObject;
use crate::context::{Once, RequestCtx};
use crate::cost::Prices;
use crate::error::ApiError;
use crate::respond;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::usage::Usage;

const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Files or batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Files,
    Batches,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Files => held::FILE,
            Self::Batches => held::BATCH,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Files => "/files",
            Self::Batches => "/batches",
        }
    }

    /// The provider ids in its objects, and what they name.
    fn ids(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Files => &[("id", held::FILE)],
            Self::Batches => &[
                ("id", held::BATCH),
                ("input_file_id", held::FILE),
                ("output_file_id", held::FILE),
                ("error_file_id", held::FILE),
            ],
        }
    }
}

/// What is asked of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Get,
    Delete,
    /// A file's bytes.
    Content,
    /// A batch's cancellation.
    Cancel,
}

async fn reply(session: &mut Session, ctx: &mut RequestCtx, body: Bytes) -> Result<(), ApiError> {
    if let Err(e) = respond::json(session, ctx, &[], body).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}

/// One file or batch, by the client's id.
pub async fn one(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    kind: Kind,
    ask: Ask,
    id: &str,
) -> Result<(), ApiError> {
    let h = Held::parse(live, kind.prefix(), id).ok_or_else(|| held::not_found(id))?;
    let d = held::holder(live, ctx, &h, id)?;
    let (method, rest) = match ask {
        Ask::Get => (Method::GET, ""),
        Ask::Delete => (Method::DELETE, ""),
        Ask::Content => (Method::GET, "/content"),
        Ask::Cancel => (Method::POST, "/cancel"),
    };
    let path = held::path(&d, &format!("{}/{}{rest}", kind.path(), h.upstream));
    let mut ex = held::call(app, &d, method, path, None, id).await?;
    if ask == Ask::Content {
        // The file's bytes, relayed as they arrive.
        let content_type = ex
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_owned();
        if respond::start(session, ctx, 200, &content_type, &[])
            .await
            .is_err()
        {
            return Ok(());
        }
        loop {
            match ex.next_chunk().await {
                Ok(Some(chunk)) => {
                    if respond::stream_write(session, &mut vec![chunk])
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Not ended as if complete: the connection is dropped, so the client
                    // sees the download fail.
                    tracing::warn!(error = %e, "file content broke off");
                    session.set_keepalive(None);
                    return Ok(());
                }
            }
        }
        let _ = respond::stream_end(session).await;
        return Ok(());
    }
    let body = ex.read_all(MAX_RESPONSE_BYTES).await?;
    if (kind, ask) == (Kind::Batches, Ask::Get) {
        charge_batch(app, live, ctx, &d, &h, &body).await;
    }
    let mut headers = Vec::new();
    headers.extend(super::cost_header(ctx));
    let body = held::rewrite(&body, &h, kind.ids());
    if let Err(e) = respond::json(session, ctx, &headers, body).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}

/// Refuses a batch input whose lines name a model other than the deployment's: the key's
/// model access (checked on the deployment's group) and the batch's price both assume
/// the deployment's model.
async fn check_batch_models(
    app: &App,
    d: &CompiledDeployment,
    h: &Held,
    file_id: &str,
) -> Result<(), ApiError> {
    let path = held::path(d, &format!("/files/{}/content", h.upstream));
    let expected = d.deployment.upstream_model.as_str();
    let check = async {
        let mut ex = held::call(app, d, Method::GET, path, None, file_id).await?;
        let mut partial = Vec::new();
        let mut line_no = 0usize;
        let mut check_lines = |lines: &[u8]| -> Result<(), ApiError> {
            for line in lines.split(|b| *b == b'\n') {
                line_no += 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let model = serde_json::from_slice::<Value>(line)
                    .ok()
                    .and_then(|v| v.pointer("/body/model")?.as_str().map(str::to_owned));
                if model.as_deref() != Some(expected) {
                    return Err(ApiError::bad_request(format!(
                        "line {line_no} of the input file names model {}; this file's deployment \
                         (model group `{}`) runs `{expected}` only",
                        model.map_or("none".to_owned(), |m| format!("`{m}`")),
                        d.deployment.model_name
                    ))
                    .with_param("input_file_id"));
                }
            }
            Ok(())
        };
        while let Some(chunk) = ex.next_chunk().await? {
            partial.extend_from_slice(&chunk);
            if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
                check_lines(&partial[..end])?;
                partial.drain(..=end);
            }
        }
        check_lines(&partial)
    };
    tokio::time::timeout(d.timeout, check)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::timeout(
                "the batch's input file was not read in time",
            ))
        })
}

/// Batch prices: the deployment's `input_cost_per_token_batches` and
/// `output_cost_per_token_batches`, else half its token prices (OpenAI's Batch API
/// discount).
fn batch_prices(d: &CompiledDeployment) -> Prices {
    let own = |name: &str| {
        d.deployment
            .model_info
            .extra
            .get(name)
            .and_then(Value::as_f64)
            .filter(|p| p.is_finite() && *p >= 0.0)
    };
    let input = own("input_cost_per_token_batches").unwrap_or(d.prices.input / 2.0);
    Prices {
        input,
        cached_input: input,
        output: own("output_cost_per_token_batches").unwrap_or(d.prices.output / 2.0),
        ..Prices::default()
    }
}

/// Charges a finished batch's cost (completed, cancelled or expired: the requests it
/// completed), once, to the key that created it: the usage of each answer in its output
/// file at batch prices. Read on every `GET` of the batch, it is charged by the first
/// read that sees it finished; a later read on this data plane
/// charges nothing, and on another data plane sends the same usage event (its request
/// id and start are the batch's), which the control plane counts once.
async fn charge_batch(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    d: &Arc<CompiledDeployment>,
    h: &Held,
    body: &[u8],
) {
    let Ok(batch) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    // Cancelled and expired batches are billed for the requests they completed.
    let (Some("completed" | "cancelled" | "expired"), Some(output)) = (
        batch.get("status").and_then(Value::as_str),
        batch.get("output_file_id").and_then(Value::as_str),
    ) else {
        return;
    };
    if app
        .charged_batches
        .lock()
        .is_ok_and(|c| c.contains(&h.upstream))
    {
        return;
    }
    let path = held::path(d, &format!("/files/{output}/content"));
    let mut usage = Usage::default();
    let read = async {
        let mut ex = held::call(app, d, Method::GET, path, None, output).await?;
        let mut partial = Vec::new();
        while let Some(chunk) = ex.next_chunk().await? {
            partial.extend_from_slice(&chunk);
            let complete = partial
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            add_lines(&partial[..complete], &mut usage);
            partial.drain(..complete);
        }
        add_lines(&partial, &mut usage);
        Ok::<_, ApiError>(())
    };
    let read = tokio::time::timeout(d.timeout, read)
        .await
        .unwrap_or_else(|_| Err(ApiError::timeout("the batch output was not read in time")));
    if let Err(e) = read {
        tracing::warn!(error = %e, batch = %h.upstream, "a finished batch's output could not be read; not charged yet");
        return;
    }
    if let Ok(mut charged) = app.charged_batches.lock() {
        if charged.put(h.upstream.clone(), ()).is_some() {
            return; // another read charged it meanwhile
        }
    }
    if let Some(creator) = KeyHash::from_hex(&h.creator).and_then(|k| live.keys.get(&k)) {
        ctx.key = Some(Arc::clone(creator));
    }
    let started = ["completed_at", "cancelled_at", "expired_at", "created_at"]
        .iter()
        .find_map(|f| batch.get(*f).filter(|v| !v.is_null()))
        .and_then(Value::as_i64)
        .unwrap_or_default();
    ctx.once = Some(Once {
        cost: batch_prices(d).of(&usage),
        request_id: format!("batch-{}", h.upstream),
        started_at_ms: started * 1000,
    });
    ctx.usage = Some(usage);
}

/// Adds the usage of each answer in complete JSONL lines.
fn add_lines(lines: &[u8], usage: &mut Usage) {
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Some(u) = serde_json::from_slice::<Value>(line)
            .ok()
            .and_then(|v| v.pointer("/response/body/usage").and_then(Usage::from_json))
        {
            usage.input_tokens += u.input_tokens;
            usage.output_tokens += u.output_tokens;
            usage.cached_input_tokens += u.cached_input_tokens;
        }
    }
}

/// `POST /v1/batches`: to the deployment that holds its input file, with the provider's
/// file id.
pub async fn create_batch(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<(), ApiError> {
    let req = RawObject::parse(&body)?;
    let Some(Value::String(file_id)) = req.value("input_file_id") else {
        return Err(ApiError::missing_field("input_file_id"));
    };
    for field in ["endpoint", "completion_window"] {
        if !req.is_string(field) {
            return Err(ApiError::missing_field(field));
        }
    }
    let h = Held::parse(live, held::FILE, &file_id).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`input_file_id` `{file_id}` is not a file uploaded through this gateway"
        ))
        .with_param("input_file_id")
    })?;
    let d = held::holder(live, ctx, &h, &file_id)?;
    // Budgets and limits apply as for any request (the batch's cost comes later).
    ctx.admit(
        app,
        live,
        &d,
        crate::limits::WorstCase::of(body.len(), Some(0), None),
    )
    .await?;
    check_batch_models(app, &d, &h, &file_id).await?;
    let upstream_body = req.with("input_file_id", &h.upstream)?;
    let path = held::path(&d, "/batches");
    let mut ex = held::call(
        app,
        &d,
        Method::POST,
        path,
        Some(("application/json".to_owned(), upstream_body)),
        &file_id,
    )
    .await?;
    let out = ex.read_all(MAX_RESPONSE_BYTES).await?;
    // The batch is the caller's: its cost is charged to the key that creates it.
    let batch = Held {
        creator: ctx
            .key
            .as_ref()
            .map(|k| k.hash.to_hex())
            .unwrap_or_default(),
        ..h
    };
    reply(
        session,
        ctx,
        held::rewrite(&out, &batch, Kind::Batches.ids()),
    )
    .await
}

/// `GET /v1/files` and `GET /v1/batches`, for the master key: the provider's listing of
/// one deployment, named by `target_model_names` (or `model`) in the query; the rest of
/// the query is passed on. The provider's account holds every tenant's objects, so
/// virtual keys get a 403.
pub async fn list(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    kind: Kind,
) -> Result<(), ApiError> {
    if ctx.key.is_some() {
        return Err(ApiError::forbidden(
            "listing files and batches takes the master key: a provider's account holds every \
             tenant's; read yours by the ids you were given",
        ));
    }
    let query = session
        .req_header()
        .uri
        .query()
        .unwrap_or_default()
        .to_owned();
    let mut model = None;
    let mut rest: Vec<String> = Vec::new();
    let mut after = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("target_model_names" | "model", m)) => model = Some(m.to_owned()),
            // A page after one of the gateway's ids: the provider's id.
            Some(("after", id)) => after = Held::parse(live, kind.prefix(), id),
            _ => rest.push(pair.to_owned()),
        }
    }
    if let Some(h) = after {
        rest.push(format!("after={}", h.upstream));
    }
    let model = model.ok_or_else(|| {
        ApiError::bad_request("name the model group to list: `?target_model_names=<group>`")
            .with_param("target_model_names")
    })?;
    let group = live
        .group(&model)
        .ok_or_else(|| live.unknown_model(&model))?;
    let d = group
        .deployments
        .iter()
        .find(|d| held::supported(d))
        .cloned()
        .ok_or_else(|| {
            ApiError::unsupported(format!(
                "model group `{model}` has no OpenAI or Azure deployment"
            ))
        })?;
    let query = if rest.is_empty() {
        String::new()
    } else {
        format!("?{}", rest.join("&"))
    };
    let path = held::path(&d, &format!("{}{query}", kind.path()));
    let mut ex = held::call(app, &d, Method::GET, path, None, &model).await?;
    let out = ex.read_all(MAX_RESPONSE_BYTES).await?;
    let h = Held::of(live, &d, ctx);
    reply(session, ctx, held::rewrite(&out, &h, kind.ids())).await
}
