//! Anthropic Messages API: `<api_base>/v1/messages` with `x-api-key` and
//! `anthropic-version` headers. Translation from and to the OpenAI format is in
//! `translate::openai_to_anthropic`.

use bytes::Bytes;

use super::{Operation, Provider};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, UpstreamRequest};
use routeiq_proto::Deployment;

pub struct Anthropic;

/// The API version RouteIQ's translation is written against.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

impl Provider for Anthropic {
    fn chat_format(&self, _d: &Deployment) -> ChatFormat {
        ChatFormat::Anthropic
    }

    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        if op == Operation::Embeddings {
            return Err(ApiError::unsupported(format!(
                "model `{}` is an Anthropic model; Anthropic has no embeddings API",
                d.deployment.model_name
            ))
            .with_param("model"));
        }
        let base = target
            .base_path
            .strip_suffix("/v1")
            .unwrap_or(&target.base_path);
        let mut headers = vec![("anthropic-version", ANTHROPIC_VERSION.to_owned())];
        if let Some(k) = d.deployment.api_key.as_ref() {
            headers.push(("x-api-key", k.expose().to_owned()));
        }
        Ok(UpstreamRequest {
            path: format!("{base}/v1/messages"),
            headers,
            body,
        })
    }
}
