//! The admin API's errors: OpenAI-shaped JSON (`{"error": {"message", "type", "param",
//! "code"}}`) with the status that says whose fault it is.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for people.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `conflict_error`, `service_unavailable` or `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// The HTTP status, as a string (as LiteLLM sends it).
    pub code: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            503 => "service_unavailable",
            _ => "api_error",
        }
    }
}

/// Control-plane answers. `UNAUTHENTICATED` means this service's control-plane token is
/// wrong: an outage, not the caller's fault.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let message = s.message().to_owned();
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Aborted => {
                return Self::unavailable(
                    "the control plane could not commit this change now (a conflicting change \
                     ran at the same time); retry",
                )
            }
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            // A service the control plane needs (its database, skill store, Redis): its reason.
            Code::Unavailable if s.metadata().get("routeiq-dependency-unavailable").is_some() => {
                return Self::unavailable(message)
            }
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Unauthenticated => {
                tracing::warn!(code = ?s.code(), detail = %message, "control plane call failed");
                return Self::unavailable(format!(
                    "the control plane is unavailable ({}); retry later",
                    describe(&s)
                ));
            }
            _ => {
                // The detail stays in the log: it can describe stored data.
                tracing::error!(code = ?s.code(), detail = %message, "control plane error");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error in the control plane; see its logs",
                );
            }
        };
        Self::new(status, message)
    }
}

fn describe(s: &tonic::Status) -> &'static str {
    match s.code() {
        tonic::Code::DeadlineExceeded => "no answer in time",
        tonic::Code::Unauthenticated => "it refused this service's token",
        tonic::Code::ResourceExhausted => "it is overloaded",
        _ => "it cannot be reached",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind().to_owned(),
                code: self.status.as_u16().to_string(),
                message: self.message,
                param: self.param,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
