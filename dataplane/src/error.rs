//! Client-facing errors. Each knows its HTTP status, its OpenAI error `type`, and a
//! low-cardinality label for metrics.

use bytes::Bytes;
use serde_json::json;

/// Which API the client speaks: errors take that API's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimit,
    /// A key's `max_budget` is spent (LiteLLM's `budget_exceeded`).
    BudgetExceeded,
    /// The upstream provider failed (bad gateway).
    Upstream,
    /// The upstream provider is unavailable or overloaded.
    Unavailable,
    Timeout,
    Internal,
}

impl ErrorKind {
    /// The `error.type` string (OpenAI's and Anthropic's vocabulary, which overlap).
    pub fn type_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::TooLarge => "request_too_large",
            Self::RateLimit => "rate_limit_error",
            Self::BudgetExceeded => "budget_exceeded",
            Self::Upstream => "api_error",
            Self::Unavailable => "overloaded_error",
            Self::Timeout => "timeout_error",
            Self::Internal => "api_error",
        }
    }
}

/// An error answered to the client as an OpenAI-shaped JSON body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {message}")]
pub struct ApiError {
    pub status: u16,
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<String>,
    /// Seconds the client should wait before retrying (429/503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, ErrorKind::InvalidRequest, message)
    }
    pub fn missing_field(field: &'static str) -> Self {
        Self::bad_request(format!("`{field}` is required")).with_param(field)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(429, ErrorKind::RateLimit, message).with_code("rate_limit_exceeded")
    }
    pub fn budget_exceeded(message: impl Into<String>) -> Self {
        Self::new(429, ErrorKind::BudgetExceeded, message).with_code("budget_exceeded")
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, ErrorKind::Authentication, message).with_code("invalid_api_key")
    }
    pub fn unknown_model(model: &str, available: &[&str]) -> Self {
        let mut list = available.join(", ");
        if list.is_empty() {
            list.push_str("(none configured)");
        }
        Self::new(
            404,
            ErrorKind::NotFound,
            format!("model `{model}` does not exist on this gateway; available models: {list}"),
        )
        .with_param("model")
        .with_code("model_not_found")
    }
    /// 403: `who` (this key, or its team) may not call `model`; names what it may call.
    pub fn model_not_allowed(model: &str, who: &str, allowed: &[String]) -> Self {
        Self::new(
            403,
            ErrorKind::Permission,
            format!(
                "{who} is not allowed to call model `{model}`; allowed: {}",
                allowed.join(", ")
            ),
        )
        .with_param("model")
        .with_code("model_not_allowed")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, ErrorKind::Permission, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, ErrorKind::NotFound, message)
    }
    pub fn not_found_route(method: &str, path: &str) -> Self {
        Self::new(
            404,
            ErrorKind::NotFound,
            format!("no route for {method} {path}"),
        )
    }
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            ErrorKind::InvalidRequest,
            format!("{method} is not allowed on {path}"),
        )
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            ErrorKind::TooLarge,
            format!("request body is larger than the {limit}-byte limit (general_settings.max_request_size_mb)"),
        )
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::bad_request(message).with_code("unsupported")
    }
    pub fn upstream(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(status, kind, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, ErrorKind::Timeout, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, ErrorKind::Internal, message)
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    pub fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }

    /// The error body. Both shapes carry `error.message` and `error.type`; the Anthropic one
    /// adds the top-level `"type": "error"` its SDK looks for.
    pub fn body(&self, api: ClientApi) -> Bytes {
        let error = json!({
            "message": self.message,
            "type": self.kind.type_str(),
            "param": self.param,
            "code": self.code.clone().unwrap_or_else(|| self.status.to_string()),
        });
        let body = match api {
            ClientApi::OpenAi => json!({ "error": error }),
            ClientApi::Anthropic => json!({ "type": "error", "error": error }),
        };
        crate::json::bytes(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = ApiError::unknown_model("gpt-x", &["a", "b"]);
        let v: serde_json::Value = serde_json::from_slice(&e.body(ClientApi::OpenAi)).unwrap();
        assert_eq!(e.status, 404);
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
        let v: serde_json::Value = serde_json::from_slice(&e.body(ClientApi::Anthropic)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
    }
}
