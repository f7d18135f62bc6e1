//! `POST /feedback`: how good one request's answer was, by the request's id (the
//! `x-litellm-call-id` response header), as a score from 0 to 1 or a thumbs up or down.
//! A later score for the same request replaces the earlier one. `/routing_model/report`
//! compares routing-model versions by it. A proxy admin may score any request; every other
//! caller only requests made with its own key (once they are in the spend logs).

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::ToSchema;

use super::Body;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// What a request id may be: 1 to 256 visible ASCII characters (ids are the gateway's).
const CALL_ID_PATTERN: &str = "^[!-~]{1,256}$";

/// Feedback on one answer: `score` or `rating`, not both.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct FeedbackRequest {
    /// The request's id: its `x-litellm-call-id` response header. Also read as
    /// `litellm_call_id` or `request_id`.
    #[serde(alias = "litellm_call_id", alias = "request_id")]
    #[schema(pattern = "^[!-~]{1,256}$")]
    pub call_id: String,
    /// How good the answer was, from 0 (worst) to 1 (best).
    #[schema(minimum = 0, maximum = 1)]
    pub score: Option<f64>,
    /// Thumbs up (`true`, score 1) or down (`false`, score 0).
    pub rating: Option<bool>,
    /// At most 4,096 characters.
    #[schema(max_length = 4096)]
    pub comment: Option<String>,
}

/// The longest comment kept, in characters.
const MAX_COMMENT_CHARS: usize = 4096;

/// The JSON-Schema condition of [`FeedbackRequest`]: exactly one of `score` and `rating`.
pub fn score_or_rating() -> Extensions {
    let mut c = Extensions::default();
    c.insert(
        "oneOf".to_owned(),
        json!([
            {"required": ["score"], "properties": {"score": {"type": "number"}}},
            {"required": ["rating"], "properties": {"rating": {"type": "boolean"}}},
        ]),
    );
    c
}

impl FeedbackRequest {
    /// The score given: `score`, or 1 for a thumbs up and 0 for a thumbs down.
    fn score(&self) -> ApiResult<f64> {
        match (self.score, self.rating) {
            (Some(s), None) if (0.0..=1.0).contains(&s) => Ok(s),
            (Some(s), None) => Err(ApiError::bad_request(format!(
                "`score` must be between 0 and 1, got {s}"
            ))
            .param("score")),
            (None, Some(up)) => Ok(if up { 1.0 } else { 0.0 }),
            (Some(_), Some(_)) => {
                Err(ApiError::bad_request("give `score` or `rating`, not both").param("rating"))
            }
            (None, None) => Err(ApiError::bad_request(
                "give `score` (0 to 1) or `rating` (true: thumbs up, false: down)",
            )
            .param("score")),
        }
    }

    /// The request id, if it is one (see [`CALL_ID_PATTERN`]).
    fn call_id(&self) -> ApiResult<&str> {
        let id = self.call_id.as_str();
        if (1..=256).contains(&id.len()) && id.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
            Ok(id)
        } else {
            Err(ApiError::bad_request(format!(
                "`call_id` must be a request id (the `x-litellm-call-id` header): {CALL_ID_PATTERN}"
            ))
            .param("call_id"))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackResponse {
    /// `ok`.
    pub status: String,
    pub call_id: String,
}

/// Score a request's answer (0 to 1, or a thumbs up or down).
#[utoipa::path(post, path = "/feedback", tag = "feedback",
    request_body = FeedbackRequest,
    responses((status = 200, description = "Recorded", body = FeedbackResponse)),
    security(("api_key" = ["proxy_admin", "internal_user", "team_admin"])))]
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<FeedbackRequest>,
) -> ApiResult<Json<FeedbackResponse>> {
    let call_id = req.call_id()?.to_owned();
    let score = req.score()?;
    if req
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "`comment` may have at most {MAX_COMMENT_CHARS} characters"
        ))
        .param("comment"));
    }
    // Anyone but an admin: only requests made with the caller's own key.
    let key_hash = (!caller.is_admin()).then(|| caller.principal.key_hash.clone());
    state
        .cp
        .clone()
        .record_feedback(pb::RecordFeedbackRequest {
            request_id: call_id.clone(),
            score,
            comment: req.comment,
            key_hash,
        })
        .await?;
    Ok(Json(FeedbackResponse {
        status: "ok".into(),
        call_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: serde_json::Value) -> FeedbackRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_score_or_a_thumb_and_an_id_under_any_of_its_names() {
        let up = read(json!({"litellm_call_id": "abc123", "rating": true}));
        assert_eq!(
            (up.call_id().unwrap(), up.score().unwrap()),
            ("abc123", 1.0)
        );
        let down = read(json!({"request_id": "abc123", "rating": false}));
        assert_eq!(down.score().unwrap(), 0.0);
        assert_eq!(
            read(json!({"call_id": "x", "score": 0.25, "rating": null}))
                .score()
                .unwrap(),
            0.25
        );
        for (body, param) in [
            (json!({"call_id": "x", "score": 1.5}), "score"),
            (
                json!({"call_id": "x", "score": 1, "rating": true}),
                "rating",
            ),
            (json!({"call_id": "x", "score": null}), "score"),
        ] {
            assert_eq!(
                read(body).score().unwrap_err().param.as_deref(),
                Some(param)
            );
        }
        let long = "x".repeat(257);
        for bad in ["", "has space", "é", long.as_str()] {
            let r = read(json!({"call_id": bad, "score": 1}));
            assert_eq!(r.call_id().unwrap_err().param.as_deref(), Some("call_id"));
        }
    }
}
