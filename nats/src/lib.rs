//! The NATS connection of the control plane and the data plane: the command-line options
//! both take (`--nats`, credentials, token, user and password, TLS CA and client certificate), and a count of
//! (re)connections ([`Reconnects`]) that stream consumers watch to start over at once after
//! a NATS restart.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach NATS.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long = "nats", env = "ROUTEIQ_NATS_URL")]
    pub url: Option<String>,
    /// NATS credentials file (JWT + nkey).
    #[arg(long = "nats-creds", env = "ROUTEIQ_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// NATS token.
    #[arg(
        long = "nats-token",
        env = "ROUTEIQ_NATS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long = "nats-user", env = "ROUTEIQ_NATS_USER")]
    pub user: Option<String>,
    #[arg(
        long = "nats-password",
        env = "ROUTEIQ_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// CA certificate to verify the NATS server with (enables TLS).
    #[arg(long = "nats-tls-ca", env = "ROUTEIQ_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a NATS server that verifies clients (with
    /// --nats-tls-key).
    #[arg(
        long = "nats-tls-cert",
        env = "ROUTEIQ_NATS_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    #[arg(
        long = "nats-tls-key",
        env = "ROUTEIQ_NATS_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// JetStream domain of the control plane's streams, when they are not on the server
    /// connected to: a data plane at an edge site connects to its local leaf node and
    /// reaches the hub's JetStream through it (`$JS.<domain>.API`).
    #[arg(long = "nats-js-domain", env = "ROUTEIQ_NATS_JS_DOMAIN")]
    pub js_domain: Option<String>,
}

impl NatsArgs {
    /// The JetStream context of the control plane's streams (in `--nats-js-domain`, when
    /// given).
    pub fn jetstream(&self, client: async_nats::Client) -> async_nats::jetstream::Context {
        match self.js_domain.as_deref().filter(|d| !d.is_empty()) {
            Some(domain) => async_nats::jetstream::with_domain(client, domain),
            None => async_nats::jetstream::new(client),
        }
    }

    /// Connects to `url`, retrying in the background if NATS is not up yet, and keeps
    /// reconnecting forever once connected. The [`Reconnects`] count every (re)connection.
    pub async fn connect(
        &self,
        url: &str,
        name: &str,
    ) -> anyhow::Result<(async_nats::Client, Reconnects)> {
        let (tx, reconnects) = tokio::sync::watch::channel(0);
        let mut o = async_nats::ConnectOptions::new()
            .name(name)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move { on_event(&tx, &event) }
            })
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Back within half a second of NATS (the default backoff grows past 4 s).
            .reconnect_delay_callback(reconnect_delay)
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &self.creds {
            o = o.credentials_file(path).await?;
        }
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &self.tls_ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            o = o
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok((o.connect(url).await?, reconnects))
    }
}

/// How many times the client has (re)connected to NATS. A server restart drops what lives
/// only in its memory (ephemeral consumers, pending pulls): whoever consumes a stream
/// starts over when this changes, at once, instead of noticing missed heartbeats seconds
/// later.
pub type Reconnects = tokio::sync::watch::Receiver<u64>;

/// The wait before reconnect attempt `n`: 100 ms more per attempt, at most 500 ms.
fn reconnect_delay(attempts: usize) -> Duration {
    Duration::from_millis((100 * attempts as u64).min(500))
}

fn on_event(tx: &tokio::sync::watch::Sender<u64>, event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            tx.send_modify(|n| *n += 1);
            tracing::info!("NATS connected");
        }
        async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
        other => tracing::debug!(event = %other, "NATS event"),
    }
}

/// Resolves when NATS reconnects (a connection after the first) after `reconnects` was
/// last marked seen; never, if the client is gone. Cancel-safe.
pub async fn reconnected(reconnects: &mut Reconnects) {
    loop {
        if reconnects.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        // The first connection's event may arrive after a consumer started: not a restart.
        if *reconnects.borrow_and_update() > 1 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_connection_is_not_a_reconnect() {
        let (tx, mut rx) = tokio::sync::watch::channel(0);
        tx.send_replace(1);
        let first = tokio::time::timeout(Duration::from_millis(50), reconnected(&mut rx)).await;
        assert!(first.is_err(), "the first connection woke a consumer");
        tx.send_replace(2);
        let again = tokio::time::timeout(Duration::from_millis(50), reconnected(&mut rx)).await;
        assert!(again.is_ok(), "a reconnect was missed");
        assert_eq!(reconnect_delay(1), Duration::from_millis(100));
        assert_eq!(reconnect_delay(40), Duration::from_millis(500));
    }
}
