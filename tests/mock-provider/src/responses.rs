//! OpenAI's Responses API (`POST /v1/responses`, Azure's `/openai/responses`): the reply
//! to the last user input, or a call of the first function tool when the input asks
//! `call the tool`; `stream: true` gives the typed SSE events (`response.created` ...
//! `response.completed`, which carries the usage). `previous_response_id` must name a
//! response this mock gave: it answers 404 otherwise, as OpenAI does.

use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::{self, State};
use crate::openai::{bearer_ok, sse};

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})),
    )
        .into_response()
}

/// The text of the last user input.
fn last_user_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|i| i.get("role").and_then(Value::as_str) == Some("user"))
            .map(|i| match i.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                _ => String::new(),
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("Response with id '{id}' not found."),
        "not_found",
    )
}

/// `GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`, OpenAI's
/// and Azure's (`/openai/responses/...?api-version=`).
pub async fn stored(
    AxumState(state): AxumState<State>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    state.record(&format!("{method} {}", uri), &headers, &Value::Null);
    let azure = path.starts_with("/openai/");
    let authorised = if azure {
        headers.get("api-key").is_some() && uri.query().is_some_and(|q| q.contains("api-version="))
    } else {
        bearer_ok(&headers)
    };
    if !authorised {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing credentials or api-version",
            "invalid_api_key",
        );
    }
    let rest = path
        .strip_prefix("/v1/responses/")
        .or_else(|| path.strip_prefix("/openai/responses/"))
        .unwrap_or_default();
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let Ok(mut stored) = state.stored_responses.lock() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "poisoned",
            "server_error",
        );
    };
    if method == axum::http::Method::DELETE {
        return match stored.remove(id) {
            Some(_) => {
                Json(json!({"id": id, "object": "response", "deleted": true})).into_response()
            }
            None => not_found(id),
        };
    }
    match stored.get(id) {
        Some((_, input)) if items => Json(json!({
            "object": "list", "data": input, "has_more": false,
            "first_id": input.first().and_then(|i| i.get("id")),
            "last_id": input.last().and_then(|i| i.get("id")),
        }))
        .into_response(),
        Some((response, _)) => Json(response.clone()).into_response(),
        None => not_found(id),
    }
}

pub async fn openai(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record("/v1/responses", &headers, &body);
    if !bearer_ok(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_api_key",
        );
    }
    respond(&state, body).await
}

pub async fn azure(
    AxumState(state): AxumState<State>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let version = query.get("api-version").cloned().unwrap_or_default();
    state.record(
        &format!("/openai/responses?api-version={version}"),
        &headers,
        &body,
    );
    if headers.get("api-key").is_none() {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing api-key header",
            "invalid_api_key",
        );
    }
    if version.is_empty() {
        return error(StatusCode::NOT_FOUND, "api-version is required", "404");
    }
    respond(&state, body).await
}

async fn respond(state: &State, body: Value) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(input) = body.get("input").filter(|i| i.is_string() || i.is_array()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "input is required",
            "missing_required_parameter",
        );
    };
    if let Some(prev) = body.get("previous_response_id").and_then(Value::as_str) {
        if !prev.starts_with("resp_mock_") {
            return error(
                StatusCode::NOT_FOUND,
                &format!("Previous response with id '{prev}' not found."),
                "previous_response_not_found",
            );
        }
    }
    let user = last_user_text(input);
    let prompt = common::prompt_tokens(
        user.len()
            + body
                .get("instructions")
                .and_then(Value::as_str)
                .map_or(0, str::len),
    );
    let (fault, stream_fault) = state.inject(&model, prompt).await;
    if let Some(e) = fault {
        return crate::openai::injected(e);
    }
    let tool = body
        .get("tools")
        .and_then(|t| t.get(0))
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|_| user.contains("call the tool"))
        .map(str::to_owned);
    let n = state.next_response();
    let id = format!("resp_mock_{n}");
    let text = common::reply_to(&user);
    let args = r#"{"location":"Paris"}"#;
    let output_tokens = if tool.is_some() {
        5
    } else {
        common::words(&text)
    };
    let usage = json!({
        "input_tokens": prompt, "output_tokens": output_tokens, "total_tokens": prompt + output_tokens,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
    });
    let item = match &tool {
        Some(name) => {
            json!({"type": "function_call", "id": format!("fc_mock_{n}"), "call_id": format!("call_mock_{n}"),
                             "name": name, "arguments": args, "status": "completed"})
        }
        None => {
            json!({"type": "message", "id": format!("msg_mock_{n}"), "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": id, "object": "response", "created_at": 1_700_000_000u64, "status": status,
            "model": model, "output": output, "usage": usage, "parallel_tool_calls": true,
            "tool_choice": body.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "tools": body.get("tools").cloned().unwrap_or(json!([])),
            "previous_response_id": body.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "error": null, "incomplete_details": null, "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
            "metadata": {}, "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}}, "truncation": "disabled",
        })
    };
    let items: Vec<Value> = match input {
        Value::String(s) => vec![
            json!({"id": format!("msg_in_{n}"), "type": "message", "role": "user",
                                         "content": [{"type": "input_text", "text": s}]}),
        ],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    };
    if body.get("store").and_then(Value::as_bool) != Some(false) {
        if let Ok(mut stored) = state.stored_responses.lock() {
            stored.insert(
                id.clone(),
                (response("completed", json!([item]), usage.clone()), items),
            );
        }
    }
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return Json(response("completed", json!([item]), usage)).into_response();
    }
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut push = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        events.push(format!("event: {kind}\ndata: {data}\n\n"));
    };
    push(
        "response.created",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    push(
        "response.in_progress",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    match &tool {
        Some(_) => {
            added["arguments"] = json!("");
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            );
            let (a, b) = args.split_at(args.len() / 2);
            for part in [a, b] {
                push(
                    "response.function_call_arguments.delta",
                    json!({"output_index": 0, "item_id": item["id"], "delta": part}),
                );
            }
            push(
                "response.function_call_arguments.done",
                json!({"output_index": 0, "item_id": item["id"], "arguments": args}),
            );
        }
        None => {
            added["content"] = json!([]);
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            );
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            push(
                "response.content_part.added",
                json!({"output_index": 0, "item_id": item["id"], "content_index": 0, "part": part}),
            );
            for piece in text.split_inclusive(' ') {
                push(
                    "response.output_text.delta",
                    json!({"output_index": 0, "item_id": item["id"], "content_index": 0, "delta": piece, "logprobs": []}),
                );
            }
            push(
                "response.output_text.done",
                json!({"output_index": 0, "item_id": item["id"], "content_index": 0, "text": text, "logprobs": []}),
            );
            push(
                "response.content_part.done",
                json!({"output_index": 0, "item_id": item["id"], "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []}}),
            );
        }
    }
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    push(
        "response.completed",
        json!({"response": response("completed", json!([item]), usage)}),
    );
    sse(events, stream_fault)
}
