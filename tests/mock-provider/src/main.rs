//! `routeiq-mock-provider --listen 127.0.0.1:PORT`: a deterministic LLM provider that speaks
//! the real wire protocols, streaming included, for the gateway's end-to-end tests:
//!
//! - OpenAI and Azure OpenAI: chat completions and embeddings;
//! - Anthropic Messages (`/v1/messages`);
//! - Google Gemini API (`/v1beta/models/{model}:{method}`, API key): generateContent,
//!   streamGenerateContent (`alt=sse`), embedContent, batchEmbedContents;
//! - Vertex AI (`/v1/projects/{project}/locations/{location}/publishers/...`, OAuth2 bearer
//!   token): the same Gemini methods under `google/models`, and Claude's `rawPredict` /
//!   `streamRawPredict` under `anthropic/models`;
//! - Google's OAuth2 token endpoint (`POST /token`, the service-account JWT-bearer grant),
//!   whose tokens Vertex AI accepts.
//!
//! Test controls: `POST /__faults`, `GET /__stats`, `GET /__last_request`,
//! `POST /__service_accounts` (a service account's public key), `GET /__oauth` (tokens
//! issued).

mod anthropic;
mod common;
mod gemini;
mod oauth;
mod openai;

use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::Router;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state = common::State::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/chat/completions", post(openai::chat))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(openai::azure_chat),
        )
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(openai::azure_embeddings),
        )
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1beta/models/{model_and_method}", post(gemini::gemini_api))
        .route("/v1/models/{model_and_method}", post(gemini::gemini_api))
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/google/models/{model_and_method}",
            post(gemini::vertex_google),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model_and_method}",
            post(gemini::vertex_anthropic),
        )
        .route("/token", post(oauth::token))
        .route("/__service_accounts", post(oauth::register))
        .route("/__oauth", get(oauth::stats))
        .route("/__last_request", get(common::last_request))
        .route("/__faults", post(common::set_faults))
        .route("/__stats", get(common::stats))
        .route("/health", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
