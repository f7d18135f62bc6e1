//! The `routeiq.v1.ControlPlane` gRPC service: thin handlers that convert messages, call the
//! store modules, and convert back. Optional bearer-token check on every call.

use std::sync::Arc;

use routeiq_proto::wire::pb;
use routeiq_proto::KeyHash;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::audit::Actor;
use crate::crypto::SecretBox;
use crate::keys::{self, KeyFields, KeyRecord};
use crate::{changes, snapshot, Page};

pub use pb::control_plane_server::ControlPlaneServer;

pub struct Service {
    pub pool: PgPool,
    pub secrets: Arc<SecretBox>,
}

/// Rejects calls without `authorization: Bearer <token>` when a token is configured.
pub fn check_token(
    token: Option<Arc<str>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(want) = &token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if KeyHash::of(g).ct_eq(&KeyHash::of(want)) => Ok(req),
            _ => Err(Status::unauthenticated(
                "missing or wrong control-plane token",
            )),
        }
    }
}

fn actor(a: Option<pb::Actor>) -> Actor {
    a.map(|a| Actor {
        id: a.id,
        source_ip: a.source_ip,
    })
    .unwrap_or_else(|| Actor::system("grpc"))
}

fn key_ref(r: Option<pb::KeyRef>) -> Result<KeyHash, Status> {
    match r.and_then(|r| r.r#ref) {
        Some(pb::key_ref::Ref::Key(k)) => Ok(KeyHash::of(&k)),
        Some(pb::key_ref::Ref::KeyHash(h)) => KeyHash::from_hex(&h)
            .ok_or_else(|| Status::invalid_argument("key_hash must be 64 hex digits")),
        None => Err(Status::invalid_argument("a key or key_hash is required")),
    }
}

fn fields(f: Option<pb::KeyFields>) -> Result<KeyFields, Status> {
    let f = f.unwrap_or_default();
    let metadata = f
        .metadata_json
        .map(|m| {
            serde_json::from_str(&m)
                .map_err(|e| Status::invalid_argument(format!("metadata is not JSON: {e}")))
        })
        .transpose()?;
    Ok(KeyFields {
        alias: f.key_alias,
        models: f.set_models.then_some(f.models),
        max_budget: f.max_budget,
        soft_budget: f.soft_budget,
        budget_duration: f.budget_duration,
        rpm_limit: f.rpm_limit,
        tpm_limit: f.tpm_limit,
        max_parallel_requests: f.max_parallel_requests,
        expires_at: f.expires_at,
        team_id: f.team_id,
        user_id: f.user_id,
        metadata,
        tags: (!f.tags.is_empty()).then_some(f.tags),
    })
}

fn info(r: KeyRecord, snapshot_version: u64) -> pb::KeyInfo {
    let unsigned = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
    pb::KeyInfo {
        key_hash: r.hash,
        key_name: r.key_name,
        key_alias: r.alias.unwrap_or_default(),
        models: r.models,
        max_budget: r.max_budget,
        soft_budget: r.soft_budget,
        spend: r.spend,
        budget_duration: r.budget_duration,
        budget_reset_at: r.budget_reset_at,
        rpm_limit: unsigned(r.rpm_limit),
        tpm_limit: unsigned(r.tpm_limit),
        max_parallel_requests: unsigned(r.max_parallel_requests),
        expires_at: r.expires_at,
        blocked: r.blocked,
        team_id: r.team_id.unwrap_or_default(),
        user_id: r.user_id.unwrap_or_default(),
        metadata_json: r.metadata.to_string(),
        tags: r.tags,
        created_at: r.created_at,
        updated_at: r.updated_at,
        snapshot_version,
    }
}

#[tonic::async_trait]
impl pb::control_plane_server::ControlPlane for Service {
    async fn generate_key(
        &self,
        req: Request<pb::GenerateKeyRequest>,
    ) -> Result<Response<pb::GenerateKeyResponse>, Status> {
        let r = req.into_inner();
        let (key, rec, version) =
            keys::generate(&self.pool, &actor(r.actor), r.key, &fields(r.fields)?).await?;
        Ok(Response::new(pb::GenerateKeyResponse {
            key,
            info: Some(info(rec, version)),
            snapshot_version: version,
        }))
    }

    async fn update_key(
        &self,
        req: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let r = req.into_inner();
        let hash = key_ref(r.r#ref)?;
        let (rec, version) =
            keys::update(&self.pool, &actor(r.actor), &hash, &fields(r.fields)?).await?;
        Ok(Response::new(info(rec, version)))
    }

    async fn delete_keys(
        &self,
        req: Request<pb::DeleteKeysRequest>,
    ) -> Result<Response<pb::DeleteKeysResponse>, Status> {
        let r = req.into_inner();
        let hashes = r
            .refs
            .into_iter()
            .map(|k| key_ref(Some(k)))
            .collect::<Result<Vec<_>, _>>()?;
        let (deleted, version) = keys::delete(&self.pool, &actor(r.actor), &hashes).await?;
        Ok(Response::new(pb::DeleteKeysResponse {
            deleted_key_hashes: deleted.iter().map(KeyHash::to_hex).collect(),
            snapshot_version: version,
        }))
    }

    async fn set_key_blocked(
        &self,
        req: Request<pb::SetKeyBlockedRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let r = req.into_inner();
        let hash = key_ref(r.r#ref)?;
        let (rec, version) =
            keys::set_blocked(&self.pool, &actor(r.actor), &hash, r.blocked).await?;
        Ok(Response::new(info(rec, version)))
    }

    async fn get_key(&self, req: Request<pb::KeyRef>) -> Result<Response<pb::KeyInfo>, Status> {
        let hash = key_ref(Some(req.into_inner()))?;
        let rec = keys::get(&self.pool, &hash).await?;
        let version = changes::current(&self.pool)
            .await
            .map_err(crate::error::StoreError::from)?;
        Ok(Response::new(info(rec, version)))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let r = req.into_inner();
        let (recs, total) = keys::list(
            &self.pool,
            r.team_id.as_deref(),
            r.user_id.as_deref(),
            Page::new(r.page, r.page_size),
        )
        .await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: recs.into_iter().map(|k| info(k, 0)).collect(),
            total,
        }))
    }

    async fn get_snapshot(
        &self,
        _req: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        let s = snapshot::build(&self.pool, &self.secrets).await?;
        Ok(Response::new(pb::Snapshot::from(&s)))
    }

    async fn get_snapshot_version(
        &self,
        _req: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotVersion>, Status> {
        let version = changes::current(&self.pool)
            .await
            .map_err(crate::error::StoreError::from)?;
        Ok(Response::new(pb::SnapshotVersion { version }))
    }
}
