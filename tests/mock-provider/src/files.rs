//! OpenAI and Azure OpenAI files and batches: `POST /v1/files` (multipart; a field the API
//! does not take is refused, as OpenAI refuses it), `GET`/`DELETE /v1/files/{id}`,
//! `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches/{id}` (the first
//! read completes the batch: each JSONL line answered as a chat completion, into an output
//! file), `POST /v1/batches/{id}/cancel` and the listings. Azure's are the same under
//! `/openai/` with `api-version` and `api-key`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::{self, State};
use crate::openai::bearer_ok;

/// Files and batches by id.
#[derive(Default)]
pub struct Store {
    files: BTreeMap<String, (Value, Vec<u8>)>,
    batches: BTreeMap<String, Value>,
    next: u64,
}

pub type Shared = Arc<Mutex<Store>>;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})),
    )
        .into_response()
}

/// OpenAI's bearer key, or Azure's `api-key` with an `api-version`.
fn authorised(uri: &Uri, headers: &HeaderMap) -> bool {
    if uri.path().starts_with("/openai/") {
        headers.get("api-key").is_some() && uri.query().is_some_and(|q| q.contains("api-version="))
    } else {
        bearer_ok(headers)
    }
}

/// The path after `/v1` or `/openai`.
fn rest(uri: &Uri) -> &str {
    let p = uri.path();
    p.strip_prefix("/v1")
        .or_else(|| p.strip_prefix("/openai"))
        .unwrap_or(p)
}

pub async fn files(
    AxumState(state): AxumState<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record(&format!("{method} {uri}"), &headers, &Value::Null);
    if !authorised(&uri, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided");
    }
    let Ok(mut store) = state.files.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
    };
    let path = rest(&uri).to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["files"]) => {
            let (fields, file) = match crate::media::parse(&headers, &body) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let mut recorded = json!({"file_bytes": file.as_ref().map_or(0, Vec::len)});
            for (k, v) in &fields {
                recorded[k] = json!(v);
            }
            state.record(&format!("POST {uri}"), &headers, &recorded);
            if let Some((k, _)) = fields.iter().find(|(k, _)| k != "purpose") {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Unrecognized request argument supplied: {k}"),
                );
            }
            let Some(purpose) = fields
                .iter()
                .find(|(k, _)| k == "purpose")
                .map(|(_, v)| v.clone())
            else {
                return error(StatusCode::BAD_REQUEST, "purpose is required");
            };
            let Some(file) = file else {
                return error(StatusCode::BAD_REQUEST, "file is required");
            };
            store.next += 1;
            let id = format!("file-mock-{}", store.next);
            let object = json!({"id": id, "object": "file", "bytes": file.len(), "created_at": 1_700_000_000u64,
                                "filename": "upload.jsonl", "purpose": purpose, "status": "processed"});
            store.files.insert(id, (object.clone(), file));
            Json(object).into_response()
        }
        ("GET", ["files"]) => {
            let data: Vec<Value> = store.files.values().map(|(o, _)| o.clone()).collect();
            Json(json!({"object": "list", "data": data, "has_more": false})).into_response()
        }
        ("GET", ["files", id]) => match store.files.get(*id) {
            Some((o, _)) => Json(o.clone()).into_response(),
            None => error(StatusCode::NOT_FOUND, &format!("No such File object: {id}")),
        },
        ("DELETE", ["files", id]) => match store.files.remove(*id) {
            Some(_) => Json(json!({"id": id, "object": "file", "deleted": true})).into_response(),
            None => error(StatusCode::NOT_FOUND, &format!("No such File object: {id}")),
        },
        ("GET", ["files", id, "content"]) => match store.files.get(*id) {
            Some((_, bytes)) => (
                StatusCode::OK,
                [("content-type", "application/octet-stream")],
                bytes.clone(),
            )
                .into_response(),
            None => error(StatusCode::NOT_FOUND, &format!("No such File object: {id}")),
        },
        ("POST", ["batches"]) => {
            let Ok(req) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "body must be JSON");
            };
            state.record(&format!("POST {uri}"), &headers, &req);
            let input = req
                .get("input_file_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some((_, bytes)) = store.files.get(input) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid input_file_id: {input}"),
                );
            };
            let total = bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            store.next += 1;
            let id = format!("batch_mock_{}", store.next);
            let batch = json!({
                "id": id, "object": "batch", "endpoint": req["endpoint"], "input_file_id": input,
                "completion_window": req["completion_window"], "status": "validating",
                "output_file_id": null, "error_file_id": null, "created_at": 1_700_000_000u64,
                "metadata": req.get("metadata").cloned().unwrap_or(Value::Null),
                "request_counts": {"total": total, "completed": 0, "failed": 0},
            });
            store.batches.insert(id, batch.clone());
            Json(batch).into_response()
        }
        ("GET", ["batches"]) => {
            let data: Vec<Value> = store.batches.values().cloned().collect();
            Json(json!({"object": "list", "data": data, "has_more": false})).into_response()
        }
        ("GET", ["batches", id]) => {
            let Some(batch) = store.batches.get(*id).cloned() else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("No such Batch object: {id}"),
                );
            };
            if batch["status"] != "validating" {
                return Json(batch).into_response();
            }
            let input = batch["input_file_id"].as_str().unwrap_or("").to_owned();
            let lines = store
                .files
                .get(&input)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            let output: Vec<String> = lines
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .enumerate()
                .map(|(i, line)| answer(i, line))
                .collect();
            store.next += 1;
            let out_id = format!("file-mock-{}", store.next);
            let out_bytes = (output.join("\n") + "\n").into_bytes();
            let object = json!({"id": out_id, "object": "file", "bytes": out_bytes.len(), "created_at": 1_700_000_001u64,
                                "filename": "batch_output.jsonl", "purpose": "batch_output", "status": "processed"});
            store.files.insert(out_id.clone(), (object, out_bytes));
            let mut done = batch;
            done["status"] = json!("completed");
            done["output_file_id"] = json!(out_id);
            done["request_counts"]["completed"] = json!(output.len());
            store.batches.insert((*id).to_owned(), done.clone());
            Json(done).into_response()
        }
        ("POST", ["batches", id, "cancel"]) => match store.batches.get_mut(*id) {
            Some(batch) => {
                batch["status"] = json!("cancelled");
                Json(batch.clone()).into_response()
            }
            None => error(
                StatusCode::NOT_FOUND,
                &format!("No such Batch object: {id}"),
            ),
        },
        _ => error(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// One batch line's answer: a chat completion replying to its last user message.
fn answer(i: usize, line: &[u8]) -> String {
    let req: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    let body = &req["body"];
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| common::text_of(&m["content"]))
        .unwrap_or_default();
    let text = common::reply_to(&user);
    let prompt = common::prompt_tokens(user.len());
    let completion = common::words(&text);
    json!({
        "id": format!("batch_req_{i}"), "custom_id": req["custom_id"],
        "response": {"status_code": 200, "request_id": format!("req_{i}"), "body": {
            "id": format!("chatcmpl-batch-{i}"), "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }},
        "error": null,
    })
    .to_string()
}
