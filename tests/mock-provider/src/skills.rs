//! Anthropic's Skills API (`skills-2025-10-02` beta): `POST /v1/skills` and `POST
//! /v1/skills/{id}/versions` (multipart: `files[]` named by their paths under one directory
//! with SKILL.md at its root, and `display_title`), `DELETE /v1/skills/{id}/versions/{v}`,
//! and `DELETE /v1/skills/{id}` (refused while versions remain, as Anthropic refuses it).
//! Messages that load custom skills (`container.skills`) are checked against what was
//! uploaded with the same key ([`check_container`]). `GET /__skills` lists the store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::multipart::Multipart;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::State;

const BETA: &str = "skills-2025-10-02";

/// One uploaded skill.
struct Skill {
    api_key: String,
    display_title: String,
    /// Version → its files' paths.
    versions: BTreeMap<String, Vec<String>>,
}

#[derive(Default)]
pub struct Store {
    skills: BTreeMap<String, Skill>,
    next: u64,
}

pub type Shared = Arc<Mutex<Store>>;

/// An error in Anthropic's shape: status, type, message.
pub struct Refused(StatusCode, &'static str, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let Refused(status, kind, message) = self;
        (
            status,
            Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
        )
            .into_response()
    }
}

fn error(status: StatusCode, kind: &'static str, message: &str) -> Refused {
    Refused(status, kind, message.to_owned())
}

fn api_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn betas(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|b| b.trim().to_owned())
        .collect()
}

/// The key and beta every Skills call needs.
fn admitted(headers: &HeaderMap) -> Result<String, Refused> {
    let key = api_key(headers).ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        )
    })?;
    if !betas(headers).iter().any(|b| b == BETA) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the Skills API needs the anthropic-beta header skills-2025-10-02",
        ));
    }
    Ok(key)
}

/// An upload as received: the key it came with, its files' paths, its `display_title` and
/// the SKILL.md name.
struct Upload {
    key: String,
    paths: Vec<String>,
    title: Option<String>,
    name: String,
}

/// The key, beta and files of an upload, checked as Anthropic checks them.
async fn received(headers: &HeaderMap, mp: Multipart) -> Result<Upload, Refused> {
    let key = admitted(headers)?;
    let (paths, title, name) = upload(mp).await?;
    Ok(Upload {
        key,
        paths,
        title,
        name,
    })
}

/// The uploaded files' paths and `display_title`, checked as Anthropic checks them.
async fn upload(mut mp: Multipart) -> Result<(Vec<String>, Option<String>, String), Refused> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    let (mut paths, mut title, mut name) = (Vec::new(), None, None);
    while let Some(field) = mp.next_field().await.map_err(|e| bad(&e.to_string()))? {
        match field.name().unwrap_or_default() {
            "files[]" | "files" => {
                let path = field.file_name().unwrap_or_default().to_owned();
                let content = field.bytes().await.map_err(|e| bad(&e.to_string()))?;
                if path.ends_with("/SKILL.md") && path.matches('/').count() == 1 {
                    let text = String::from_utf8_lossy(&content);
                    name = text
                        .lines()
                        .find_map(|l| l.strip_prefix("name:"))
                        .map(|n| n.trim().to_owned());
                }
                paths.push(path);
            }
            "display_title" => title = Some(field.text().await.map_err(|e| bad(&e.to_string()))?),
            other => return Err(bad(&format!("unexpected field `{other}`"))),
        }
    }
    let dirs: std::collections::BTreeSet<&str> =
        paths.iter().filter_map(|p| p.split('/').next()).collect();
    if paths.is_empty() || dirs.len() != 1 || paths.iter().any(|p| !p.contains('/')) {
        return Err(bad("all files must be in the same top-level directory"));
    }
    let name = name.ok_or_else(|| bad("SKILL.md with a name is required"))?;
    Ok((paths, title, name))
}

fn micros() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
        .to_string()
}

/// `POST /v1/skills`.
pub async fn create(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    mp: Multipart,
) -> Response {
    let Upload {
        key,
        paths,
        title,
        name,
    } = match received(&headers, mp).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let Ok(mut store) = state.skills.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "poisoned").into_response();
    };
    store.next += 1;
    let id = format!("skill_mock_{:04}", store.next);
    let version = micros();
    let display_title = title.unwrap_or(name);
    store.skills.insert(
        id.clone(),
        Skill {
            api_key: key,
            display_title: display_title.clone(),
            versions: BTreeMap::from([(version.clone(), paths)]),
        },
    );
    Json(json!({
        "id": id, "type": "skill", "display_title": display_title, "source": "custom",
        "latest_version": version, "created_at": "2026-12-04T00:00:00Z",
        "updated_at": "2026-12-04T00:00:00Z",
    }))
    .into_response()
}

/// `POST /v1/skills/{id}/versions`.
pub async fn create_version(
    AxumState(state): AxumState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    mp: Multipart,
) -> Response {
    let Upload {
        key, paths, name, ..
    } = match received(&headers, mp).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let Ok(mut store) = state.skills.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "poisoned").into_response();
    };
    let Some(skill) = store.skills.get_mut(&id).filter(|s| s.api_key == key) else {
        return error(StatusCode::NOT_FOUND, "not_found_error", "skill not found").into_response();
    };
    let version = micros();
    skill.versions.insert(version.clone(), paths);
    Json(json!({
        "type": "skill_version", "id": version, "version": version, "skill_id": id,
        "name": name, "description": "", "directory": name,
        "created_at": "2026-12-04T00:00:00Z",
    }))
    .into_response()
}

/// `DELETE /v1/skills/{id}/versions/{version}`.
pub async fn delete_version(
    AxumState(state): AxumState<State>,
    Path((id, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = match admitted(&headers) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let Ok(mut store) = state.skills.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "poisoned").into_response();
    };
    let removed = store
        .skills
        .get_mut(&id)
        .filter(|s| s.api_key == key)
        .and_then(|s| s.versions.remove(&version));
    match removed {
        Some(_) => Json(json!({"id": version, "type": "skill_version_deleted"})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "version not found",
        )
        .into_response(),
    }
}

/// `DELETE /v1/skills/{id}`: only once every version is gone.
pub async fn delete(
    AxumState(state): AxumState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = match admitted(&headers) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let Ok(mut store) = state.skills.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "poisoned").into_response();
    };
    match store.skills.get(&id).filter(|s| s.api_key == key) {
        None => error(StatusCode::NOT_FOUND, "not_found_error", "skill not found").into_response(),
        Some(s) if !s.versions.is_empty() => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "delete the skill's versions first",
        )
        .into_response(),
        Some(_) => {
            store.skills.remove(&id);
            Json(json!({"id": id, "type": "skill_deleted"})).into_response()
        }
    }
}

/// `GET /__skills`: every skill with its versions' files and the key it was made with.
pub async fn list(AxumState(state): AxumState<State>) -> Json<Value> {
    let store = state.skills.lock().map(|s| {
        s.skills
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    json!({"api_key": s.api_key, "display_title": s.display_title,
                           "versions": s.versions}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
    });
    Json(Value::Object(store.unwrap_or_default()))
}

/// A Messages request's `container.skills`: custom skills must be ones uploaded with this
/// key (and the version one of theirs), and the Skills and code-execution betas must be on.
pub fn check_container(state: &State, headers: &HeaderMap, body: &Value) -> Result<(), Refused> {
    let Some(skills) = body.pointer("/container/skills").and_then(Value::as_array) else {
        return Ok(());
    };
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    let on = betas(headers);
    for beta in [BETA, "code-execution-2025-08-25"] {
        if !on.iter().any(|b| b == beta) {
            return Err(bad(&format!("container.skills needs the {beta} beta")));
        }
    }
    let key = api_key(headers).unwrap_or_default();
    let Ok(store) = state.skills.lock() else {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "poisoned",
        ));
    };
    for s in skills {
        if s.get("type").and_then(Value::as_str) != Some("custom") {
            continue;
        }
        let id = s.get("skill_id").and_then(Value::as_str).unwrap_or("");
        let version = s.get("version").and_then(Value::as_str).unwrap_or("latest");
        let Some(skill) = store.skills.get(id).filter(|k| k.api_key == key) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                &format!("skill {id} not found"),
            ));
        };
        if version != "latest" && !skill.versions.contains_key(version) {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                &format!("skill {id} has no version {version}"),
            ));
        }
    }
    Ok(())
}
