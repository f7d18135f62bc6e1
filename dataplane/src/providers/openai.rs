//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, ...): `Bearer` auth,
//! `<api_base>/chat/completions` and `<api_base>/embeddings`.

use bytes::Bytes;

use super::{bearer, Operation, Provider};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, UpstreamRequest};
use routeiq_proto::Deployment;

pub struct OpenAi;

impl Provider for OpenAi {
    fn chat_format(&self, _d: &Deployment) -> ChatFormat {
        ChatFormat::OpenAi
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
        };
        Ok(UpstreamRequest {
            path: format!("{}{endpoint}", target.base_path),
            headers: bearer(d),
            body,
        })
    }
}
