//! `routeiq-mock-provider --listen 127.0.0.1:PORT`: a deterministic LLM provider that speaks
//! the real OpenAI, Azure OpenAI and Anthropic wire protocols, streaming included, for the
//! gateway's end-to-end tests.

mod anthropic;
mod common;
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
