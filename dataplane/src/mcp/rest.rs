//! LiteLLM's REST face of the MCP gateway: `GET /mcp-rest/tools/list` (every server's
//! tools, `<server>-<tool>` names; `?server_name=` narrows to one) and
//! `POST /mcp-rest/tools/call` (`{"name": "<server>-<tool>", "arguments": {...}}`).
//! Same servers, filters and grants as `/mcp`; errors in OpenAI's shape.

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::{json, Value};

use super::jsonrpc::{RpcError, INVALID_PARAMS};
use super::{call_tool, granted, list_tools, Access, Client, Scope};
use crate::context::RequestCtx;
use crate::error::{ApiError, ErrorKind};
use crate::respond;
use crate::state::{App, LiveState};

/// A JSON-RPC error as a REST one: unknown tools and bad arguments are the caller's, the
/// rest the server's.
fn rest_error(e: RpcError) -> ApiError {
    if e.refused || e.status == 403 {
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
    let wanted = session
        .req_header()
        .uri
        .query()
        .and_then(|q| url_query(q, "server_name"));
    let scope = match wanted {
        None => Scope::All(live.mcp.granted(&access)),
        Some(name) => {
            let s = live
                .mcp
                .get(&name)
                .ok_or_else(|| ApiError::not_found(format!("no MCP server named `{name}`")))?;
            Scope::All(vec![granted(&access, s).map_err(rest_error)?])
        }
    };
    let client = Client::new(app, live);
    let tools = list_tools(&client, &scope, &access)
        .await
        .map_err(rest_error)?;
    let body = Bytes::from(json!({"tools": tools}).to_string());
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
    let client = Client::new(app, live);
    let result = call_tool(app, &client, &scope, &access, ctx, &params)
        .await
        .map_err(rest_error)?;
    respond::json(session, ctx, &[], Bytes::from(result.to_string()))
        .await
        .map_err(|e| ApiError::internal(format!("writing the result: {e}")))
}

/// The value of `name` in a query string, percent-decoded.
fn url_query(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
