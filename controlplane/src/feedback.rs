//! Feedback on answers (`routing_feedback`): one score in [0, 1] per request id, the
//! latest replacing earlier ones. The routing-model report joins it to the spend logs to
//! compare versions (`routing_models::report`).

use routeiq_proto::KeyHash;

use crate::error::StoreError;

/// Longest request id accepted, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 256;

/// Records `score` (0 to 1) and `comment` for request `request_id`, replacing earlier
/// feedback on it. With `only_key`, the request must be logged as made with that key.
pub async fn record(
    pool: &sqlx::PgPool,
    request_id: &str,
    score: f64,
    comment: Option<&str>,
    only_key: Option<KeyHash>,
) -> Result<(), StoreError> {
    if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(StoreError::Invalid(format!(
            "request_id must be 1 to {MAX_REQUEST_ID_BYTES} bytes"
        )));
    }
    if !(0.0..=1.0).contains(&score) {
        return Err(StoreError::Invalid(format!(
            "score must be between 0 and 1, got {score}"
        )));
    }
    if let Some(key) = only_key {
        let logged =
            sqlx::query("SELECT 1 FROM spend_logs WHERE request_id = $1 AND key_hash = $2 LIMIT 1")
                .bind(request_id)
                .bind(key.0.to_vec())
                .fetch_optional(pool)
                .await?;
        if logged.is_none() {
            return Err(StoreError::NotFound(format!(
                "request {request_id} not found for this key"
            )));
        }
    }
    sqlx::query(
        "INSERT INTO routing_feedback (request_id, score, comment) VALUES ($1, $2, $3)
         ON CONFLICT (request_id) DO UPDATE
            SET score = EXCLUDED.score, comment = EXCLUDED.comment, created_at = now()",
    )
    .bind(request_id)
    .bind(score)
    .bind(comment)
    .execute(pool)
    .await?;
    Ok(())
}
