//! LiteLLM's REST face of the MCP gateway: `GET /mcp-rest/tools/list` and
//! `GET /v1/mcp/tools` (every server's tools, `<server>-<tool>` names; `?server_name=` or
//! `?server_id=` narrows to one), `POST /mcp-rest/tools/call` (`{"name":
//! "<server>-<tool>", "arguments": {...}}`) and `GET /v1/mcp/server/health` (each server
//! listed live). Same servers, filters and grants as `/mcp`; errors in OpenAI's shape.

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::{json, Value};

use super::{call_tool, client_for, granted, list_tools, Access, Scope};
use crate::context::RequestCtx;
use crate::error::{ApiError, ErrorKind};
use crate::jsonrpc::{RpcError, INVALID_PARAMS};
use crate::respond;
use crate::state::{App, LiveState};

/// A JSON-RPC error as a REST one: unknown tools and bad arguments are the caller's, the
/// rest the server's.
fn rest_error(e: RpcError) -> ApiError {
    if let Some(e) = e.rest {
        *e
    } else if e.status == 403 {
        ApiError::forbidden(e.message)
    } else if e.code == INVALID_PARAMS {
        ApiError::bad_request(e.message)
    } else {
        ApiError::upstream(502, ErrorKind::Upstream, e.message)
    }
}

pub async fn list(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    let access = Access::of(live, ctx.key.as_deref());
    let query = session.req_header().uri.query();
    let wanted =
        query.and_then(|q| url_query(q, "server_name").or_else(|| url_query(q, "server_id")));
    let scope = match wanted {
        None => Scope::All(live.mcp.granted(&access)),
        Some(name) => {
            let s = live.mcp.get(&name).map_err(ApiError::not_found)?;
            Scope::All(vec![granted(&access, s).map_err(rest_error)?])
        }
    };
    let client = client_for(app, live, session.req_header()).map_err(ApiError::bad_request)?;
    let tools = list_tools(&client, &scope, &access)
        .await
        .map_err(rest_error)?;
    let body = crate::json::bytes(&json!({"tools": tools}));
    respond::json(session, ctx, &[], body)
        .await
        .map_err(|e| ApiError::internal(format!("writing the tools: {e}")))
}

pub async fn call(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<(), ApiError> {
    let access = Access::of(live, ctx.key.as_deref());
    let params: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !params.is_object() {
        return Err(ApiError::bad_request(
            "the body is {\"name\": \"<server>-<tool>\", \"arguments\": {...}}",
        ));
    }
    let scope = Scope::All(live.mcp.granted(&access));
    let client = client_for(app, live, session.req_header()).map_err(ApiError::bad_request)?;
    let (result, charge) = call_tool(app, live, &client, (&scope, &access), ctx, &params)
        .await
        .map_err(rest_error)?;
    charge.bill(ctx);
    respond::json(session, ctx, &[], crate::json::bytes(&result))
        .await
        .map_err(|e| ApiError::internal(format!("writing the result: {e}")))
}

/// Lists each server the caller may use (`?server_ids=a&server_ids=b`: these) with a
/// short deadline: `healthy` with its tool count, or `unhealthy` with the error.
pub async fn health(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
    let access = Access::of(live, ctx.key.as_deref());
    let wanted: Vec<String> = session
        .req_header()
        .uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "server_ids" || k == "server_id")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut servers = Vec::new();
    for name in &wanted {
        let s = live.mcp.get(name).map_err(ApiError::not_found)?;
        servers.push(granted(&access, s).map_err(rest_error)?);
    }
    if wanted.is_empty() {
        servers = live.mcp.granted(&access);
    }
    let client = client_for(app, live, session.req_header()).map_err(ApiError::bad_request)?;
    let checks = futures_util::future::join_all(servers.iter().map(|s| {
        let (client, access) = (&client, &access);
        async move {
            let started = std::time::Instant::now();
            let listed = tokio::time::timeout(DEADLINE, client.list_tools(s, DEADLINE)).await;
            let ms = started.elapsed().as_millis() as u64;
            let name = &s.config.name;
            match listed {
                Ok(Ok(tools)) => {
                    let visible = tools
                        .iter()
                        .filter_map(|t| t.get("name").and_then(Value::as_str))
                        .filter(|t| access.tool(s, t))
                        .count();
                    json!({"server_id": name, "server_name": name, "status": "healthy",
                        "tools_count": visible, "response_time_ms": ms, "error": null})
                }
                Ok(Err(e)) => json!({"server_id": name, "server_name": name,
                    "status": "unhealthy", "tools_count": null, "response_time_ms": ms,
                    "error": e.message}),
                Err(_) => json!({"server_id": name, "server_name": name,
                    "status": "unhealthy", "tools_count": null, "response_time_ms": ms,
                    "error": format!("no answer within {}s", DEADLINE.as_secs())}),
            }
        }
    }))
    .await;
    respond::json(session, ctx, &[], crate::json::bytes(&Value::from(checks)))
        .await
        .map_err(|e| ApiError::internal(format!("writing the health: {e}")))
}

/// The value of `name` in a query string, percent-decoded.
fn url_query(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
