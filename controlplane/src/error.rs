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
    /// The request needs configuration the gateway does not have (the response cache is
    /// off, or has no Redis here).
    #[error("{0}")]
    Precondition(String),
    /// A service the control plane needs besides PostgreSQL (the skill store) failed or is
    /// not configured.
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether PostgreSQL is away, busy or not letting this service in, rather than
    /// refusing this work: a connection not had in time (the pool's wait), lost or refused,
    /// or an answer of class 08 (connection), 28 (authorization), 3D (no such database), 53
    /// (insufficient resources), 55 (not in the state needed: a database not accepting
    /// connections, a lock not available), 57 (operator intervention: shutting down,
    /// starting up) or 58 (system error). The same work may succeed later.
    pub fn database_unavailable(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(d)) => d.code().is_some_and(|c| {
                matches!(
                    c.get(..2),
                    Some("08" | "28" | "3D" | "53" | "55" | "57" | "58")
                )
            }),
            StoreError::Db(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }

    /// The domain error `known` gives for the constraint `e` violated (a duplicate, a
    /// missing reference); any other error stays a database error.
    pub fn on_constraint<const N: usize>(
        e: sqlx::Error,
        known: [(&'static str, StoreError); N],
    ) -> Self {
        let violated = match &e {
            sqlx::Error::Database(d) => d.constraint(),
            _ => None,
        };
        match violated.and_then(|c| known.into_iter().find(|(name, _)| *name == c)) {
            Some((_, mapped)) => mapped,
            None => StoreError::Db(e),
        }
    }
}

/// The metadata key of an Unavailable status caused by a service the control plane needs
/// (its database, an object store, Redis), not by the control plane itself.
pub const DEPENDENCY_UNAVAILABLE: &str = "routeiq-dependency-unavailable";

const DATABASE_UNAVAILABLE: &str = "the control plane's database is unavailable; retry later";

/// Unavailable, marked as a dependency's, so that the admin API passes the reason on (a
/// plain Unavailable is the control plane itself out of reach).
fn dependency_unavailable(message: String) -> tonic::Status {
    let mut s = tonic::Status::unavailable(message);
    s.metadata_mut().insert(
        DEPENDENCY_UNAVAILABLE,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    s
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(m) => tonic::Status::not_found(m.clone()),
            StoreError::Conflict(m) => tonic::Status::already_exists(m.clone()),
            StoreError::Invalid(m) => tonic::Status::invalid_argument(m.clone()),
            StoreError::Precondition(m) => tonic::Status::failed_precondition(m.clone()),
            StoreError::Unavailable(m) => dependency_unavailable(m.clone()),
            _ if e.database_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                dependency_unavailable(DATABASE_UNAVAILABLE.to_owned())
            }
            StoreError::Db(db) => {
                // A database error's SQLSTATE says whose fault it is.
                let (class, message) = match db {
                    sqlx::Error::Database(d) => (
                        d.code().unwrap_or_default().get(..2).map(str::to_owned),
                        d.message().to_owned(),
                    ),
                    _ => (None, String::new()),
                };
                match class.as_deref() {
                    // Data exceptions (a value out of range, invalid text, ...), and values
                    // past a limit of PostgreSQL's (an index row too large).
                    Some("22" | "54") => tonic::Status::invalid_argument(message),
                    // Integrity constraints not mapped to a domain error above.
                    Some("23") => tonic::Status::failed_precondition(message),
                    // Serialization failure or deadlock: safe to retry.
                    Some("40") => tonic::Status::aborted(message),
                    _ => {
                        tracing::error!(error = %e, "database error");
                        tonic::Status::internal("database error; see the control plane's log")
                    }
                }
            }
            StoreError::Crypto(_) | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "internal error");
                tonic::Status::internal(e.to_string())
            }
        }
    }
}
