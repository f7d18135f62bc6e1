//! The gRPC client of the control plane: one lazily connected channel with a connect
//! timeout and a per-call deadline, so an unreachable control plane is a quick 503, never
//! a hang.

use std::time::Duration;

use routeiq_proto::wire::pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub type Grpc = pb::control_plane_client::ControlPlaneClient<InterceptedService<Channel, Token>>;

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
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
}

/// Connects lazily: the admin API starts (and answers 503) while the control plane is down.
pub fn connect(url: &str, token: Option<&str>, deadline: Duration) -> Result<Grpc, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Url(url.to_owned(), e))?
        .connect_timeout(Duration::from_secs(2).min(deadline))
        .timeout(deadline)
        .tcp_nodelay(true);
    let token = token
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::Token)
        })
        .transpose()?;
    Ok(
        pb::control_plane_client::ControlPlaneClient::with_interceptor(
            endpoint.connect_lazy(),
            Token(token),
        ),
    )
}
