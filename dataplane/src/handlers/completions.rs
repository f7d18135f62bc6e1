//! `POST /v1/completions`: OpenAI's legacy text completions, through the same keys,
//! access, limits, budgets, routing, retries, fallbacks, usage and cost as chat.
//! Deployments that answer `/completions` themselves (OpenAI's completion models,
//! `text-completion-openai/`, `model_info.mode: completion`) get the request as it is;
//! every other deployment gets it as a chat request with the prompt as its one user
//! message, and its answer comes back as a `text_completion` (streams included), as
//! LiteLLM does.

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::{json, Map, Value};

use super::attempt::{self, Reply};
use super::request::RawObject;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::providers::Operation;
use crate::respond;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::{chat_to_completions, stream};

const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Completion parameters chat has no counterpart for, and the value each has when it
/// asks for nothing (absent and `null` ask for nothing too).
const COMPLETION_ONLY: &[(&str, &str)] = &[
    ("echo", "false"),
    ("suffix", "\"\""),
    ("best_of", "1"),
    ("logprobs", "0"),
];

pub async fn create(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<(), ApiError> {
    let super::Incoming {
        mut req,
        model,
        tags,
    } = super::incoming(
        live,
        ctx,
        &body,
        None,
        Operation::Completions { stream: false },
    )?;
    let prompt = prompt(&req)?;
    let stream = req.flag("stream")?;
    // LiteLLM's per-request switch; never sent upstream.
    let drop_params = req.flag("drop_params")?;
    req.remove("drop_params");
    let client_wants_usage = req
        .value("stream_options")
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        == Some(true);
    if stream {
        // Always ask for usage, so every stream is accounted for; the converter drops
        // the usage chunk again when the client did not ask for it.
        let mut opts = match req.value("stream_options") {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        opts.insert("include_usage".into(), Value::Bool(true));
        req.set("stream_options", &opts)?;
    }
    let (mut plan, first) = attempt::plan(
        app,
        live,
        ctx,
        attempt::Request {
            model: &model,
            body_len: body.len(),
            max_tokens: req.value("max_tokens").and_then(|v| v.as_u64()),
            stream,
            tags,
            query: None,
            pinned: None,
        },
    )
    .await?;
    let as_chat = as_chat(&req, prompt, drop_params);
    let op = Operation::Completions { stream };
    let served = attempt::serve(app, ctx, &mut plan, first, op, MAX_RESPONSE_BYTES, |d| {
        upstream_body(&req, &as_chat, d, drop_params)
    })
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let mut headers = response_headers(ctx, &d);
    match served.reply {
        Reply::Full(out) => {
            ctx.upstream_latency = Some(sent.elapsed());
            let out = if d.text_completions {
                super::read_answer(ctx, &out);
                out
            } else {
                let (chat, usage) = super::chat::openai_answer(d.format, &out, &model)?;
                ctx.usage = usage;
                let out = crate::json::bytes(&chat_to_completions::response(&chat));
                if let Some(a) = &mut ctx.attempt_span {
                    a.read_body(&out);
                }
                out
            };
            headers.extend(super::cost_header(ctx));
            if let Err(e) = respond::json(session, ctx, &headers, out).await {
                tracing::debug!(error = %e, "client went away");
            }
            Ok(())
        }
        Reply::Stream { mut resp, first } => {
            let conv = if d.text_completions {
                stream::converter(
                    d.format,
                    ClientApi::OpenAi,
                    client_wants_usage,
                    &model,
                    d.prices,
                )
            } else {
                stream::completions_through_chat(d.format, client_wants_usage, &model, d.prices)
            };
            super::streaming::pump(
                session,
                ctx,
                super::streaming::Stream::of(&mut resp, first, sent, &d, ClientApi::OpenAi, &model),
                conv,
                &headers,
                None,
            )
            .await
        }
    }
}

/// The prompt's text when it is one string (the only prompt chat can take); `None` for a
/// list of prompts or of tokens, which only deployments with completions of their own
/// take. Refuses a missing or malformed prompt.
fn prompt(req: &RawObject) -> Result<Option<String>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "`prompt` must be a string, a non-empty list of strings, or a list of token ids",
        )
        .with_param("prompt")
    };
    match req.value("prompt") {
        None => Err(ApiError::missing_field("prompt")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Array(items)) if items.is_empty() => Err(bad()),
        Some(Value::Array(items)) => {
            let strings = items.iter().all(Value::is_string);
            let tokens = items.iter().all(Value::is_u64)
                || items.iter().all(|i| {
                    i.as_array()
                        .is_some_and(|t| !t.is_empty() && t.iter().all(Value::is_u64))
                });
            match (strings, tokens, items.as_slice()) {
                (true, _, [Value::String(one)]) => Ok(Some(one.clone())),
                (true, _, _) | (_, true, _) => Ok(None),
                _ => Err(bad()),
            }
        }
        Some(_) => Err(bad()),
    }
}

/// The request as chat: the prompt as the one user message, the completion-only
/// parameters left out (a 400 for one that asks for something, unless `drop_params`).
fn as_chat(
    req: &RawObject,
    prompt: Option<String>,
    drop_params: bool,
) -> Result<RawObject, ApiError> {
    let Some(prompt) = prompt else {
        return Err(ApiError::bad_request(
            "this model group answers completions through chat, which takes one prompt string; \
             send `prompt` as a string",
        )
        .with_param("prompt"));
    };
    let mut chat = req.clone();
    chat.remove("prompt");
    for (field, inert) in COMPLETION_ONLY {
        let asked = chat
            .remove(field)
            .is_some_and(|v| v.get() != "null" && v.get() != *inert);
        if asked && !drop_params {
            return Err(ApiError::bad_request(format!(
                "`{field}` is not supported where completions go through chat; leave it out, \
                 or set `drop_params: true` to have it ignored"
            ))
            .with_param(field)
            .with_code("unsupported_params"));
        }
    }
    chat.set("messages", &json!([{"role": "user", "content": prompt}]))?;
    Ok(chat)
}

/// The body for deployment `d`: the client's with the model renamed where `d` answers
/// completions itself, else the chat request in `d`'s format.
fn upstream_body(
    req: &RawObject,
    as_chat: &Result<RawObject, ApiError>,
    d: &CompiledDeployment,
    drop_params: bool,
) -> Result<Bytes, ApiError> {
    if d.text_completions {
        return req.with("model", &d.deployment.upstream_model);
    }
    let chat = as_chat.as_ref().map_err(Clone::clone)?;
    super::chat::upstream_body(chat, ClientApi::OpenAi, d, drop_params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> RawObject {
        RawObject::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn prompts() {
        let p = |b: &str| prompt(&parse(b)).map_err(|e| e.param);
        assert_eq!(p(r#"{"prompt":"hi"}"#), Ok(Some("hi".into())));
        assert_eq!(p(r#"{"prompt":["hi"]}"#), Ok(Some("hi".into())));
        assert_eq!(p(r#"{"prompt":["a","b"]}"#), Ok(None));
        assert_eq!(p(r#"{"prompt":[1,2,3]}"#), Ok(None));
        assert_eq!(p(r#"{"prompt":[[1],[2]]}"#), Ok(None));
        assert_eq!(p(r#"{"prompt":[]}"#), Err(Some("prompt")));
        assert_eq!(p(r#"{"prompt":[1,"a"]}"#), Err(Some("prompt")));
        assert_eq!(p(r#"{"prompt":5}"#), Err(Some("prompt")));
        assert_eq!(p(r#"{"model":"m"}"#), Err(Some("prompt")));
    }

    #[test]
    fn chat_form() {
        let req = parse(r#"{"model":"m","prompt":"hi","echo":false,"best_of":1,"max_tokens":5}"#);
        let chat = as_chat(&req, Some("hi".into()), false).unwrap();
        assert_eq!(
            chat.value("messages"),
            Some(json!([{"role": "user", "content": "hi"}]))
        );
        assert_eq!(chat.value("max_tokens"), Some(json!(5)));
        assert!(chat.raw("prompt").is_none() && chat.raw("echo").is_none());

        let echo = parse(r#"{"model":"m","prompt":"hi","echo":true}"#);
        let e = as_chat(&echo, Some("hi".into()), false).err().unwrap();
        assert_eq!((e.status, e.param), (400, Some("echo")));
        assert!(as_chat(&echo, Some("hi".into()), true).is_ok());
        assert_eq!(
            as_chat(&echo, None, true).err().map(|e| e.param),
            Some(Some("prompt"))
        );
    }
}
