//! Endpoints answered with one JSON body and no stream: `POST /v1/embeddings`,
//! `/v1/rerank` (Cohere's shape), `/v1/moderations` and `/v1/images/generations`. Each goes through the same key,
//! access, limits, budgets, routing, retries, fallbacks, usage and cost as chat; a
//! [`Kind`] says what differs: what the request must hold, which deployments may serve it
//! (`model_info.mode`), the body each provider takes and how its answer reads.

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::Value;

use super::attempt::{self, Reply};
use super::request::RawObject;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::providers::Operation;
use crate::respond;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::{openai_to_bedrock, openai_to_cohere, openai_to_gemini};
use crate::usage::{self, Usage};
use routeiq_proto::ProviderKind;

const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embeddings,
    Rerank,
    Moderations,
    Images,
}

impl Kind {
    fn op(self) -> Operation {
        match self {
            Self::Embeddings => Operation::Embeddings,
            Self::Rerank => Operation::Rerank,
            Self::Moderations => Operation::Moderations,
            Self::Images => Operation::Images,
        }
    }

    /// The `model_info.mode` of deployments that serve it.
    fn mode(self) -> &'static str {
        match self {
            Self::Embeddings => "embedding",
            Self::Rerank => "rerank",
            Self::Moderations => "moderation",
            Self::Images => "image_generation",
        }
    }

    fn validate(self, req: &RawObject) -> Result<(), ApiError> {
        match self {
            Self::Embeddings | Self::Moderations => {
                if !(req.is_string("input") || req.is_array("input", true)) {
                    return Err(ApiError::bad_request(
                        "`input` must be a string or a non-empty array",
                    )
                    .with_param("input"));
                }
            }
            Self::Images => {
                let prompt_ok = req
                    .value("prompt")
                    .and_then(|p| p.as_str().map(|p| !p.trim().is_empty()))
                    == Some(true);
                if !prompt_ok {
                    return Err(ApiError::bad_request("`prompt` must be a non-empty string")
                        .with_param("prompt"));
                }
                if let Some(n) = req.raw("n") {
                    if !n.parse::<u64>().is_ok_and(|n| (1..=10).contains(&n)) {
                        return Err(ApiError::bad_request("`n` must be an integer from 1 to 10")
                            .with_param("n"));
                    }
                }
            }
            Self::Rerank => {
                let query_ok = req
                    .value("query")
                    .and_then(|q| q.as_str().map(|q| !q.trim().is_empty()))
                    == Some(true);
                if !query_ok {
                    return Err(ApiError::bad_request("`query` must be a non-empty string")
                        .with_param("query"));
                }
                if !req.is_array("documents", true) {
                    return Err(ApiError::bad_request(
                        "`documents` must be a non-empty array of strings or {\"text\": ...} objects",
                    )
                    .with_param("documents"));
                }
                if let Some(n) = req.raw("top_n") {
                    if !n.parse::<u64>().is_ok_and(|n| n >= 1) {
                        return Err(ApiError::bad_request("`top_n` must be a positive integer")
                            .with_param("top_n"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The request body for deployment `d`: the client's with the model renamed, or
    /// translated to the provider's API.
    pub(super) fn upstream_body(
        self,
        req: &RawObject,
        d: &CompiledDeployment,
    ) -> Result<Bytes, ApiError> {
        let model = d.deployment.upstream_model.as_str();
        if self == Self::Rerank && d.deployment.provider == ProviderKind::Bedrock {
            let arn = crate::providers::bedrock::rerank_model_arn(d)?;
            let body = openai_to_bedrock::rerank_request(&req.to_map()?, &arn);
            return Ok(crate::json::bytes(&body));
        }
        if self != Self::Embeddings {
            return req.with("model", &model);
        }
        let translated = match d.deployment.provider {
            ProviderKind::Gemini | ProviderKind::VertexAi => {
                openai_to_gemini::embeddings_request(&req.to_map()?, model)?
            }
            ProviderKind::Bedrock => openai_to_bedrock::embeddings_request(
                &req.to_map()?,
                crate::providers::bedrock::embedding_model(&d.deployment),
            )?,
            ProviderKind::Cohere => openai_to_cohere::embeddings_request(&req.to_map()?, model)?,
            _ => return req.with("model", &model),
        };
        Ok(crate::json::bytes(&translated))
    }

    /// The client's answer and the request's usage, from the provider's answer. The
    /// `model` a client sees is its model group, as for chat.
    pub(super) fn response(
        self,
        out: Bytes,
        req: &RawObject,
        d: &CompiledDeployment,
        model: &str,
    ) -> Result<(Bytes, Usage), ApiError> {
        let translated = match (self, d.deployment.provider) {
            (Self::Embeddings, ProviderKind::Gemini) => Some(
                openai_to_gemini::embeddings_response(&out, &req.to_map()?, model)?,
            ),
            (Self::Embeddings, ProviderKind::Bedrock) => Some(
                openai_to_bedrock::embeddings_response(&out, &req.to_map()?, model)?,
            ),
            (Self::Embeddings, ProviderKind::Cohere) => {
                Some(openai_to_cohere::embeddings_response(&out, model)?)
            }
            (Self::Rerank, ProviderKind::Bedrock) => Some((
                openai_to_bedrock::rerank_response(&out, &req.to_map()?)?,
                Usage::default(),
            )),
            _ => None,
        };
        if let Some((v, u)) = translated {
            return Ok((crate::json::bytes(&v), u));
        }
        // The provider's own answer, passed on; its usage read on the side.
        let usage = match self {
            Self::Rerank => rerank_usage(&out),
            _ => usage::from_body(&out).unwrap_or_default(),
        };
        Ok((out, usage))
    }
}

/// A rerank answer's tokens, where it counts them (`usage` of OpenAI-compatible servers,
/// Cohere's `meta.billed_units.input_tokens`).
fn rerank_usage(out: &[u8]) -> Usage {
    let Ok(v) = serde_json::from_slice::<Value>(out) else {
        return Usage::default();
    };
    if let Some(u) = v.get("usage").and_then(Usage::from_json) {
        return u;
    }
    let billed = v.pointer("/meta/billed_units");
    Usage {
        input_tokens: billed
            .and_then(|b| b.get("input_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        ..Usage::default()
    }
}

/// Searches a rerank answer was billed for (Cohere's `meta.billed_units.search_units`;
/// one for servers that do not say).
fn search_units(out: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(out)
        .ok()
        .and_then(|v| v.pointer("/meta/billed_units/search_units")?.as_u64())
        .unwrap_or(1)
}

/// Images in an image generation's answer (`data`).
pub(super) fn images(out: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Data {
        #[serde(default)]
        data: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Data>(out).map_or(0, |d| d.data.len() as u64)
}

pub async fn create(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    kind: Kind,
    body: Bytes,
) -> Result<(), ApiError> {
    let super::Incoming { req, model, tags } =
        super::incoming(live, ctx, &body, Some(kind.mode()), kind.op())?;
    kind.validate(&req)?;
    // No completion tokens: the input is the whole reservation.
    let (mut plan, first) = attempt::plan(
        app,
        live,
        ctx,
        attempt::Request {
            model: &model,
            body_len: body.len(),
            max_tokens: Some(0),
            stream: false,
            tags,
            query: None,
            pinned: None,
        },
    )
    .await?;
    let served = attempt::serve(
        app,
        ctx,
        &mut plan,
        first,
        kind.op(),
        MAX_RESPONSE_BYTES,
        |d| kind.upstream_body(&req, d),
    )
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let Reply::Full(out) = served.reply else {
        return Err(ApiError::internal(format!(
            "{} answered with a stream",
            kind.op().endpoint()
        )));
    };
    ctx.upstream_latency = Some(sent.elapsed());
    match kind {
        Kind::Rerank => ctx.extra_cost += search_units(&out) as f64 * d.prices.per_query,
        Kind::Images => ctx.extra_cost += images(&out) as f64 * d.prices.per_image,
        Kind::Embeddings | Kind::Moderations => {}
    }
    let (out, usage) = kind.response(out, &req, &d, &model)?;
    ctx.usage = Some(usage);
    let mut headers = response_headers(ctx, &d);
    headers.extend(super::cost_header(ctx));
    if let Err(e) = respond::json(session, ctx, &headers, out).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerank_usage_and_search_units() {
        let cohere = br#"{"id":"x","results":[],"meta":{"billed_units":{"search_units":2,"input_tokens":30}}}"#;
        assert_eq!(rerank_usage(cohere).input_tokens, 30);
        assert_eq!(search_units(cohere), 2);
        let vllm = br#"{"id":"x","results":[],"usage":{"total_tokens":12,"prompt_tokens":12}}"#;
        assert_eq!(rerank_usage(vllm).input_tokens, 12);
        assert_eq!(search_units(vllm), 1);
        assert_eq!(
            images(br#"{"created":1,"data":[{"url":"u"},{"url":"v"}]}"#),
            2
        );
    }

    #[test]
    fn rerank_requests_are_checked() {
        let msg = |b: &str| {
            Kind::Rerank
                .validate(&RawObject::parse(b.as_bytes()).unwrap())
                .err()
                .map(|e| e.param)
        };
        assert_eq!(msg(r#"{"model":"r","query":"q","documents":["a"]}"#), None);
        assert_eq!(
            msg(r#"{"model":"r","query":" ","documents":["a"]}"#),
            Some(Some("query"))
        );
        assert_eq!(
            msg(r#"{"model":"r","query":"q","documents":[]}"#),
            Some(Some("documents"))
        );
        assert_eq!(
            msg(r#"{"model":"r","query":"q","documents":["a"],"top_n":0}"#),
            Some(Some("top_n"))
        );
    }
}
