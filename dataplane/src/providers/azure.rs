//! Azure OpenAI: `<api_base>/openai/deployments/<deployment>/<op>?api-version=<v>` with an
//! `api-key` header. The deployment name is the part of `model` after `azure/`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Operation, Provider};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream, UpstreamRequest};
use routeiq_proto::Deployment;

pub struct Azure;

#[async_trait]
impl Provider for Azure {
    fn chat_format(&self, _d: &Deployment) -> ChatFormat {
        ChatFormat::OpenAi
    }

    fn text_completions(&self, d: &Deployment) -> bool {
        super::openai_text_completions(d)
    }

    fn responses_api(&self, _d: &Deployment) -> bool {
        true
    }

    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        let dep = &d.deployment;
        let version = dep.api_version.as_deref().unwrap_or_default();
        let endpoint = match op {
            Operation::Chat { .. } => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::Images => "images/generations",
            Operation::Completions { .. } => "completions",
            Operation::Transcriptions => "audio/transcriptions",
            Operation::Translations => "audio/translations",
            Operation::Speech => "audio/speech",
            Operation::ImageEdits => "images/edits",
            // Not under the deployment: the body's `model` names it.
            Operation::Responses { .. } => {
                return Ok(UpstreamRequest {
                    method: http::Method::POST,
                    path: format!(
                        "{}/openai/responses?api-version={version}",
                        target.base_path
                    ),
                    headers: key_header(d),
                    body,
                })
            }
            Operation::Rerank | Operation::Moderations => {
                return Err(super::unsupported(dep, "Azure OpenAI", op))
            }
        };
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path: format!(
                "{}/openai/deployments/{}/{endpoint}?api-version={version}",
                target.base_path, dep.upstream_model
            ),
            headers: key_header(d),
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

/// `api-key: <key>` when the deployment has a key.
fn key_header(d: &CompiledDeployment) -> Vec<(&'static str, String)> {
    d.deployment
        .api_key
        .as_ref()
        .map(|k| vec![("api-key", k.expose().to_owned())])
        .unwrap_or_default()
}
