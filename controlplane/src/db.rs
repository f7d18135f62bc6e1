//! PostgreSQL connection and migrations (`migrations/`, embedded at build time).

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a query waits for a connection. With PostgreSQL down (connections refused)
/// the pool retries until then, so this is how soon a change is refused with
/// `UNAVAILABLE`: well inside the admin API's deadline (5 s), so that its 503 names the
/// database rather than a timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a starting control plane waits for PostgreSQL to let it in (it may be
/// starting beside it) before giving up.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// The pool, once PostgreSQL accepts a connection. A connection refused, timed out or
/// turned away while PostgreSQL starts is tried again every second for up to
/// [`STARTUP_WAIT`]; any other error (a wrong password, no such database) is returned at
/// once.
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    let started = Instant::now();
    loop {
        match PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
        {
            Err(e) if not_up_yet(&e) && started.elapsed() < STARTUP_WAIT => {
                tracing::warn!(error = %e, "PostgreSQL does not let the control plane in yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            connected => return connected,
        }
    }
}

/// Whether PostgreSQL is not up yet: not answering, or starting (SQLSTATE 57P03).
fn not_up_yet(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c == "57P03"),
        _ => false,
    }
}

/// Applies pending migrations; a no-op when the schema is current.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
