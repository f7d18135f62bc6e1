//! Anthropic's Skills API, as the control plane calls it to copy skills to Anthropic
//! deployments: `POST /v1/skills`, `POST /v1/skills/{id}/versions` (multipart uploads of a
//! bundle's files, their paths as the file names), and the deletes. Calls carry the
//! deployment's key and the `skills-2025-10-02` beta.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use routeiq_proto::Deployment;
use serde_json::Value;

use super::bundle::File;

const VERSION: &str = "2023-06-01";
const BETA: &str = "skills-2025-10-02";
const TIMEOUT: Duration = Duration::from_secs(60);
/// Answers are read up to this size.
const MAX_ANSWER: usize = 1024 * 1024;

pub struct Anthropic {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Anthropic {
    pub fn new() -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system CA certificates: skill uploads to https providers will fail");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            })
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
        }
    }

    /// One call to the deployment's API; its JSON answer, or what went wrong (no secret).
    async fn call(
        &self,
        d: &Deployment,
        method: http::Method,
        path: &str,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Value, String> {
        let base = d.api_base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("anthropic-version", VERSION)
            .header("anthropic-beta", BETA)
            .header("accept", "application/json");
        if let Some(key) = &d.api_key {
            req = req.header("x-api-key", key.expose());
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header("content-type", content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{base}: {e}"))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("{base}: reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes);
                return Err(format!(
                    "{base} answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                ));
            }
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("{base}: the answer is not JSON: {e}"))
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| format!("{base}: no answer within {}s", TIMEOUT.as_secs()))?
    }

    /// Creates the skill at the deployment's provider from its first copied version;
    /// returns the provider's skill id and version.
    pub async fn create_skill(
        &self,
        d: &Deployment,
        display_title: &str,
        files: &[File],
    ) -> Result<(String, String), String> {
        let body = multipart(Some(display_title), files);
        let v = self
            .call(d, http::Method::POST, "/v1/skills", Some(body))
            .await?;
        let id = text(&v, &["id"]).ok_or("the answer has no skill id")?;
        let version = text(&v, &["latest_version", "latest_version_id"])
            .ok_or("the answer has no version")?;
        Ok((id, version))
    }

    /// Adds a version to the provider's copy of a skill; returns the provider's version.
    pub async fn create_version(
        &self,
        d: &Deployment,
        upstream_id: &str,
        files: &[File],
    ) -> Result<String, String> {
        let body = multipart(None, files);
        let path = format!("/v1/skills/{}/versions", segment(upstream_id));
        let v = self.call(d, http::Method::POST, &path, Some(body)).await?;
        text(&v, &["version", "id"]).ok_or_else(|| "the answer has no version".to_owned())
    }

    pub async fn delete_version(
        &self,
        d: &Deployment,
        upstream_id: &str,
        version: &str,
    ) -> Result<(), String> {
        let path = format!(
            "/v1/skills/{}/versions/{}",
            segment(upstream_id),
            segment(version)
        );
        self.call(d, http::Method::DELETE, &path, None).await?;
        Ok(())
    }

    pub async fn delete_skill(&self, d: &Deployment, upstream_id: &str) -> Result<(), String> {
        let path = format!("/v1/skills/{}", segment(upstream_id));
        self.call(d, http::Method::DELETE, &path, None).await?;
        Ok(())
    }
}

/// The first of `keys` that `v` has as a string (or a number, as text).
fn text(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match v.get(*k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// An id as a path segment: only the characters ids are made of pass.
fn segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect()
}

/// A `multipart/form-data` body: `display_title` when given, then each file as `files[]`
/// with its path as the file name. Returns the content type and the body.
fn multipart(display_title: Option<&str>, files: &[File]) -> (String, Vec<u8>) {
    let boundary = format!(
        "routeiq-{}",
        crate::crypto::new_id().unwrap_or_else(|_| "4f1c2b7e9d3a".into())
    );
    let mut body = Vec::new();
    let quoted = |s: &str| s.replace(['"', '\r', '\n'], "_");
    if let Some(t) = display_title {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"display_title\"\r\n\r\n{t}\r\n"
            )
            .as_bytes(),
        );
    }
    for f in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"files[]\"; filename=\"{}\"\r\ncontent-type: application/octet-stream\r\n\r\n",
                quoted(&f.path)
            )
            .as_bytes(),
        );
        body.extend_from_slice(&f.content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_names_each_file_by_its_path() {
        let (ct, body) = multipart(
            Some("Reports"),
            &[File {
                path: "r/SKILL.md".into(),
                content: b"---".to_vec(),
            }],
        );
        let boundary = ct.split("boundary=").nth(1).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"display_title\"\r\n\r\nReports\r\n"));
        assert!(text.contains("name=\"files[]\"; filename=\"r/SKILL.md\""));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }

    #[test]
    fn ids_are_read_from_either_api_shape() {
        let legacy = serde_json::json!({"id": "skill_1", "latest_version": "1759178010641129"});
        let current = serde_json::json!({"id": "skill_1", "latest_version_id": "skillver_9"});
        assert_eq!(
            text(&legacy, &["latest_version", "latest_version_id"]).unwrap(),
            "1759178010641129"
        );
        assert_eq!(
            text(&current, &["latest_version", "latest_version_id"]).unwrap(),
            "skillver_9"
        );
        assert_eq!(segment("skill_01/../x"), "skill_01..x");
    }
}
