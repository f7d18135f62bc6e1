//! The skill registry (Anthropic's Skills API, `/v1/skills`): a skill's label, name and
//! authors in `skills`, each version in `skill_versions` with its bundle (a zip) in the
//! object store ([`objects`]), and each version's copies on Anthropic deployments in
//! `skill_copies`, made by [`sync`] in the background. Data planes get every skill with its
//! versions and copies (`routeiq_proto::Skill`) in the snapshot and as deltas, and name a
//! deployment's copy when a request loads the skill.

pub mod bundle;
pub mod objects;
pub mod sync;
mod upstream;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use routeiq_proto::{DeltaOp, Skill, SkillCopy};
use serde_json::json;
use sqlx::{PgExecutor, PgPool, Row};

use crate::audit::{self, Actor};
use crate::error::StoreError;
use bundle::{Bundle, File};
use objects::Objects;

/// What the skill API needs besides PostgreSQL: the bundle store, and the uploader's wake-up.
pub struct Skills {
    pub objects: Objects,
    pub wake: tokio::sync::Notify,
    anthropic: upstream::Anthropic,
}

impl Skills {
    pub fn new(objects: Objects) -> Arc<Self> {
        Arc::new(Self {
            objects,
            wake: tokio::sync::Notify::new(),
            anthropic: upstream::Anthropic::new(),
        })
    }
}

/// A skill as listed.
#[derive(Debug, Clone)]
pub struct SkillInfo {
    pub id: String,
    pub name: String,
    pub display_name: String,
    /// The latest version's description.
    pub description: String,
    pub latest_version: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub created_by: String,
    pub copies: Vec<SkillCopy>,
}

/// One version as listed.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub skill_id: String,
    pub version: String,
    pub name: String,
    pub description: String,
    /// The top-level directory of its files.
    pub directory: String,
    pub created_at_ms: i64,
    pub size: u64,
    pub sha256: String,
    pub object_key: String,
}

/// A listing page: 1 to 1,000 items (20 by default) after the `page` cursor.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub offset: i64,
    pub limit: i64,
}

impl Cursor {
    /// From a request's `limit` (0: 20) and `page` (a previous page's `next_page`).
    pub fn new(limit: u32, page: &str) -> Result<Self, StoreError> {
        if limit > 1000 {
            return Err(StoreError::Invalid("limit: at most 1000".into()));
        }
        let offset = match page {
            "" => 0,
            p => p
                .parse::<u32>()
                .map_err(|_| StoreError::Invalid(format!("page: `{p}` is not a page token")))?,
        };
        Ok(Self {
            offset: i64::from(offset),
            limit: if limit == 0 { 20 } else { i64::from(limit) },
        })
    }

    /// The next page's token, when `fetched` (one more than the limit was asked for) says
    /// there is one.
    fn next(&self, fetched: usize) -> Option<String> {
        (fetched as i64 > self.limit).then(|| (self.offset + self.limit).to_string())
    }
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("skill `{id}` not found"))
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A label: one line, at most 255 characters.
fn display_name(given: Option<String>, name: &str) -> Result<String, StoreError> {
    match given.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()) {
        None => Ok(name.to_owned()),
        Some(d) if d.chars().count() > 255 || d.contains(['\n', '\r', '\0']) => Err(
            StoreError::Invalid("display_name: one line of at most 255 characters".into()),
        ),
        Some(d) => Ok(d),
    }
}

const INFO_COLUMNS: &str = "s.skill_id, s.name, s.display_name, s.created_by,
    (EXTRACT(EPOCH FROM s.created_at) * 1000)::bigint AS created_at_ms,
    (EXTRACT(EPOCH FROM s.updated_at) * 1000)::bigint AS updated_at_ms,
    (SELECT v.version FROM skill_versions v WHERE v.skill_id = s.skill_id
      ORDER BY v.created_at DESC, v.version DESC LIMIT 1) AS latest_version,
    (SELECT v.description FROM skill_versions v WHERE v.skill_id = s.skill_id
      ORDER BY v.created_at DESC, v.version DESC LIMIT 1) AS description";

fn info_of(r: &sqlx::postgres::PgRow) -> Result<SkillInfo, StoreError> {
    Ok(SkillInfo {
        id: r.try_get("skill_id")?,
        name: r.try_get("name")?,
        display_name: r.try_get("display_name")?,
        description: r
            .try_get::<Option<String>, _>("description")?
            .unwrap_or_default(),
        latest_version: r
            .try_get::<Option<String>, _>("latest_version")?
            .unwrap_or_default(),
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        created_by: r.try_get("created_by")?,
        copies: Vec::new(),
    })
}

const VERSION_COLUMNS: &str =
    "skill_id, version, name, description, directory, size, sha256, object_key,
    (EXTRACT(EPOCH FROM created_at) * 1000)::bigint AS created_at_ms";

fn version_of(r: &sqlx::postgres::PgRow) -> Result<VersionInfo, StoreError> {
    Ok(VersionInfo {
        skill_id: r.try_get("skill_id")?,
        version: r.try_get("version")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        directory: r.try_get("directory")?,
        created_at_ms: r.try_get("created_at_ms")?,
        size: r.try_get::<i64, _>("size")? as u64,
        sha256: r.try_get("sha256")?,
        object_key: r.try_get("object_key")?,
    })
}

/// The copies of skills `ids` (every skill's when `None`), with their skill's id.
async fn copies(
    conn: impl PgExecutor<'_>,
    ids: Option<&[String]>,
) -> Result<Vec<(String, SkillCopy)>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.skill_id, c.version, c.deployment_id, c.upstream_skill_id, c.upstream_version
           FROM skill_copies c JOIN skill_versions v USING (skill_id, version)
          WHERE $1::text[] IS NULL OR c.skill_id = ANY($1)
          ORDER BY c.skill_id, v.created_at, c.version, c.deployment_id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("skill_id")?,
                SkillCopy {
                    version: r.try_get("version")?,
                    deployment_id: r.try_get("deployment_id")?,
                    upstream_skill_id: r.try_get("upstream_skill_id")?,
                    upstream_version: r.try_get("upstream_version")?,
                },
            ))
        })
        .collect()
}

/// The copies of skill `id`.
async fn copies_of(conn: impl PgExecutor<'_>, id: &str) -> Result<Vec<SkillCopy>, StoreError> {
    let ids = [id.to_owned()];
    Ok(copies(conn, Some(&ids))
        .await?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

/// Takes skill `id`'s row lock for the transaction; `false`: there is no such skill. Every
/// change to a skill (a version, a copy, a delete) takes it first, so each delta reads
/// the skill as the change before it left it.
async fn lock(conn: &mut sqlx::PgConnection, id: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("SELECT 1 FROM skills WHERE skill_id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}

/// Every skill as data planes see it (the snapshot).
pub async fn load_all(conn: &mut sqlx::PgConnection) -> Result<Vec<Skill>, StoreError> {
    let rows = sqlx::query(
        "SELECT skill_id, version FROM skill_versions ORDER BY skill_id, created_at, version",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut skills: Vec<Skill> = Vec::new();
    for r in &rows {
        let id: String = r.try_get("skill_id")?;
        let version: String = r.try_get("version")?;
        match skills.last_mut() {
            Some(s) if s.id == id => s.versions.push(version),
            _ => skills.push(Skill {
                id,
                versions: vec![version],
                copies: Vec::new(),
            }),
        }
    }
    let at: std::collections::HashMap<String, usize> = skills
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    for (id, c) in copies(&mut *conn, None).await? {
        if let Some(&i) = at.get(&id) {
            skills[i].copies.push(c);
        }
    }
    Ok(skills)
}

/// Skill `id` as data planes see it.
async fn view(conn: &mut sqlx::PgConnection, id: &str) -> Result<Skill, StoreError> {
    let versions: Vec<String> = sqlx::query_scalar(
        "SELECT version FROM skill_versions WHERE skill_id = $1 ORDER BY created_at, version",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Skill {
        id: id.to_owned(),
        versions,
        copies: copies_of(&mut *conn, id).await?,
    })
}

/// Sends skill `id` as it now is to data planes, in `tx`, which holds its [`lock`].
async fn publish(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: &str,
) -> Result<u64, StoreError> {
    let skill = view(tx, id).await?;
    Ok(crate::changes::append(tx, vec![DeltaOp::UpsertSkill(skill)]).await?)
}

/// A checked upload stored as a new version's bundle; returns its key, size and digest.
async fn store_bundle(
    skills: &Skills,
    id: &str,
    version: &str,
    bundle: &Bundle,
) -> Result<(String, usize, String), StoreError> {
    let zip = bundle.to_zip()?;
    let (size, sha) = (zip.len(), bundle::sha256_hex(&zip));
    // A key of its own (another upload may draw the same version before one of them fails
    // on it), so a failed upload's cleanup never removes a stored version's bundle.
    let key = skills
        .objects
        .key(id, version, &crate::crypto::new_id()?[..8]);
    skills.objects.put(&key, zip).await?;
    Ok((key, size, sha))
}

/// After a new version's transaction: its stored bundle is removed when the transaction
/// failed; else the copier starts a round.
async fn settle<T>(
    skills: &Skills,
    key: &str,
    saved: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match &saved {
        Err(_) => {
            let _ = skills.objects.delete(key).await;
        }
        Ok(_) => skills.wake.notify_one(),
    }
    saved
}

#[allow(clippy::too_many_arguments)]
async fn insert_version(
    conn: impl PgExecutor<'_>,
    id: &str,
    version: &str,
    bundle: &Bundle,
    key: &str,
    size: usize,
    sha: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO skill_versions (skill_id, version, name, description, directory, object_key, size, sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(version)
    .bind(&bundle.name)
    .bind(&bundle.description)
    .bind(&bundle.directory)
    .bind(key)
    .bind(size as i64)
    .bind(sha)
    .execute(conn)
    .await
    .map_err(|e| {
        StoreError::on_constraint(
            e,
            [(
                "skill_versions_pkey",
                StoreError::Conflict(format!(
                    "skill `{id}` got another version at the same instant; upload again"
                )),
            )],
        )
    })?;
    Ok(())
}

fn version_audit(v: &str, bundle: &Bundle, size: usize, sha: &str) -> serde_json::Value {
    json!({
        "version": v,
        "name": bundle.name,
        "description": bundle.description,
        "files": bundle.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        "size": size,
        "sha256": sha,
    })
}

/// Creates a skill from an upload (`POST /v1/skills`): the bundle goes to the object
/// store, the skill and its first version to PostgreSQL and to data planes as one delta.
pub async fn create(
    pool: &PgPool,
    skills: &Skills,
    actor: &Actor,
    display: Option<String>,
    files: Vec<File>,
) -> Result<(SkillInfo, u64), StoreError> {
    let bundle = Bundle::from_upload(files)?;
    let display = display_name(display, &bundle.name)?;
    let id = format!("skill_{}", crate::crypto::new_id()?);
    let version = now_micros().to_string();
    let (key, size, sha) = store_bundle(skills, &id, &version, &bundle).await?;
    let saved = async {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO skills (skill_id, name, display_name, created_by, updated_by)
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&id)
        .bind(&bundle.name)
        .bind(&display)
        .bind(&actor.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            StoreError::on_constraint(
                e,
                [(
                    "skills_name_key",
                    StoreError::Conflict(format!(
                        "a skill named `{}` already exists: add a version to it (POST /v1/skills/{{skill_id}}/versions)",
                        bundle.name
                    )),
                )],
            )
        })?;
        insert_version(&mut *tx, &id, &version, &bundle, &key, size, &sha).await?;
        let snapshot_version = publish(&mut tx, &id).await?;
        let mut after = version_audit(&version, &bundle, size, &sha);
        after["display_name"] = json!(display);
        audit::record(
            &mut *tx,
            actor,
            audit::Entry {
                action: "skill.create",
                object_type: "skill",
                object_id: &id,
                before: None,
                after: Some(after),
                snapshot_version: Some(snapshot_version),
            },
        )
        .await?;
        let info = get_in(&mut tx, &id).await?;
        tx.commit().await?;
        Ok::<_, StoreError>((info, snapshot_version))
    }
    .await;
    settle(skills, &key, saved).await
}

/// Adds a version to skill `id` (`POST /v1/skills/{id}/versions`). Its SKILL.md must name
/// the skill as the first version did.
pub async fn add_version(
    pool: &PgPool,
    skills: &Skills,
    actor: &Actor,
    id: &str,
    files: Vec<File>,
) -> Result<(VersionInfo, u64), StoreError> {
    let bundle = Bundle::from_upload(files)?;
    let name: String = sqlx::query_scalar("SELECT name FROM skills WHERE skill_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| not_found(id))?;
    if bundle.name != name {
        return Err(StoreError::Invalid(format!(
            "SKILL.md names `{}`, but this skill is `{name}`: a skill keeps its name across versions",
            bundle.name
        )));
    }
    let version = now_micros().to_string();
    let (key, size, sha) = store_bundle(skills, id, &version, &bundle).await?;
    let saved = async {
        let mut tx = pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE skills SET updated_by = $2, updated_at = now() WHERE skill_id = $1",
        )
        .bind(id)
        .bind(&actor.id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(not_found(id));
        }
        insert_version(&mut *tx, id, &version, &bundle, &key, size, &sha).await?;
        let snapshot_version = publish(&mut tx, id).await?;
        audit::record(
            &mut *tx,
            actor,
            audit::Entry {
                action: "skill.version.create",
                object_type: "skill",
                object_id: id,
                before: None,
                after: Some(version_audit(&version, &bundle, size, &sha)),
                snapshot_version: Some(snapshot_version),
            },
        )
        .await?;
        let v = version_in(&mut *tx, id, &version).await?;
        tx.commit().await?;
        Ok::<_, StoreError>((v, snapshot_version))
    }
    .await;
    settle(skills, &key, saved).await
}

async fn get_in(conn: &mut sqlx::PgConnection, id: &str) -> Result<SkillInfo, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INFO_COLUMNS} FROM skills s WHERE s.skill_id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found(id))?;
    let mut info = info_of(&row)?;
    info.copies = copies_of(&mut *conn, id).await?;
    Ok(info)
}

pub async fn get(pool: &PgPool, id: &str) -> Result<SkillInfo, StoreError> {
    get_in(&mut *pool.acquire().await?, id).await
}

/// Skills, newest first; and the next page's token.
pub async fn list(
    pool: &PgPool,
    cursor: Cursor,
) -> Result<(Vec<SkillInfo>, Option<String>), StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INFO_COLUMNS} FROM skills s
          ORDER BY s.created_at DESC, s.skill_id LIMIT $1 OFFSET $2"
    )))
    .bind(cursor.limit + 1)
    .bind(cursor.offset)
    .fetch_all(pool)
    .await?;
    let next = cursor.next(rows.len());
    let mut skills = rows
        .iter()
        .take(cursor.limit as usize)
        .map(info_of)
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<String> = skills.iter().map(|s| s.id.clone()).collect();
    let mut all = copies(pool, Some(&ids)).await?;
    for s in &mut skills {
        s.copies = all
            .iter_mut()
            .filter(|(id, _)| *id == s.id)
            .map(|(_, c)| std::mem::take(c))
            .collect();
    }
    Ok((skills, next))
}

async fn version_in(
    conn: impl PgExecutor<'_>,
    id: &str,
    version: &str,
) -> Result<VersionInfo, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM skill_versions
          WHERE skill_id = $1 AND ($2 = 'latest' OR version = $2)
          ORDER BY created_at DESC, version DESC LIMIT 1"
    )))
    .bind(id)
    .bind(version)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("skill `{id}` has no version `{version}`")))?;
    version_of(&row)
}

/// Version `version` (`latest`: the newest) of skill `id`.
pub async fn get_version(
    pool: &PgPool,
    id: &str,
    version: &str,
) -> Result<VersionInfo, StoreError> {
    version_in(pool, id, version).await
}

/// Versions of skill `id`, newest first; and the next page's token.
pub async fn list_versions(
    pool: &PgPool,
    id: &str,
    cursor: Cursor,
) -> Result<(Vec<VersionInfo>, Option<String>), StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM skill_versions WHERE skill_id = $1
          ORDER BY created_at DESC, version DESC LIMIT $2 OFFSET $3"
    )))
    .bind(id)
    .bind(cursor.limit + 1)
    .bind(cursor.offset)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() && cursor.offset == 0 {
        return Err(not_found(id));
    }
    let next = cursor.next(rows.len());
    let versions = rows
        .iter()
        .take(cursor.limit as usize)
        .map(version_of)
        .collect::<Result<_, _>>()?;
    Ok((versions, next))
}

/// A version's bundle (a zip) and the skill's name.
pub async fn content(
    pool: &PgPool,
    skills: &Skills,
    id: &str,
    version: &str,
) -> Result<(Vec<u8>, String), StoreError> {
    let v = version_in(pool, id, version).await?;
    Ok((skills.objects.get(&v.object_key).await?, v.name))
}

/// Deletes skill `id` with all its versions (`DELETE /v1/skills/{id}`), as one delta; then
/// its bundles and its copies at the providers, in the background.
pub async fn delete(
    pool: &PgPool,
    skills: &Arc<Skills>,
    secrets: &Arc<crate::crypto::SecretBox>,
    actor: &Actor,
    id: &str,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    if !lock(&mut tx, id).await? {
        return Err(not_found(id));
    }
    let before = get_in(&mut tx, id).await?;
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT object_key FROM skill_versions WHERE skill_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    sqlx::query("DELETE FROM skills WHERE skill_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let version =
        crate::changes::append(&mut tx, vec![DeltaOp::DeleteSkill(id.to_owned())]).await?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "skill.delete",
            object_type: "skill",
            object_id: id,
            before: Some(json!({
                "name": before.name,
                "display_name": before.display_name,
                "latest_version": before.latest_version,
                "copies": before.copies.len(),
            })),
            after: None,
            snapshot_version: Some(version),
        },
    )
    .await?;
    tx.commit().await?;
    tokio::spawn(sync::forget(
        pool.clone(),
        Arc::clone(secrets),
        Arc::clone(skills),
        keys,
        before.copies,
        true,
    ));
    Ok(version)
}

/// Deletes one version of skill `id` (`latest`: the newest); a skill keeps at least one
/// (delete the skill instead). Returns the snapshot version and the version deleted.
pub async fn delete_version(
    pool: &PgPool,
    skills: &Arc<Skills>,
    secrets: &Arc<crate::crypto::SecretBox>,
    actor: &Actor,
    id: &str,
    version: &str,
) -> Result<(u64, String), StoreError> {
    let mut tx = pool.begin().await?;
    if !lock(&mut tx, id).await? {
        return Err(not_found(id));
    }
    let v = version_in(&mut *tx, id, version).await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM skill_versions WHERE skill_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if count <= 1 {
        return Err(StoreError::Conflict(format!(
            "version `{}` is the only version of skill `{id}`: delete the skill instead",
            v.version
        )));
    }
    let gone: Vec<SkillCopy> = copies_of(&mut *tx, id)
        .await?
        .into_iter()
        .filter(|c| c.version == v.version)
        .collect();
    sqlx::query("DELETE FROM skill_versions WHERE skill_id = $1 AND version = $2")
        .bind(id)
        .bind(&v.version)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE skills SET updated_by = $2, updated_at = now() WHERE skill_id = $1")
        .bind(id)
        .bind(&actor.id)
        .execute(&mut *tx)
        .await?;
    let snapshot_version = publish(&mut tx, id).await?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "skill.version.delete",
            object_type: "skill",
            object_id: id,
            before: Some(json!({"version": v.version, "sha256": v.sha256})),
            after: None,
            snapshot_version: Some(snapshot_version),
        },
    )
    .await?;
    tx.commit().await?;
    tokio::spawn(sync::forget(
        pool.clone(),
        Arc::clone(secrets),
        Arc::clone(skills),
        vec![v.object_key],
        gone,
        false,
    ));
    Ok((snapshot_version, v.version))
}
