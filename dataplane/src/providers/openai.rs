//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, ...): `Bearer` auth,
//! `<api_base>/chat/completions` and `<api_base>/embeddings`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{bearer, Operation, Provider};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream, UpstreamRequest};
use routeiq_proto::Deployment;

pub struct OpenAi;

#[async_trait]
impl Provider for OpenAi {
    fn chat_format(&self, _d: &Deployment) -> ChatFormat {
        ChatFormat::OpenAi
    }

    fn text_completions(&self, d: &Deployment) -> bool {
        super::openai_text_completions(d)
    }

    fn responses_api(&self, d: &Deployment) -> bool {
        super::openai_responses_api(d)
    }

    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        let endpoint = match op {
            Operation::Chat { .. } => "/chat/completions",
            Operation::Embeddings => "/embeddings",
            // vLLM, Jina, Infinity and other OpenAI-compatible servers take Cohere's shape.
            Operation::Rerank => "/rerank",
            Operation::Moderations => "/moderations",
            Operation::Responses { .. } => "/responses",
            Operation::Images => "/images/generations",
            Operation::Completions { .. } => "/completions",
            Operation::Transcriptions => "/audio/transcriptions",
            Operation::Translations => "/audio/translations",
            Operation::Speech => "/audio/speech",
            Operation::ImageEdits => "/images/edits",
        };
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path: format!("{}{endpoint}", target.base_path),
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
