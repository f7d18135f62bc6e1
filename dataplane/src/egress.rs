//! `general_settings.allowed_egress`, enforced on every connection the data plane makes:
//! - the pooled upstream client's (providers, OAuth2 token endpoints), checked by
//!   `Upstream` before it connects, with this module's policy;
//! - the AWS SDK's (STS, the default credentials chain with its instance-metadata and
//!   container endpoints, S3 for routing models), through [`Egress::aws_http_client`].
//!
//! A host the list refuses by name is never looked up; a name the list leaves to its
//! address is connected only to the addresses the list holds. Every refusal is logged and
//! counted by host (`routeiq_egress_refused_total`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;
use prometheus::{IntCounterVec, Opts};
use routeiq_proto::{AllowedEgress, EgressVerdict};

/// The served state's allow-list (`App::store` keeps it current) and its refusals.
pub struct Egress {
    policy: ArcSwapOption<AllowedEgress>,
    /// Connections refused, by host (`routeiq_egress_refused_total`).
    pub refused: IntCounterVec,
}

impl Default for Egress {
    // The metric's name and label are fixed and valid; `new` cannot fail on them.
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        Self {
            policy: ArcSwapOption::empty(),
            refused: IntCounterVec::new(
                Opts::new(
                    "routeiq_egress_refused_total",
                    "Connections refused by general_settings.allowed_egress, by host",
                ),
                &["host"],
            )
            .expect("a valid metric definition"),
        }
    }
}

impl Egress {
    /// Follows the served state's allow-list; `None`: every destination may be reached.
    pub fn set(&self, policy: Option<Arc<AllowedEgress>>) {
        self.policy.store(policy);
    }

    pub fn policy(&self) -> Option<Arc<AllowedEgress>> {
        self.policy.load_full()
    }

    /// Counts and logs the refusal of `host`, wanted by `who`.
    pub fn refuse(&self, host: &str, who: &str) {
        self.refused.with_label_values(&[host]).inc();
        tracing::warn!(
            host,
            who,
            "egress refused: not in general_settings.allowed_egress"
        );
    }

    /// Whether the operator listed `host` (by name) or `ip`: what admits an internal
    /// address (see [`is_internal`]).
    pub fn lists(&self, host: &str, ip: IpAddr) -> bool {
        self.policy()
            .is_some_and(|p| p.by_name(host) == EgressVerdict::Allowed || p.allows_addr(ip))
    }

    /// An HTTP client for AWS SDK clients that connects only where the allow-list admits
    /// (rustls with aws-lc, as the SDK's default client).
    pub fn aws_http_client(self: &Arc<Self>) -> SharedHttpClient {
        let guard = Guard(Arc::clone(self));
        let inner = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .build_with_resolver(guard.clone());
        SharedHttpClient::new(GuardedClient { inner, guard })
    }
}

/// Addresses a server known only by a URL someone registered must not reach unless the
/// operator lists them (SSRF): loopback, link-local (the cloud metadata endpoint
/// 169.254.169.254 among them), unspecified, and AWS's IPv6 metadata address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
                    || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

/// The refusal an AWS SDK call fails with.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not in general_settings.allowed_egress; no connection was made",
            self.0
        )
    }
}

impl std::error::Error for Refused {}

#[derive(Clone)]
struct Guard(Arc<Egress>);

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("egress guard")
    }
}

impl Guard {
    /// `Err` when the name alone refuses `host`.
    fn check_name(&self, host: &str) -> Result<(), Refused> {
        match self.0.policy() {
            Some(p) if p.by_name(host) == EgressVerdict::Refused => {
                self.0.refuse(host, "AWS SDK");
                Err(Refused(host.to_owned()))
            }
            _ => Ok(()),
        }
    }
}

/// Names the connector resolves: refused names are not looked up, and only listed
/// addresses are returned for names the list leaves to their address.
impl ResolveDns for Guard {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            self.check_name(name).map_err(ResolveDnsError::new)?;
            let found: Vec<IpAddr> = tokio::net::lookup_host((name, 0))
                .await
                .map_err(ResolveDnsError::new)?
                .map(|a| a.ip())
                .collect();
            let Some(policy) = self.0.policy() else {
                return Ok(found);
            };
            let admitted: Vec<IpAddr> = found
                .into_iter()
                .filter(|ip| policy.allows(name, *ip))
                .collect();
            if admitted.is_empty() {
                self.0.refuse(name, "AWS SDK");
                return Err(ResolveDnsError::new(Refused(name.to_owned())));
            }
            Ok(admitted)
        })
    }
}

/// Checks each request's host before the inner client sees it: IP literals (the
/// instance-metadata endpoint, say) are never resolved, so the resolver alone would miss
/// them.
#[derive(Debug)]
struct GuardedClient {
    inner: SharedHttpClient,
    guard: Guard,
}

impl HttpClient for GuardedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(GuardedConnector {
            inner: self.inner.http_connector(settings, components),
            guard: self.guard.clone(),
        })
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_base_client_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct GuardedConnector {
    inner: SharedHttpConnector,
    guard: Guard,
}

impl HttpConnector for GuardedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let host = request
            .uri()
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned));
        let Some(host) = host else {
            return HttpConnectorFuture::ready(Err(ConnectorError::user(
                format!("no host in {}", request.uri()).into(),
            )));
        };
        match self.guard.check_name(&host) {
            Err(refused) => HttpConnectorFuture::ready(Err(ConnectorError::user(refused.into()))),
            Ok(()) => self.inner.call(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> Option<Arc<AllowedEgress>> {
        let list: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Some(Arc::new(AllowedEgress::parse(&list).unwrap()))
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.2",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "fd00::1",
            "2001:db8::1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
        let egress = Egress::default();
        let lo = "127.0.0.1".parse().unwrap();
        assert!(!egress.lists("localhost", lo), "no list lists nothing");
        egress.set(policy(&["localhost"]));
        assert!(egress.lists("localhost", lo) && !egress.lists("127.0.0.1", lo));
        egress.set(policy(&["127.0.0.0/8"]));
        assert!(egress.lists("anything", lo));
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_and_filters_addresses() {
        let egress = Arc::new(Egress::default());
        let guard = Guard(Arc::clone(&egress));
        // No list: everything resolves.
        assert!(!guard.resolve_dns("localhost").await.unwrap().is_empty());

        egress.set(policy(&["sts.example"]));
        let e = guard.resolve_dns("localhost").await.unwrap_err();
        let why = std::error::Error::source(&e).map(ToString::to_string);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("localhost is not in")),
            "{why:?}"
        );

        // Left to the address: localhost's loopback addresses are admitted only when listed.
        egress.set(policy(&["127.0.0.0/8"]));
        let ips = guard.resolve_dns("localhost").await.unwrap();
        assert!(!ips.is_empty() && ips.iter().all(|ip| ip.is_loopback() && ip.is_ipv4()));
        egress.set(policy(&["10.0.0.0/8"]));
        assert!(guard.resolve_dns("localhost").await.is_err());
        assert_eq!(
            egress.refused.with_label_values(&["localhost"]).get(),
            2,
            "each refusal is counted"
        );
    }
}
