//! The control plane's errors.

use crate::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(m) => tonic::Status::not_found(m.clone()),
            StoreError::Conflict(m) => tonic::Status::already_exists(m.clone()),
            StoreError::Invalid(m) => tonic::Status::invalid_argument(m.clone()),
            StoreError::Db(_) => {
                tracing::error!(error = %e, "database error");
                tonic::Status::unavailable("the control plane's database is unavailable")
            }
            StoreError::Crypto(_) | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "internal error");
                tonic::Status::internal(e.to_string())
            }
        }
    }
}
