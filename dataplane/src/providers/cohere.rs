//! Cohere's v2 API: `<api_base>/v2/chat` (SSE streams) and `<api_base>/v2/embed`, with
//! `Bearer` auth. Translation is in `translate::openai_to_cohere`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use routeiq_proto::Deployment;

use super::{bearer, Operation, Provider};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream, UpstreamRequest};

pub struct Cohere;

#[async_trait]
impl Provider for Cohere {
    fn chat_format(&self, _d: &Deployment) -> ChatFormat {
        ChatFormat::Cohere
    }

    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        let endpoint = match op {
            Operation::Chat { .. } => "chat",
            Operation::Embeddings => "embed",
            Operation::Rerank => "rerank",
            Operation::Moderations
            | Operation::Responses { .. }
            | Operation::Images
            | Operation::Completions { .. }
            | Operation::Transcriptions
            | Operation::Translations
            | Operation::Speech
            | Operation::ImageEdits => return Err(super::unsupported(&d.deployment, "Cohere", op)),
        };
        let base = target
            .base_path
            .strip_suffix("/v2")
            .unwrap_or(&target.base_path);
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path: format!("{base}/v2/{endpoint}"),
            headers: bearer(d),
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
        req.headers.extend(bearer(d));
        Ok(())
    }
}
