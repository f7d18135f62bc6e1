//! AWS credentials for Bedrock deployments, read the way LiteLLM reads them (`sigv4` signs
//! with them).
//!
//! A deployment's credentials come from (first match):
//! 1. `aws_web_identity_token` with `aws_role_name`: STS `AssumeRoleWithWebIdentity`;
//! 2. `aws_role_name`: STS `AssumeRole`, signed with the credentials below;
//! 3. `aws_access_key_id` and `aws_secret_access_key` (and `aws_session_token`);
//! 4. `aws_profile_name`: that profile of the shared config files;
//! 5. the AWS SDK's default chain (environment, profile, web identity (IRSA), container
//!    and instance roles).
//!
//! `aws_sts_endpoint` points STS elsewhere (a VPC endpoint). Sources are cached by their
//! settings in [`AwsSources`], across snapshot swaps, and refreshed ahead of expiry (see
//! `refresh`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use routeiq_proto::Deployment;
use sha2::{Digest, Sha256};

use super::refresh::{Fetch, Refreshing};
use crate::egress::Egress;
use crate::error::{ApiError, ErrorKind};
use crate::upstream::Upstream;

/// How a deployment gets its credentials.
#[derive(Clone)]
pub enum Recipe {
    Static(Credentials),
    AssumeRole {
        base: Box<Recipe>,
        role_arn: String,
        session_name: String,
        sts_endpoint: Option<String>,
        region: String,
    },
    WebIdentity {
        token: String,
        role_arn: String,
        session_name: String,
        sts_endpoint: Option<String>,
        region: String,
    },
    Profile(String),
    DefaultChain {
        region: String,
    },
}

impl Recipe {
    /// The recipe of a Bedrock deployment's settings, and a key naming it (equal settings,
    /// one source).
    pub fn of(d: &Deployment, region: &str) -> Result<(Self, [u8; 32]), String> {
        let s = &d.settings;
        let secret = |k: &str| s.secret(k).map(|v| v.expose().to_owned());
        let param = |k: &str| s.param(k).map(str::to_owned);
        let mut key = Sha256::new();
        for (name, value) in s
            .params
            .iter()
            .map(|(k, v)| (k, v.as_str()))
            .chain(s.secrets.iter().map(|(k, v)| (k, v.expose())))
        {
            key.update(name.as_bytes());
            key.update([0]);
            key.update(value.as_bytes());
            key.update([0]);
        }
        let keys = match (secret("aws_access_key_id"), secret("aws_secret_access_key")) {
            (Some(id), Some(secret_key)) => Some(Self::Static(Credentials::new(
                id,
                secret_key,
                secret("aws_session_token"),
                None,
                "litellm_params",
            ))),
            (None, None) => None,
            _ => {
                return Err(
                    "aws_access_key_id and aws_secret_access_key must be given together".into(),
                )
            }
        };
        let base = keys.unwrap_or_else(|| match param("aws_profile_name") {
            Some(p) => Self::Profile(p),
            None => Self::DefaultChain {
                region: region.to_owned(),
            },
        });
        let session_name = param("aws_session_name").unwrap_or_else(|| "routeiq".into());
        let sts_endpoint = param("aws_sts_endpoint");
        let recipe = match (param("aws_role_name"), secret("aws_web_identity_token")) {
            (Some(role_arn), Some(token)) => Self::WebIdentity {
                token,
                role_arn,
                session_name,
                sts_endpoint,
                region: region.to_owned(),
            },
            (None, Some(_)) => {
                return Err(
                    "aws_web_identity_token needs aws_role_name (the role to assume)".into(),
                )
            }
            (Some(role_arn), None) => Self::AssumeRole {
                base: Box::new(base),
                role_arn,
                session_name,
                sts_endpoint,
                region: region.to_owned(),
            },
            (None, None) => base,
        };
        Ok((recipe, key.finalize().into()))
    }

    fn describe(&self) -> String {
        match self {
            Self::Static(c) => format!("AWS access key {}", c.access_key_id()),
            Self::AssumeRole { role_arn, .. } => format!("AWS role {role_arn}"),
            Self::WebIdentity { role_arn, .. } => {
                format!("AWS role {role_arn} (web identity)")
            }
            Self::Profile(p) => format!("AWS profile {p}"),
            Self::DefaultChain { .. } => "the AWS default credentials chain".into(),
        }
    }

    /// The credentials, from clients that connect only where `egress` admits.
    fn resolve<'a>(
        &'a self,
        egress: &'a Arc<Egress>,
    ) -> futures_util::future::BoxFuture<'a, Result<Credentials, ApiError>> {
        Box::pin(async move {
            let fail = |e: String| {
                ApiError::upstream(
                    502,
                    ErrorKind::Upstream,
                    format!("cannot get credentials from {}: {e}", self.describe()),
                )
                .with_code("upstream_auth_error")
            };
            match self {
                Self::Static(c) => Ok(c.clone()),
                Self::Profile(name) => {
                    aws_config::profile::ProfileFileCredentialsProvider::builder()
                        .configure(&provider_config(egress))
                        .profile_name(name)
                        .build()
                        .provide_credentials()
                        .await
                        .map_err(|e| fail(e.to_string()))
                }
                Self::DefaultChain { region } => {
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .configure(provider_config(egress))
                        .region(aws_config::Region::new(region.clone()))
                        .build()
                        .await
                        .provide_credentials()
                        .await
                        .map_err(|e| fail(e.to_string()))
                }
                Self::AssumeRole {
                    base,
                    role_arn,
                    session_name,
                    sts_endpoint,
                    region,
                } => {
                    let base = base.resolve(egress).await?;
                    let sts = sts_client(egress, region, sts_endpoint.as_deref(), Some(base));
                    let out = sts
                        .assume_role()
                        .role_arn(role_arn)
                        .role_session_name(session_name)
                        .send()
                        .await
                        .map_err(|e| {
                            fail(aws_sdk_sts::error::DisplayErrorContext(e).to_string())
                        })?;
                    temporary(out.credentials()).ok_or_else(|| fail("no credentials".into()))
                }
                Self::WebIdentity {
                    token,
                    role_arn,
                    session_name,
                    sts_endpoint,
                    region,
                } => {
                    let sts = sts_client(egress, region, sts_endpoint.as_deref(), None);
                    let out = sts
                        .assume_role_with_web_identity()
                        .role_arn(role_arn)
                        .role_session_name(session_name)
                        .web_identity_token(token)
                        .send()
                        .await
                        .map_err(|e| {
                            fail(aws_sdk_sts::error::DisplayErrorContext(e).to_string())
                        })?;
                    temporary(out.credentials()).ok_or_else(|| fail("no credentials".into()))
                }
            }
        })
    }
}

fn provider_config(egress: &Arc<Egress>) -> aws_config::provider_config::ProviderConfig {
    aws_config::provider_config::ProviderConfig::default()
        .with_http_client(egress.aws_http_client())
}

fn sts_client(
    egress: &Arc<Egress>,
    region: &str,
    endpoint: Option<&str>,
    credentials: Option<Credentials>,
) -> aws_sdk_sts::Client {
    let mut c = aws_sdk_sts::Config::builder()
        .behavior_version_latest()
        .http_client(egress.aws_http_client())
        .region(aws_sdk_sts::config::Region::new(region.to_owned()));
    if let Some(e) = endpoint {
        c = c.endpoint_url(e);
    }
    if let Some(creds) = credentials {
        c = c.credentials_provider(creds);
    }
    aws_sdk_sts::Client::from_conf(c.build())
}

fn temporary(c: Option<&aws_sdk_sts::types::Credentials>) -> Option<Credentials> {
    let c = c?;
    Some(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        SystemTime::try_from(*c.expiration()).ok(),
        "sts",
    ))
}

#[async_trait]
impl Fetch for Recipe {
    type Value = Credentials;

    async fn fetch(
        &self,
        upstream: &Arc<Upstream>,
    ) -> Result<(Credentials, Option<Instant>), ApiError> {
        let c = self.resolve(&upstream.egress).await?;
        let expires = c.expiry().map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        });
        Ok((c, expires))
    }

    fn describe(&self) -> String {
        Recipe::describe(self)
    }
}

pub type CredentialSource = Refreshing<Recipe>;

/// Credential sources by their settings, across snapshot versions.
#[derive(Default)]
pub struct AwsSources {
    sources: Mutex<HashMap<[u8; 32], Arc<CredentialSource>>>,
}

impl AwsSources {
    pub fn source(
        &self,
        d: &Deployment,
        region: &str,
        upstream: &Arc<Upstream>,
    ) -> Result<Arc<CredentialSource>, String> {
        let (recipe, key) = Recipe::of(d, region)?;
        let mut sources = self
            .sources
            .lock()
            .map_err(|_| "credential cache poisoned".to_owned())?;
        Ok(Arc::clone(
            sources
                .entry(key)
                .or_insert_with(|| Refreshing::start(recipe, upstream)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::Secret;

    fn dep(params: &[(&str, &str)], secrets: &[(&str, &str)]) -> Deployment {
        let mut d = Deployment::mock("b", "b");
        for (k, v) in params {
            d.settings.params.insert((*k).into(), (*v).into());
        }
        for (k, v) in secrets {
            d.settings.secrets.insert((*k).into(), Secret::new(*v));
        }
        d
    }

    #[test]
    fn recipes_follow_litellms_order() {
        let keys = [
            ("aws_access_key_id", "AKIA1"),
            ("aws_secret_access_key", "s"),
        ];
        let (r, k1) = Recipe::of(&dep(&[], &keys), "us-east-1").unwrap();
        assert!(matches!(r, Recipe::Static(_)));
        let (r, k2) =
            Recipe::of(&dep(&[("aws_role_name", "arn:role")], &keys), "us-east-1").unwrap();
        assert!(
            matches!(r, Recipe::AssumeRole { ref base, .. } if matches!(**base, Recipe::Static(_)))
        );
        assert_ne!(k1, k2);
        let (r, _) = Recipe::of(
            &dep(
                &[("aws_role_name", "arn:role")],
                &[("aws_web_identity_token", "jwt")],
            ),
            "us-east-1",
        )
        .unwrap();
        assert!(matches!(r, Recipe::WebIdentity { .. }));
        let (r, _) = Recipe::of(&dep(&[("aws_profile_name", "dev")], &[]), "us-east-1").unwrap();
        assert!(matches!(r, Recipe::Profile(ref p) if p == "dev"));
        let (r, _) = Recipe::of(&dep(&[], &[]), "us-east-1").unwrap();
        assert!(matches!(r, Recipe::DefaultChain { .. }));
        assert!(Recipe::of(&dep(&[], &[("aws_access_key_id", "AKIA1")]), "r").is_err());
        assert!(Recipe::of(&dep(&[], &[("aws_web_identity_token", "t")]), "r").is_err());
    }
}
