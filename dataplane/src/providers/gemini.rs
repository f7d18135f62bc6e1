//! Google's Gemini API with an API key: `<api_base>/models/<model>:generateContent`,
//! `:streamGenerateContent?alt=sse` and `:batchEmbedContents`, with `x-goog-api-key`.
//! Translation from and to the OpenAI format is in `translate::openai_to_gemini`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use routeiq_proto::Deployment;

use super::{Operation, Provider};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream, UpstreamRequest};

pub struct Gemini;

/// The `<model>:<method>` part of a Gemini or Vertex AI URL for `op` (`None`: no such
/// API).
pub fn method(op: Operation) -> Option<&'static str> {
    match op {
        Operation::Chat { stream: false, .. } => Some("generateContent"),
        Operation::Chat { stream: true, .. } => Some("streamGenerateContent?alt=sse"),
        Operation::Embeddings => Some("batchEmbedContents"),
        Operation::Rerank
        | Operation::Moderations
        | Operation::Responses { .. }
        | Operation::Images
        | Operation::Completions { .. }
        | Operation::Transcriptions
        | Operation::Translations
        | Operation::Speech
        | Operation::ImageEdits => None,
    }
}

#[async_trait]
impl Provider for Gemini {
    fn chat_format(&self, _d: &Deployment) -> ChatFormat {
        ChatFormat::Gemini
    }

    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        let dep = &d.deployment;
        let method = method(op).ok_or_else(|| super::unsupported(dep, "Gemini", op))?;
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path: format!(
                "{}/models/{}:{method}",
                target.base_path, dep.upstream_model,
            ),
            headers: key_header(d).into_iter().collect(),
            body,
        })
    }

    async fn authorize(
        &self,
        _upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        _target: &Target,
        req: &mut UpstreamRequest,
    ) -> Result<(), ApiError> {
        req.headers.extend(key_header(d));
        Ok(())
    }
}

/// `x-goog-api-key: <key>` when the deployment has a key.
fn key_header(d: &CompiledDeployment) -> Option<(&'static str, String)> {
    d.deployment
        .api_key
        .as_ref()
        .filter(|k| !k.is_empty())
        .map(|k| ("x-goog-api-key", k.expose().to_owned()))
}
