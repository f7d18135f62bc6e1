//! The routing-model registry (`routing_model_versions`): versions of the learned
//! `llmrouter-*` strategies' artifacts, one active at a time (the serving one). Activating a version
//! switches the gateway's router settings to its strategy and artifact, pinned by the
//! manifest's sha256, and sends them to data planes as a settings delta in the same
//! transaction; data planes load it in the background (a pinned artifact whose manifest
//! differs is refused).
//!
//! A version that is not serving can be evaluated beside the serving one: in `shadow` mode
//! it decides every learned-routed request too, never acted on; in `ab` mode it decides a
//! share of the clients (sticky per end user or key). At most one version is in each mode;
//! its artifact goes into `routing_strategy_args.shadow` / `.ab`. Promoting it is
//! activating it, which ends its experiment; rolling back is activating the previous
//! version. [`report()`] compares the versions by what they decided and the feedback on it.

use routeiq_proto::{DeltaOp, RoutingStrategy, LEARNED_STRATEGIES};
use serde_json::{Map, Value};
use sqlx::{PgExecutor, Row};

use crate::audit::{self, Actor};
use crate::error::StoreError;
use crate::{changes, settings};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Version {
    pub id: i64,
    pub strategy: String,
    pub artifact_uri: String,
    pub sha256: String,
    pub metrics: Value,
    pub active: bool,
    pub created_at_ms: i64,
    /// `shadow` or `ab` while the version is evaluated.
    pub mode: Option<String>,
    /// An A/B version's share of the clients, in (0, 1).
    pub share: Option<f64>,
    /// An A/B version's client identity: `user` or `key`.
    pub sticky: Option<String>,
}

macro_rules! columns {
    () => {
        "id, strategy, artifact_uri, sha256, metrics, active, mode, share, sticky, \
         (extract(epoch FROM created_at) * 1000)::bigint AS created_at_ms"
    };
}

mod report;
pub use report::{default_since_ms, report, Feedback, Interval, ReportRow, Served, Shadowed};

fn read(row: &sqlx::postgres::PgRow) -> Result<Version, StoreError> {
    Ok(Version {
        id: row.try_get("id")?,
        strategy: row.try_get("strategy")?,
        artifact_uri: row.try_get("artifact_uri")?,
        sha256: row.try_get("sha256")?,
        metrics: row.try_get("metrics")?,
        active: row.try_get("active")?,
        created_at_ms: row.try_get("created_at_ms")?,
        mode: row.try_get("mode")?,
        share: row.try_get("share")?,
        sticky: row.try_get("sticky")?,
    })
}

/// Which experiment: the version's `mode`, and its key in `routing_strategy_args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shadow,
    Ab,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shadow => "shadow",
            Self::Ab => "ab",
        }
    }

    pub fn parse(mode: &str) -> Result<Self, StoreError> {
        match mode {
            "shadow" => Ok(Self::Shadow),
            "ab" => Ok(Self::Ab),
            _ => Err(StoreError::Invalid(format!(
                "mode `{mode}` is not `shadow` or `ab`"
            ))),
        }
    }

    /// The experiment `v` is in.
    fn of(v: &Version) -> Option<Self> {
        v.mode.as_deref().and_then(|m| Self::parse(m).ok())
    }
}

/// What keeps a client on one side of an A/B split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// The end user, else the key.
    User,
    /// The key, else the end user.
    Key,
}

impl Sticky {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Key => "key",
        }
    }

    /// `user` (also when empty) or `key`.
    pub fn parse(sticky: &str) -> Result<Self, StoreError> {
        match sticky {
            "" | "user" => Ok(Self::User),
            "key" => Ok(Self::Key),
            _ => Err(StoreError::Invalid(format!(
                "sticky `{sticky}` is not `user` or `key`"
            ))),
        }
    }
}

/// An experiment to start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Shadow,
    /// Decides `share` of the clients, in (0, 1).
    Ab {
        share: f64,
        sticky: Sticky,
    },
}

impl Mode {
    pub fn kind(self) -> Kind {
        match self {
            Self::Shadow => Kind::Shadow,
            Self::Ab { .. } => Kind::Ab,
        }
    }
}

/// Where an artifact is, as router settings say it.
#[derive(Debug, PartialEq)]
enum Location {
    Path(String),
    S3 { bucket: String, key: String },
}

fn location(uri: &str) -> Result<Location, StoreError> {
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Invalid(format!(
                "artifact_uri `{uri}` names no bucket"
            )));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_owned(),
            key: key.trim_end_matches('/').to_owned(),
        });
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if path.starts_with('/') {
        return Ok(Location::Path(path.to_owned()));
    }
    Err(StoreError::Invalid(format!(
        "artifact_uri `{uri}` must be s3://bucket/prefix, file:///dir or an absolute path"
    )))
}

fn strategy_name(s: &str) -> Result<String, StoreError> {
    let name = s.strip_prefix("llmrouter-").unwrap_or(s);
    if LEARNED_STRATEGIES.contains(&name) {
        Ok(name.to_owned())
    } else {
        Err(StoreError::Invalid(format!(
            "strategy `{s}` is not a learned strategy ({})",
            LEARNED_STRATEGIES.join(", ")
        )))
    }
}

pub async fn register(
    pool: &sqlx::PgPool,
    actor: &Actor,
    strategy: &str,
    artifact_uri: &str,
    sha256: &str,
    metrics: Value,
) -> Result<Version, StoreError> {
    let strategy = strategy_name(strategy)?;
    location(artifact_uri)?;
    let sha256 = sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid(
            "sha256 must be the manifest's SHA-256 in 64 hex digits".into(),
        ));
    }
    if !metrics.is_object() {
        return Err(StoreError::Invalid("metrics must be a JSON object".into()));
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(concat!(
        "INSERT INTO routing_model_versions (strategy, artifact_uri, sha256, metrics) \
         VALUES ($1, $2, $3, $4) RETURNING ",
        columns!()
    ))
    .bind(&strategy)
    .bind(artifact_uri)
    .bind(&sha256)
    .bind(&metrics)
    .fetch_one(&mut *tx)
    .await?;
    let v = read(&row)?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "routing_model.register",
            object_type: "routing_model",
            object_id: &v.id.to_string(),
            before: None,
            after: audit::json(&v),
            snapshot_version: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(v)
}

/// Activates version `id`; returns it and the snapshot version of the settings delta. A
/// version under evaluation (promoted) leaves its experiment in the same transaction.
pub async fn activate(
    pool: &sqlx::PgPool,
    actor: &Actor,
    id: i64,
) -> Result<(Version, u64), StoreError> {
    let mut tx = pool.begin().await?;
    // Settings are read, changed and written back: concurrent registry writes wait.
    changes::hold(&mut tx).await?;
    let before = locked(&mut *tx, id).await?;
    let ended = Kind::of(&before);
    if let Some(kind) = ended {
        clear_mode(&mut *tx, kind).await?;
    }
    // The gateway routes with one version: activating one deactivates every other, of any
    // strategy (first, so the one-serving index never sees two).
    sqlx::query("UPDATE routing_model_versions SET active = false WHERE active AND id <> $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE routing_model_versions SET active = true WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let mut gateway = settings::load(&mut *tx).await?;
    let router = &mut gateway.router;
    router.routing_strategy = RoutingStrategy::LlmRouter(format!("llmrouter-{}", before.strategy));
    if let Some(kind) = ended {
        router.routing_strategy_args.remove(kind.as_str());
    }
    point_at(&mut router.routing_strategy_args, &before)?;
    let after = Version {
        active: true,
        mode: None,
        share: None,
        sticky: None,
        ..before.clone()
    };
    let version = publish(
        tx,
        actor,
        gateway,
        "routing_model.activate",
        &before,
        &after,
    )
    .await?;
    Ok((after, version))
}

/// Evaluates version `id` beside the serving one, in shadow or A/B mode; a version in that
/// mode before leaves it. The gateway must route with a learned strategy, and `id` must not
/// be the serving version. Returns the version and the snapshot version of the settings
/// delta.
pub async fn start_experiment(
    pool: &sqlx::PgPool,
    actor: &Actor,
    id: i64,
    mode: Mode,
) -> Result<(Version, u64), StoreError> {
    if let Mode::Ab { share, .. } = mode {
        if !routeiq_proto::is_ab_share(share) {
            return Err(StoreError::Invalid(format!(
                "share must be between 0 and 1 (both excluded), got {share}"
            )));
        }
    }
    let kind = mode.kind();
    let mut tx = pool.begin().await?;
    // Settings are read, changed and written back: concurrent registry writes wait.
    changes::hold(&mut tx).await?;
    let before = locked(&mut *tx, id).await?;
    if before.active {
        return Err(StoreError::Conflict(format!(
            "routing model version {id} is the serving (active) one; evaluate another version"
        )));
    }
    let mut gateway = settings::load(&mut *tx).await?;
    let router = &mut gateway.router;
    if !matches!(router.routing_strategy, RoutingStrategy::LlmRouter(_)) {
        return Err(StoreError::Precondition(format!(
            "the gateway routes with `{}`: shadow and A/B evaluation need a learned \
             (llmrouter-*) strategy serving; activate a routing model version first",
            router.routing_strategy.name()
        )));
    }
    // The version may move from the other mode: that experiment ends.
    for k in [Some(kind), Kind::of(&before)].into_iter().flatten() {
        clear_mode(&mut *tx, k).await?;
        router.routing_strategy_args.remove(k.as_str());
    }
    let (share, sticky) = match mode {
        Mode::Shadow => (None, None),
        Mode::Ab { share, sticky } => (Some(share), Some(sticky.as_str())),
    };
    let row = sqlx::query(concat!(
        "UPDATE routing_model_versions SET mode = $2, share = $3, sticky = $4 \
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(kind.as_str())
    .bind(share)
    .bind(sticky)
    .fetch_one(&mut *tx)
    .await?;
    let after = read(&row)?;
    router.routing_strategy_args.insert(
        kind.as_str().into(),
        Value::Object(experiment_args(&after)?),
    );
    let action = match kind {
        Kind::Shadow => "routing_model.shadow",
        Kind::Ab => "routing_model.ab",
    };
    let version = publish(tx, actor, gateway, action, &before, &after).await?;
    Ok((after, version))
}

/// Ends the experiment of `kind`: its version leaves the mode and data planes stop
/// deciding with it. Returns that version and the snapshot version of the settings delta.
pub async fn stop_experiment(
    pool: &sqlx::PgPool,
    actor: &Actor,
    kind: Kind,
) -> Result<(Version, u64), StoreError> {
    let mut tx = pool.begin().await?;
    // Settings are read, changed and written back: concurrent registry writes wait.
    changes::hold(&mut tx).await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM routing_model_versions WHERE mode = $1 FOR UPDATE"
    ))
    .bind(kind.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        StoreError::NotFound(format!(
            "no routing model version is in {} mode",
            kind.as_str()
        ))
    })?;
    let before = read(&row)?;
    clear_mode(&mut *tx, kind).await?;
    let mut gateway = settings::load(&mut *tx).await?;
    gateway.router.routing_strategy_args.remove(kind.as_str());
    let after = Version {
        mode: None,
        share: None,
        sticky: None,
        ..before.clone()
    };
    let version = publish(tx, actor, gateway, "routing_model.stop", &before, &after).await?;
    Ok((after, version))
}

/// Version `id`, locked for the transaction.
async fn locked(conn: impl PgExecutor<'_>, id: i64) -> Result<Version, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM routing_model_versions WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("routing model version {id} not found")))?;
    read(&row)
}

/// No version is in `kind`'s mode any more.
async fn clear_mode(conn: impl PgExecutor<'_>, kind: Kind) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE routing_model_versions SET mode = NULL, share = NULL, sticky = NULL \
         WHERE mode = $1",
    )
    .bind(kind.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The arguments that name `v`'s artifact, pinned by its sha256: `model_path`, or
/// `model_s3_bucket` and `model_s3_key`; and `model_sha256`.
fn artifact_args(v: &Version) -> Result<Map<String, Value>, StoreError> {
    let mut args = Map::new();
    match location(&v.artifact_uri)? {
        Location::Path(p) => {
            args.insert("model_path".into(), p.into());
        }
        Location::S3 { bucket, key } => {
            args.insert("model_s3_bucket".into(), bucket.into());
            args.insert("model_s3_key".into(), key.into());
        }
    }
    args.insert("model_sha256".into(), v.sha256.clone().into());
    Ok(args)
}

/// Stores the changed gateway settings, sends them to data planes as one settings delta,
/// audits `action` on the version (`before` → `after`) and commits; returns the delta's
/// snapshot version.
async fn publish(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    actor: &Actor,
    gateway: routeiq_proto::GatewaySettings,
    action: &'static str,
    before: &Version,
    after: &Version,
) -> Result<u64, StoreError> {
    settings::store(&mut *tx, &gateway).await?;
    let version = changes::append(&mut tx, vec![DeltaOp::Settings(gateway)]).await?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action,
            object_type: "routing_model",
            object_id: &before.id.to_string(),
            before: audit::json(before),
            after: audit::json(after),
            snapshot_version: Some(version),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}

/// Points `routing_strategy_args` at `v`'s artifact, pinned by its sha256; other
/// arguments (cost_weight, fallback_strategy, reload_interval, ...) stay.
fn point_at(args: &mut Map<String, Value>, v: &Version) -> Result<(), StoreError> {
    for k in ["model_path", "model_s3_bucket", "model_s3_key"] {
        args.remove(k);
    }
    args.extend(artifact_args(v)?);
    Ok(())
}

/// `routing_strategy_args.shadow` / `.ab` for `v`: its strategy and artifact, and an A/B
/// version's `share` and `sticky`.
fn experiment_args(v: &Version) -> Result<Map<String, Value>, StoreError> {
    let mut args = Map::new();
    args.insert(
        "strategy".into(),
        format!("llmrouter-{}", v.strategy).into(),
    );
    args.extend(artifact_args(v)?);
    if let Some(share) = v.share {
        args.insert("share".into(), share.into());
    }
    if let Some(sticky) = &v.sticky {
        args.insert("sticky".into(), sticky.clone().into());
    }
    Ok(args)
}

pub async fn list(pool: &sqlx::PgPool, strategy: &str) -> Result<Vec<Version>, StoreError> {
    let strategy = strategy.trim().trim_start_matches("llmrouter-");
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM routing_model_versions WHERE $1 = '' OR strategy = $1 ORDER BY id"
    ))
    .bind(strategy)
    .fetch_all(pool)
    .await?;
    rows.iter().map(read).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            location("s3://models/routers/knn/").unwrap(),
            Location::S3 {
                bucket: "models".into(),
                key: "routers/knn".into()
            }
        );
        assert_eq!(
            location("file:///srv/knn").unwrap(),
            Location::Path("/srv/knn".into())
        );
        assert_eq!(
            location("/srv/knn").unwrap(),
            Location::Path("/srv/knn".into())
        );
        assert!(location("knn").is_err() && location("s3:///x").is_err());
        assert!(strategy_name("llmrouter-knn").is_ok() && strategy_name("causallm").is_err());
        for bad in [" knn", "llmrouter-llmrouter-knn", ""] {
            assert!(strategy_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn experiments_name_their_artifact_as_the_serving_version_does() {
        let v = Version {
            id: 3,
            strategy: "mlp".into(),
            artifact_uri: "s3://models/routers/mlp/".into(),
            sha256: "c".repeat(64),
            metrics: serde_json::json!({}),
            active: false,
            created_at_ms: 0,
            mode: Some("ab".into()),
            share: Some(0.25),
            sticky: Some("key".into()),
        };
        assert_eq!(
            Value::Object(experiment_args(&v).unwrap()),
            serde_json::json!({
                "strategy": "llmrouter-mlp", "model_s3_bucket": "models",
                "model_s3_key": "routers/mlp", "model_sha256": "c".repeat(64),
                "share": 0.25, "sticky": "key"
            })
        );
        let mut serving = Map::new();
        serving.insert("model_path".into(), "/old".into());
        serving.insert("cost_weight".into(), Value::from(0.5));
        point_at(&mut serving, &v).unwrap();
        assert_eq!(
            Value::Object(serving),
            serde_json::json!({
                "cost_weight": 0.5, "model_s3_bucket": "models",
                "model_s3_key": "routers/mlp", "model_sha256": "c".repeat(64)
            })
        );
        assert_eq!(Kind::parse("ab").unwrap(), Kind::Ab);
        assert!(Kind::parse("canary").is_err() && Sticky::parse("team").is_err());
        assert_eq!(Sticky::parse("").unwrap(), Sticky::User);
    }
}
