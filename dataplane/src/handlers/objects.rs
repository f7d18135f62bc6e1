//! Files and batches, kept by OpenAI and Azure deployments and reached through the ids
//! the gateway gives (`held`): `GET`/`DELETE /v1/files/{id}`, `GET /v1/files/{id}/content`,
//! `POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, and the
//! master key's listings `GET /v1/files` and `GET /v1/batches`. Uploads (`POST /v1/files`)
//! go through `uploads`.

use bytes::Bytes;
use http::Method;
use pingora::proxy::Session;
use serde_json::Value;

use super::held::{self, Held};
use super::request::RawObject;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::respond;
use crate::state::{App, LiveState};

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
    let h = Held::parse(kind.prefix(), id).ok_or_else(|| held::not_found(id))?;
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
                    tracing::warn!(error = %e, "file content broke off");
                    break;
                }
            }
        }
        let _ = respond::stream_end(session).await;
        return Ok(());
    }
    let body = ex.read_all(MAX_RESPONSE_BYTES).await?;
    reply(session, ctx, held::rewrite(&body, &h, kind.ids())).await
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
    let h = Held::parse(held::FILE, &file_id).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`input_file_id` `{file_id}` is not a file uploaded through this gateway"
        ))
        .with_param("input_file_id")
    })?;
    let d = held::holder(live, ctx, &h, &file_id)?;
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
    reply(session, ctx, held::rewrite(&out, &h, Kind::Batches.ids())).await
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
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("target_model_names" | "model", m)) => model = Some(m.to_owned()),
            _ => rest.push(pair),
        }
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
    let h = Held {
        deployment: d.deployment.id.0.clone(),
        owner: String::new(),
        upstream: String::new(),
    };
    reply(session, ctx, held::rewrite(&out, &h, kind.ids())).await
}
