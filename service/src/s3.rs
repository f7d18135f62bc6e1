//! The S3 client both planes make (data planes: routing models; the control plane: skill
//! bundles): credentials, region and endpoint from the standard AWS variables, `us-east-1`
//! when no region is set, and path-style addressing when an endpoint URL names an
//! S3-compatible server (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`).

use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// The client; `http`: the HTTP client its requests go through (the SDK's own when `None`).
pub async fn client(http: Option<SharedHttpClient>) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(
        aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1"),
    );
    if let Some(http) = http {
        loader = loader.http_client(http);
    }
    let conf = loader.load().await;
    let custom = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    let s3 = aws_sdk_s3::config::Builder::from(&conf)
        .force_path_style(custom)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}
