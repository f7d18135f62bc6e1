//! AWS Bedrock Runtime, signed with SigV4 per request (credentials from `aws_auth`):
//! - chat through Converse: `<api_base>/model/<id>/converse` and `/converse-stream`
//!   (binary event stream), for every model family;
//! - `bedrock/invoke/anthropic.*` through InvokeModel with Anthropic's Messages body:
//!   `/model/<id>/invoke` and `/invoke-with-response-stream`, as LiteLLM does;
//! - embeddings through InvokeModel: Titan (`amazon.titan-embed*`) and Cohere
//!   (`cohere.embed*`).
//!
//! `api_base` is the region's endpoint unless `aws_bedrock_runtime_endpoint` (a VPC
//! endpoint) or `api_base` says otherwise.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use routeiq_proto::Deployment;
use serde_json::Value;

use super::aws_auth::{AwsSources, CredentialSource};
use super::sigv4::Signer;
use super::{exchange, target_of, Credentials, Operation, Provider, ProviderResponse};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream, UpstreamRequest};

pub struct Bedrock;

/// The `anthropic_version` Bedrock takes in Anthropic InvokeModel bodies.
const ANTHROPIC_BEDROCK_VERSION: &str = "bedrock-2023-05-31";

/// A Bedrock deployment's region and credentials, resolved when it is compiled.
pub struct BedrockAuth {
    credentials: Arc<CredentialSource>,
    signer: Signer,
    /// `/model/<id>/` with the model id encoded: how every Converse and InvokeModel path starts.
    model_path: String,
}

impl std::fmt::Debug for BedrockAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockAuth")
            .field("region", &self.signer.region())
            .finish_non_exhaustive()
    }
}

impl BedrockAuth {
    pub fn prepare(
        d: &Deployment,
        sources: &AwsSources,
        upstream: &Arc<Upstream>,
    ) -> Result<Self, String> {
        let region = d
            .settings
            .param("aws_region_name")
            .unwrap_or(routeiq_proto::litellm::BEDROCK_DEFAULT_REGION)
            .to_owned();
        let credentials = sources.source(d, &region, upstream)?;
        let (Api::Converse(id) | Api::InvokeAnthropic(id)) = api(d);
        Ok(Self {
            signer: Signer::new(&region, "bedrock"),
            credentials,
            model_path: ["/model/", &encode_id(id), "/"].concat(),
        })
    }
}

/// Which API a model goes through, and its Bedrock model id.
enum Api<'a> {
    Converse(&'a str),
    InvokeAnthropic(&'a str),
}

fn api(d: &Deployment) -> Api<'_> {
    let model = d.upstream_model.as_str();
    if let Some(id) = model.strip_prefix("invoke/") {
        // The model itself, or a cross-region profile of it (`us.anthropic.claude-...`).
        let anthropic = id.starts_with("anthropic.")
            || id
                .split_once('.')
                .is_some_and(|(_, rest)| rest.starts_with("anthropic."));
        return if anthropic {
            Api::InvokeAnthropic(id)
        } else {
            Api::Converse(id)
        };
    }
    Api::Converse(model.strip_prefix("converse/").unwrap_or(model))
}

/// A model id as a path segment: everything but RFC 3986's unreserved characters encoded
/// (`:` in versions, `/` in ARNs), as the AWS SDKs send it.
fn encode_id(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, super::sigv4::UNRESERVED).to_string()
}

#[async_trait]
impl Provider for Bedrock {
    fn chat_format(&self, d: &Deployment) -> ChatFormat {
        match api(d) {
            Api::Converse(_) => ChatFormat::Bedrock,
            Api::InvokeAnthropic(_) => ChatFormat::Anthropic,
        }
    }

    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        let (action, body) = match (api(&d.deployment), op) {
            (Api::Converse(_), Operation::Chat { stream, .. }) => (
                if stream {
                    "converse-stream"
                } else {
                    "converse"
                },
                body,
            ),
            (Api::InvokeAnthropic(_), Operation::Chat { stream, .. }) => (
                if stream {
                    "invoke-with-response-stream"
                } else {
                    "invoke"
                },
                anthropic_body(&body)?,
            ),
            (Api::Converse(_) | Api::InvokeAnthropic(_), Operation::Embeddings) => ("invoke", body),
            (Api::Converse(_) | Api::InvokeAnthropic(_), Operation::Rerank) => {
                return Ok(UpstreamRequest {
                    method: http::Method::POST,
                    path: format!("{}/rerank", target.base_path),
                    headers: Vec::new(),
                    body,
                })
            }
            (
                _,
                Operation::Moderations
                | Operation::Responses { .. }
                | Operation::Images
                | Operation::Completions { .. }
                | Operation::Transcriptions
                | Operation::Translations
                | Operation::Speech
                | Operation::ImageEdits,
            ) => return Err(super::unsupported(&d.deployment, "Bedrock", op)),
        };
        let mut headers = Vec::new();
        if let Operation::Chat { stream: true, .. } = op {
            headers.push(("accept", "application/vnd.amazon.eventstream".to_owned()));
        }
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path: [&target.base_path, auth(d)?.model_path.as_str(), action].concat(),
            headers,
            body,
        })
    }

    /// SigV4 over the request as it will be sent.
    async fn authorize(
        &self,
        upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        target: &Target,
        req: &mut UpstreamRequest,
    ) -> Result<(), ApiError> {
        let auth = auth(d)?;
        let creds = auth.credentials.get(upstream).await.map_err(|mut e| {
            e.message = format!("{}: {}", d.label, e.message);
            e
        })?;
        let signed = auth.signer.sign(
            &creds,
            &target.authority,
            &req.path,
            &req.body,
            SystemTime::now(),
        )?;
        req.headers.extend(signed);
        Ok(())
    }

    async fn send(
        &self,
        upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        op: Operation,
        body: Bytes,
        trace: Option<crate::otel::Outgoing>,
    ) -> Result<ProviderResponse, ApiError> {
        let runtime = target_of(d)?;
        let agent = (op == Operation::Rerank)
            .then(|| agent_target(runtime))
            .flatten();
        let target = agent.as_ref().unwrap_or(runtime);
        let mut req = self.request(d, target, op, body)?;
        self.authorize(upstream, d, target, &mut req).await?;
        exchange(upstream, d, target, op, req, trace).await
    }
}

/// Where Rerank goes: the Bedrock Agent Runtime of the runtime endpoint's region; `None`
/// for an endpoint of the operator's (`aws_bedrock_runtime_endpoint`), which takes it too.
fn agent_target(runtime: &Target) -> Option<Target> {
    let region = runtime.host.strip_prefix("bedrock-runtime.")?;
    Target::parse(&format!("https://bedrock-agent-runtime.{region}")).ok()
}

/// The ARN Rerank names a foundation model by.
pub fn rerank_model_arn(d: &CompiledDeployment) -> Result<String, ApiError> {
    Ok(format!(
        "arn:aws:bedrock:{}::foundation-model/{}",
        auth(d)?.signer.region(),
        embedding_model(&d.deployment)
    ))
}

fn auth(d: &CompiledDeployment) -> Result<&BedrockAuth, ApiError> {
    match super::credentials_of(d)? {
        Credentials::Bedrock(a) => Ok(a),
        Credentials::Vertex(_) => Err(ApiError::internal(format!(
            "{} has Vertex AI credentials",
            d.label
        ))),
    }
}

/// An Anthropic Messages body as Bedrock's InvokeModel takes it: the model and whether it
/// streams are in the URL, and the body names the API version.
fn anthropic_body(body: &Bytes) -> Result<Bytes, ApiError> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::internal(format!("translated body is not JSON: {e}")))?;
    v.remove("model");
    v.remove("stream");
    v.insert(
        "anthropic_version".into(),
        Value::String(ANTHROPIC_BEDROCK_VERSION.to_owned()),
    );
    Ok(crate::json::bytes(&Value::Object(v)))
}

/// The Bedrock model id of an embeddings deployment.
pub fn embedding_model(d: &Deployment) -> &str {
    match api(d) {
        Api::Converse(id) | Api::InvokeAnthropic(id) => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(model: &str) -> Deployment {
        Deployment {
            upstream_model: model.into(),
            ..Deployment::mock("b", "b")
        }
    }

    #[test]
    fn models_pick_their_api() {
        assert!(matches!(
            api(&dep("anthropic.claude-3-5-sonnet-20240620-v1:0")),
            Api::Converse(_)
        ));
        assert!(matches!(
            api(&dep("invoke/anthropic.claude-3-5-sonnet-20240620-v1:0")),
            Api::InvokeAnthropic("anthropic.claude-3-5-sonnet-20240620-v1:0")
        ));
        assert!(matches!(
            api(&dep("invoke/us.anthropic.claude-sonnet-4-5-v1:0")),
            Api::InvokeAnthropic(_)
        ));
        assert!(matches!(
            api(&dep("invoke/meta.llama3-70b-instruct-v1:0")),
            Api::Converse(_)
        ));
        assert!(matches!(
            api(&dep("converse/amazon.nova-pro-v1:0")),
            Api::Converse("amazon.nova-pro-v1:0")
        ));
        assert_eq!(
            encode_id("arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x-v1%3A0"
        );
    }
}
