//! The skill registry in Anthropic's Skills API shapes, as LiteLLM exposes it: `POST` and
//! `GET /v1/skills`, `GET` and `DELETE /v1/skills/{skill_id}`, `POST` and `GET
//! /v1/skills/{skill_id}/versions`, `GET` and `DELETE
//! /v1/skills/{skill_id}/versions/{version}`, and the bundle at `.../content`. Uploads are
//! `multipart/form-data`: the skill's files as `files[]` (their paths, under one directory,
//! as the file names; or one zip archive) and an optional `display_name` (`display_title`
//! is read too). The official `anthropic` SDK's `client.beta.skills` works against these
//! routes unmodified. The control plane keeps the bundles in its object store and copies
//! each version to every Anthropic deployment; requests that load a skill
//! (`container.skills`) reach the deployment's copy. Admins create and delete skills; every
//! role may read them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{count_param, Params};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

/// Largest upload accepted: the control plane's bundle limit (8 MiB of files) and room for
/// the multipart framing.
pub const MAX_UPLOAD_BYTES: usize = 9 * 1024 * 1024;

/// The body limit of the upload routes.
pub fn upload_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_UPLOAD_BYTES)
}

/// A skill upload (`multipart/form-data`). Other fields are ignored (LiteLLM's
/// `custom_llm_provider`, ...).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SkillUpload {
    /// The skill's files, each named by its path (`<directory>/SKILL.md`, ...), all in one
    /// top-level directory with SKILL.md at its root; or one zip archive of them. Sent as
    /// `files[]` (or `files`).
    #[schema(value_type = Vec<String>, format = Binary)]
    files: Vec<Vec<u8>>,
    /// One line of at most 255 characters; absent: the SKILL.md front matter's `name`.
    /// (`display_title`, the older name, is read too.)
    display_name: Option<String>,
}

/// Where a skill comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkillSource {
    /// Always `custom`: the registry holds the skills its users upload.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One version's copy on one Anthropic deployment.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkillCopy {
    pub version: String,
    pub deployment_id: String,
    /// The skill's id at the provider.
    pub upstream_skill_id: String,
    pub upstream_version: String,
}

/// A skill, in Anthropic's shape (the current and the `skills-2025-10-02` field names both).
#[derive(Debug, Serialize, ToSchema)]
pub struct Skill {
    pub id: String,
    /// Always `skill`.
    #[serde(rename = "type")]
    pub kind: String,
    pub display_name: String,
    /// `display_name`, under its older name.
    pub display_title: String,
    /// The SKILL.md front matter's `name`: the skill's directory.
    pub name: String,
    /// The latest version's description.
    pub description: String,
    pub source: SkillSource,
    pub latest_version: String,
    /// `latest_version`, under its newer name.
    pub latest_version_id: String,
    pub created_at: String,
    pub updated_at: String,
    /// The versions' copies on Anthropic deployments so far (RouteIQ's addition).
    pub copies: Vec<SkillCopy>,
}

/// One version of a skill.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkillVersion {
    /// The version (Unix microseconds at its upload, as Anthropic's version ids).
    pub id: String,
    /// Always `skill_version`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `id`, under its older name.
    pub version: String,
    pub skill_id: String,
    pub name: String,
    pub description: String,
    /// The directory the files are in.
    pub directory: String,
    pub created_at: String,
    /// The bundle's size in bytes and SHA-256.
    pub size: u64,
    pub sha256: String,
}

/// A version's files as a zip archive.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Archive(Vec<u8>);

#[derive(Debug, Serialize, ToSchema)]
pub struct SkillList {
    pub data: Vec<Skill>,
    pub has_more: bool,
    /// Pass as `page` for the next page; `null` on the last.
    pub next_page: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkillVersionList {
    pub data: Vec<SkillVersion>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

/// A deleted skill or version.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    /// `skill_deleted` or `skill_version_deleted`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Results per page, 1 to 1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_page` of the previous page (empty: the first).
    #[param(pattern = "^[0-9]{0,9}$")]
    pub page: Option<String>,
    /// `custom` (or absent): the registry's skills; `anthropic`: none (Anthropic's own
    /// skills are named directly in requests).
    pub source: Option<String>,
}

fn ms_iso(ms: i64) -> String {
    iso(ms.div_euclid(1000))
}

impl From<pb::SkillInfo> for Skill {
    fn from(s: pb::SkillInfo) -> Self {
        Self {
            kind: "skill".into(),
            display_title: s.display_name.clone(),
            display_name: s.display_name,
            name: s.name,
            description: s.description,
            source: SkillSource {
                kind: "custom".into(),
            },
            latest_version_id: s.latest_version.clone(),
            latest_version: s.latest_version,
            created_at: ms_iso(s.created_at_ms),
            updated_at: ms_iso(s.updated_at_ms),
            copies: s
                .copies
                .into_iter()
                .map(|c| SkillCopy {
                    version: c.version,
                    deployment_id: c.deployment_id,
                    upstream_skill_id: c.upstream_skill_id,
                    upstream_version: c.upstream_version,
                })
                .collect(),
            id: s.id,
        }
    }
}

impl From<pb::SkillVersionInfo> for SkillVersion {
    fn from(v: pb::SkillVersionInfo) -> Self {
        Self {
            kind: "skill_version".into(),
            id: v.version.clone(),
            version: v.version,
            skill_id: v.skill_id,
            directory: v.directory,
            name: v.name,
            description: v.description,
            created_at: ms_iso(v.created_at_ms),
            size: v.size,
            sha256: v.sha256,
        }
    }
}

/// The files and label of an upload.
async fn upload(
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<(Vec<pb::SkillFile>, Option<String>)> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), format!("unreadable upload: {}", e.body_text()))
    };
    let mut mp = mp.map_err(|e| {
        ApiError::bad_request(format!(
            "upload the skill as multipart/form-data (files[] and display_name): {}",
            e.body_text()
        ))
    })?;
    let (mut files, mut display) = (Vec::new(), None);
    while let Some(field) = mp.next_field().await.map_err(unreadable)? {
        match field.name().unwrap_or_default() {
            "files" | "files[]" => {
                let path = field
                    .file_name()
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "each file needs a file name: its path, `<directory>/<file>`",
                        )
                        .param("files")
                    })?;
                let content: Bytes = field.bytes().await.map_err(unreadable)?;
                files.push(pb::SkillFile {
                    path,
                    content: content.to_vec(),
                });
            }
            "display_name" | "display_title" => {
                let text = field.text().await.map_err(unreadable)?;
                if text.contains('\0') {
                    return Err(
                        ApiError::bad_request("display_name holds U+0000").param("display_name")
                    );
                }
                display = Some(text);
            }
            // LiteLLM's `custom_llm_provider` and the like: not ours to read.
            _ => {}
        }
    }
    Ok((files, display))
}

fn page_of(next: String) -> (bool, Option<String>) {
    let next = Some(next).filter(|n| !n.is_empty());
    (next.is_some(), next)
}

/// Create a skill from its files.
#[utoipa::path(post, path = "/v1/skills", tag = "skills",
    request_body(content = SkillUpload, content_type = "multipart/form-data"),
    responses((status = 200, description = "The skill", body = Skill),
              (status = 413, description = "The upload is larger than 9 MiB", body = crate::error::ErrorBody)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Skill>> {
    let (files, display_name) = upload(mp).await?;
    let info = state
        .cp
        .clone()
        .create_skill(pb::CreateSkillRequest {
            actor: Some(caller.actor),
            skill_id: String::new(),
            display_name,
            files,
        })
        .await?
        .into_inner();
    Ok(Json(info.into()))
}

/// List skills, newest first.
#[utoipa::path(get, path = "/v1/skills", tag = "skills", params(ListQuery),
    responses((status = 200, description = "A page of skills", body = SkillList)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer", "team_admin"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<SkillList>> {
    let limit = count_param("limit", q.limit, 20, 1000)?;
    if q.source.as_deref() == Some("anthropic") {
        return Ok(Json(SkillList {
            data: Vec::new(),
            has_more: false,
            next_page: None,
        }));
    }
    let r = state
        .cp
        .clone()
        .list_skills(pb::ListSkillsRequest {
            limit,
            page: q.page.unwrap_or_default(),
            skill_id: String::new(),
        })
        .await?
        .into_inner();
    let (has_more, next_page) = page_of(r.next_page);
    Ok(Json(SkillList {
        data: r.skills.into_iter().map(Into::into).collect(),
        has_more,
        next_page,
    }))
}

/// One skill, with its copies on Anthropic deployments.
#[utoipa::path(get, path = "/v1/skills/{skill_id}", tag = "skills",
    params(("skill_id" = String, Path, description = "The skill's id")),
    responses((status = 200, description = "The skill", body = Skill)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer", "team_admin"])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(skill_id): Path<String>,
) -> ApiResult<Json<Skill>> {
    let info = state
        .cp
        .clone()
        .get_skill(pb::SkillRef {
            actor: None,
            skill_id,
            version: String::new(),
        })
        .await?
        .into_inner();
    Ok(Json(info.into()))
}

/// Delete a skill and every version (their copies at the providers are removed too).
#[utoipa::path(delete, path = "/v1/skills/{skill_id}", tag = "skills",
    params(("skill_id" = String, Path, description = "The skill's id")),
    responses((status = 200, description = "Deleted", body = Deleted)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(skill_id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    state
        .cp
        .clone()
        .delete_skill(pb::SkillRef {
            actor: Some(caller.actor),
            skill_id: skill_id.clone(),
            version: String::new(),
        })
        .await?;
    Ok(Json(Deleted {
        id: skill_id,
        kind: "skill_deleted".into(),
    }))
}

/// Add a version: its SKILL.md names the skill as the first version's did.
#[utoipa::path(post, path = "/v1/skills/{skill_id}/versions", tag = "skills",
    params(("skill_id" = String, Path, description = "The skill's id")),
    request_body(content = SkillUpload, content_type = "multipart/form-data"),
    responses((status = 200, description = "The version", body = SkillVersion),
              (status = 413, description = "The upload is larger than 9 MiB", body = crate::error::ErrorBody)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn create_version(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(skill_id): Path<String>,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<SkillVersion>> {
    let (files, _) = upload(mp).await?;
    let v = state
        .cp
        .clone()
        .create_skill_version(pb::CreateSkillRequest {
            actor: Some(caller.actor),
            skill_id,
            display_name: None,
            files,
        })
        .await?
        .into_inner();
    Ok(Json(v.into()))
}

/// A skill's versions, newest first.
#[utoipa::path(get, path = "/v1/skills/{skill_id}/versions", tag = "skills",
    params(("skill_id" = String, Path, description = "The skill's id"), ListQuery),
    responses((status = 200, description = "A page of versions", body = SkillVersionList)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer", "team_admin"])))]
pub async fn list_versions(
    State(state): State<Arc<AppState>>,
    Path(skill_id): Path<String>,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<SkillVersionList>> {
    let limit = count_param("limit", q.limit, 20, 1000)?;
    let r = state
        .cp
        .clone()
        .list_skill_versions(pb::ListSkillsRequest {
            limit,
            page: q.page.unwrap_or_default(),
            skill_id,
        })
        .await?
        .into_inner();
    let (has_more, next_page) = page_of(r.next_page);
    Ok(Json(SkillVersionList {
        data: r.versions.into_iter().map(Into::into).collect(),
        has_more,
        next_page,
    }))
}

fn version_ref(caller: Option<Caller>, skill_id: String, version: String) -> pb::SkillRef {
    pb::SkillRef {
        actor: caller.map(|c| c.actor),
        skill_id,
        version,
    }
}

/// One version (`latest`: the newest).
#[utoipa::path(get, path = "/v1/skills/{skill_id}/versions/{version}", tag = "skills",
    params(("skill_id" = String, Path, description = "The skill's id"),
           ("version" = String, Path, description = "The version, or `latest`")),
    responses((status = 200, description = "The version", body = SkillVersion)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer", "team_admin"])))]
pub async fn get_version(
    State(state): State<Arc<AppState>>,
    Path((skill_id, version)): Path<(String, String)>,
) -> ApiResult<Json<SkillVersion>> {
    let v = state
        .cp
        .clone()
        .get_skill_version(version_ref(None, skill_id, version))
        .await?
        .into_inner();
    Ok(Json(v.into()))
}

/// Delete a version; a skill keeps at least one (delete the skill instead).
#[utoipa::path(delete, path = "/v1/skills/{skill_id}/versions/{version}", tag = "skills",
    params(("skill_id" = String, Path, description = "The skill's id"),
           ("version" = String, Path, description = "The version, or `latest`")),
    responses((status = 200, description = "Deleted", body = Deleted)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete_version(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((skill_id, version)): Path<(String, String)>,
) -> ApiResult<Json<Deleted>> {
    let r = state
        .cp
        .clone()
        .delete_skill_version(version_ref(Some(caller), skill_id, version))
        .await?
        .into_inner();
    Ok(Json(Deleted {
        id: r.deleted.into_iter().next().unwrap_or_default(),
        kind: "skill_version_deleted".into(),
    }))
}

/// A version's files as a zip archive.
#[utoipa::path(get, path = "/v1/skills/{skill_id}/versions/{version}/content", tag = "skills",
    params(("skill_id" = String, Path, description = "The skill's id"),
           ("version" = String, Path, description = "The version, or `latest`")),
    responses((status = 200, description = "The zip archive", content_type = "application/octet-stream", body = Archive)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer", "team_admin"])))]
pub async fn content(
    State(state): State<Arc<AppState>>,
    Path((skill_id, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let c = state
        .cp
        .clone()
        .get_skill_content(version_ref(None, skill_id, version))
        .await?
        .into_inner();
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.zip\"", c.name),
            ),
        ],
        c.zip,
    )
        .into_response())
}
