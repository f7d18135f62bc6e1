//! The gRPC client of the control plane: one lazily connected channel with a connect
//! timeout and a per-call deadline, so an unreachable control plane is a quick 503, never
//! a hang.

use std::time::Duration;

use routeiq_proto::wire::pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Largest gRPC message either way (the control plane's limit).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub type Grpc = pb::control_plane_client::ControlPlaneClient<InterceptedService<Channel, Token>>;

/// Adds `authorization: Bearer <token>` to every call when a token is configured, and the
/// `traceparent` of the admin call being served when it is in a span.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = routeiq_service::telemetry::current_traceparent()
            .and_then(|t| MetadataValue::try_from(t).ok())
        {
            req.metadata_mut().insert("traceparent", v);
        }
        Ok(req)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control-plane URL `{0}`: {1}")]
    Url(String, tonic::transport::Error),
    #[error("the control-plane token is not a valid header value")]
    Token,
    #[error("{0}: {1}")]
    File(String, std::io::Error),
    #[error("an https:// control-plane URL needs --controlplane-ca (the CA to verify it with)")]
    NoCa,
    #[error("control-plane TLS: {0}")]
    Tls(tonic::transport::Error),
}

/// TLS to the control plane: the CA (PEM) that signed its certificate, and this client's
/// certificate and key when the control plane requires them (mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl ClientTls {
    fn config(&self) -> Result<ClientTlsConfig, ClientError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ClientError::File(p.display().to_string(), e))
        };
        let ca = self.ca.as_deref().ok_or(ClientError::NoCa)?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(config)
    }
}

/// Connects lazily: the admin API starts (and answers 503) while the control plane is down.
/// With an `https://` URL the channel is TLS, verified against `tls.ca`.
pub fn connect(
    url: &str,
    token: Option<&str>,
    deadline: Duration,
    tls: &ClientTls,
) -> Result<Grpc, ClientError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Url(url.to_owned(), e))?
        .connect_timeout(Duration::from_secs(2).min(deadline))
        .timeout(deadline)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls.config()?)
            .map_err(ClientError::Tls)?;
    }
    let token = token
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::Token)
        })
        .transpose()?;
    // Skill uploads and downloads carry bundles of up to 8 MiB.
    Ok(
        pb::control_plane_client::ControlPlaneClient::with_interceptor(
            endpoint.connect_lazy(),
            Token(token),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}
