//! JSON-RPC 2.0 as MCP and A2A use it: one message per HTTP request, errors with their codes.

use bytes::Bytes;
use serde_json::{json, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: a routing header is missing or disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the requested protocol version is not served.
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// A JSON-RPC error, with the HTTP status it is answered with.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub status: u16,
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    /// The REST face's error where the code does not give it: a grant's refusal (403), a
    /// spent budget (429).
    pub rest: Option<Box<crate::error::ApiError>>,
}

impl RpcError {
    pub fn new(status: u16, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
            rest: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Unknown or refused tools, bad arguments: the request is answered, not failed.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(200, INVALID_PARAMS, message)
    }

    /// A tool call the caller's grants refuse: answered like an unknown tool.
    pub fn refused(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            rest: Some(Box::new(crate::error::ApiError::forbidden(message.clone()))),
            ..Self::invalid_params(message)
        }
    }

    /// A tool call the caller's budget (or its team's, user's or organization's) cannot
    /// pay for.
    pub fn over_budget(e: crate::error::ApiError) -> Self {
        Self {
            message: e.message.clone(),
            rest: Some(Box::new(e)),
            ..Self::new(200, INVALID_REQUEST, "")
        }
    }

    /// A request that lacks something the server needs from the caller (a header its
    /// env names): the caller's to fix.
    pub fn incomplete(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            rest: Some(Box::new(crate::error::ApiError::bad_request(
                message.clone(),
            ))),
            ..Self::new(200, INVALID_REQUEST, message)
        }
    }

    /// The body of the error response to the request `id` (`null` when unknown).
    pub fn body(&self, id: &Value) -> Bytes {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            error["data"] = d.clone();
        }
        crate::json::bytes(&json!({"jsonrpc": "2.0", "id": id, "error": error}))
    }
}

/// One incoming message.
#[derive(Debug)]
pub struct Message {
    /// `None`: a notification (no answer but 202).
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
}

impl Message {
    /// Parses a request body: one JSON-RPC request or notification (batches were removed
    /// from MCP in 2025-06-18, and A2A has none). Responses from the client (to server requests the gateway
    /// never makes) are accepted as notifications.
    pub fn parse(body: &[u8]) -> Result<Self, RpcError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| RpcError::new(400, PARSE_ERROR, format!("Parse error: {e}")))?;
        let Value::Object(mut o) = v else {
            return Err(RpcError::new(
                400,
                INVALID_REQUEST,
                "Invalid Request: one JSON-RPC object per request (batches are not served)",
            ));
        };
        if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(RpcError::new(
                400,
                INVALID_REQUEST,
                "Invalid Request: `jsonrpc` must be \"2.0\"",
            ));
        }
        let id = o.remove("id");
        if let Some(id) = &id {
            if !(id.is_string() || id.is_i64() || id.is_u64()) {
                return Err(RpcError::new(
                    400,
                    INVALID_REQUEST,
                    "Invalid Request: `id` must be a string or an integer",
                ));
            }
        }
        let method = match o.remove("method") {
            Some(Value::String(m)) => m,
            Some(_) => {
                return Err(RpcError::new(
                    400,
                    INVALID_REQUEST,
                    "Invalid Request: `method` must be a string",
                ))
            }
            // A response or error from the client: nothing to answer.
            None if o.contains_key("result") || o.contains_key("error") => {
                return Ok(Self {
                    id: None,
                    method: String::new(),
                    params: Value::Null,
                })
            }
            None => {
                return Err(RpcError::new(
                    400,
                    INVALID_REQUEST,
                    "Invalid Request: `method` is missing",
                ))
            }
        };
        let params = o.remove("params").unwrap_or(Value::Null);
        if !(params.is_object() || params.is_null()) {
            return Err(RpcError::new(
                400,
                INVALID_REQUEST,
                "Invalid Request: `params` must be an object",
            ));
        }
        Ok(Self { id, method, params })
    }
}

/// The body of a successful response.
pub fn result(id: &Value, result: Value) -> Bytes {
    crate::json::bytes(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_malformed_messages() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#).unwrap();
        assert_eq!((m.id, m.method.as_str()), (Some(json!(7)), "tools/list"));
        let n =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(n.id.is_none());
        for (body, code) in [
            (&b"{not json"[..], PARSE_ERROR),
            (
                br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
                INVALID_REQUEST,
            ),
            (br#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
                INVALID_REQUEST,
            ),
        ] {
            let e = Message::parse(body).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (400, code),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn error_bodies_carry_the_id_and_data() {
        let e = RpcError::new(400, UNSUPPORTED_VERSION, "no").with_data(json!({"supported": []}));
        let v: Value = serde_json::from_slice(&e.body(&json!("a"))).unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["error"]["code"], UNSUPPORTED_VERSION);
        assert_eq!(v["error"]["data"]["supported"], json!([]));
    }
}
