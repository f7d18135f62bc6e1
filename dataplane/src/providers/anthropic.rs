//! Anthropic Messages API: `<api_base>/v1/messages` with `x-api-key` and
//! `anthropic-version` headers. Translation from and to the OpenAI format is in
//! `translate::openai_to_anthropic`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Operation, Provider};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream, UpstreamRequest};
use routeiq_proto::Deployment;

pub struct Anthropic;

/// The API version RouteIQ's translation is written against.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[async_trait]
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
        let Operation::Chat { skills, .. } = op else {
            return Err(super::unsupported(&d.deployment, "Anthropic", op));
        };
        let base = target
            .base_path
            .strip_suffix("/v1")
            .unwrap_or(&target.base_path);
        let mut headers = vec![("anthropic-version", ANTHROPIC_VERSION.to_owned())];
        if skills {
            headers.push(("anthropic-beta", crate::skills::BETAS.to_owned()));
        }
        headers.extend(key_header(d));
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path: format!("{base}/v1/messages"),
            headers,
            body,
        })
    }

    /// The key; and the API version unless the client's request names one.
    async fn authorize(
        &self,
        _upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        _target: &Target,
        req: &mut UpstreamRequest,
    ) -> Result<(), ApiError> {
        if !req.headers.iter().any(|(n, _)| *n == "anthropic-version") {
            req.headers
                .push(("anthropic-version", ANTHROPIC_VERSION.to_owned()));
        }
        req.headers.extend(key_header(d));
        Ok(())
    }
}

/// `x-api-key: <key>` when the deployment has a key.
fn key_header(d: &CompiledDeployment) -> Option<(&'static str, String)> {
    d.deployment
        .api_key
        .as_ref()
        .map(|k| ("x-api-key", k.expose().to_owned()))
}
