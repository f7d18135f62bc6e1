//! Skill bundles in the S3-compatible object store (`--skill-store s3://bucket/prefix`):
//! one zip per version, `<prefix>/skills/<skill id>/<version>-<upload>.zip`, through the planes'
//! shared S3 client (`routeiq_service::s3`: the standard AWS variables).

use aws_sdk_s3::primitives::ByteStream;

use crate::error::StoreError;

pub struct Objects {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

fn unavailable(what: &str, key: &str, e: impl std::fmt::Display) -> StoreError {
    tracing::warn!(key, error = %e, "skill store: {what} failed");
    StoreError::Unavailable(format!(
        "the skill store could not {what} `{key}`; see the control plane's log"
    ))
}

impl Objects {
    /// The store `uri` (`s3://bucket[/prefix]`) names.
    pub async fn new(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| format!("--skill-store `{uri}` must be s3://bucket[/prefix]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("--skill-store `{uri}` names no bucket"));
        }
        Ok(Self {
            client: routeiq_service::s3::client(None).await,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// Where one upload of a version's bundle goes (`unique` tells uploads apart).
    pub fn key(&self, skill_id: &str, version: &str, unique: &str) -> String {
        if self.prefix.is_empty() {
            format!("skills/{skill_id}/{version}-{unique}.zip")
        } else {
            format!("{}/skills/{skill_id}/{version}-{unique}.zip", self.prefix)
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/zip")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| unavailable("store", key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable("read", key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| unavailable("read", key, e))?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// Removes an object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable("delete", key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
