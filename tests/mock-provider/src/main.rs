//! `routeiq-mock-provider --listen 127.0.0.1:PORT`: a deterministic LLM provider that speaks
//! the real wire protocols, streaming included, for the gateway's end-to-end tests:
//!
//! - OpenAI and Azure OpenAI: chat completions, legacy completions, embeddings, image
//!   generations, audio transcriptions, translations and speech; OpenAI
//!   moderations; rerank in the shape OpenAI-compatible servers (vLLM) answer it
//!   (`/v1/rerank`);
//! - OpenAI Responses (`/v1/responses`, Azure `/openai/responses`), streams included;
//! - OpenAI and Azure files and batches (`/v1/files`, `/v1/batches`, Azure's under `/openai/`);
//! - Anthropic Messages (`/v1/messages`) and Skills (`/v1/skills`, the `skills-2025-10-02`
//!   beta), whose custom skills messages may load (`container.skills`);
//! - Google Gemini API (`/v1beta/models/{model}:{method}`, API key): generateContent,
//!   streamGenerateContent (`alt=sse`), embedContent, batchEmbedContents;
//! - Vertex AI (`/v1/projects/{project}/locations/{location}/publishers/...`, OAuth2 bearer
//!   token): the same Gemini methods under `google/models`, and Claude's `rawPredict` /
//!   `streamRawPredict` under `anthropic/models`;
//! - Google's OAuth2 token endpoint (`POST /token`, the service-account JWT-bearer grant),
//!   whose tokens Vertex AI accepts;
//! - AWS Bedrock Agent Runtime's Rerank (`/rerank`, SigV4);
//! - AWS Bedrock Runtime (`/model/{modelId}/{converse,converse-stream,invoke,
//!   invoke-with-response-stream}`, every request SigV4-signed with registered credentials):
//!   Converse, ConverseStream (binary event stream), and InvokeModel for Claude (Anthropic
//!   Messages), Titan and Cohere embeddings;
//! - AWS STS (`POST /sts`, or `POST /` with an `Action`, where the AWS SDKs post):
//!   AssumeRole and AssumeRoleWithWebIdentity, whose temporary credentials Bedrock accepts;
//! - Cohere v2 (bearer API key): `/v2/chat` (SSE streaming too), `/v2/embed`, `/v2/rerank`.
//!
//! Test controls: `POST /__faults`, `GET /__stats`, `GET /__last_request`,
//! `POST /__service_accounts` (a service account's public key), `GET /__oauth` (tokens
//! issued), `POST /__aws_credentials` (the AWS keys whose signatures verify),
//! `POST /__aws_credentials/lifetime` (how long STS credentials live), `GET /__aws` (requests
//! verified, roles assumed), `GET /__skills` (the skills uploaded).

mod anthropic;
mod aws;
mod bedrock;
mod cohere;
mod common;
mod files;
mod gemini;
mod media;
mod oauth;
mod openai;
mod responses;
mod skills;

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
        .route("/v1/completions", post(openai::completions))
        .route("/v1/audio/speech", post(media::speech))
        .route("/v1/audio/{task}", post(media::openai))
        .route("/v1/images/edits", post(media::edits))
        .route("/v1/files", get(files::files).post(files::files))
        .route(
            "/v1/files/{*rest}",
            get(files::files).delete(files::files),
        )
        .route("/v1/batches", get(files::files).post(files::files))
        .route(
            "/v1/batches/{*rest}",
            get(files::files).post(files::files),
        )
        .route("/openai/files", get(files::files).post(files::files))
        .route(
            "/openai/files/{*rest}",
            get(files::files).delete(files::files),
        )
        .route("/openai/batches", get(files::files).post(files::files))
        .route(
            "/openai/batches/{*rest}",
            get(files::files).post(files::files),
        )
        .route(
            "/openai/deployments/{deployment}/images/edits",
            post(media::azure_edits),
        )
        .route(
            "/openai/deployments/{deployment}/audio/{task}",
            post(media::azure),
        )
        .route("/v1/embeddings", post(openai::embeddings))
        .route(
            "/openai/deployments/{deployment}/{*endpoint}",
            post(openai::azure),
        )
        .route("/v1/moderations", post(openai::moderations))
        .route("/v1/images/generations", post(openai::images))
        .route("/v1/responses", post(responses::openai))
        .route("/openai/responses", post(responses::azure))
        .route(
            "/v1/responses/{*rest}",
            get(responses::stored).delete(responses::stored),
        )
        .route(
            "/openai/responses/{*rest}",
            get(responses::stored).delete(responses::stored),
        )
        .route("/v1/rerank", post(cohere::compatible_rerank))
        .route("/embeddings", post(openai::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/skills", post(skills::create))
        .route("/v1/skills/{id}", axum::routing::delete(skills::delete))
        .route("/v1/skills/{id}/versions", post(skills::create_version))
        .route(
            "/v1/skills/{id}/versions/{version}",
            axum::routing::delete(skills::delete_version),
        )
        .route("/__skills", get(skills::list))
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
        .route("/model/{model_id}/converse", post(bedrock::converse))
        .route("/rerank", post(bedrock::rerank))
        .route(
            "/model/{model_id}/converse-stream",
            post(bedrock::converse_stream),
        )
        .route("/model/{model_id}/invoke", post(bedrock::invoke))
        .route(
            "/model/{model_id}/invoke-with-response-stream",
            post(bedrock::invoke_stream),
        )
        .route("/sts", post(aws::sts))
        .route("/", post(aws::root))
        .route("/v2/chat", post(cohere::chat))
        .route("/v2/embed", post(cohere::embed))
        .route("/v2/rerank", post(cohere::rerank))
        .route("/token", post(oauth::token))
        .route("/__service_accounts", post(oauth::register))
        .route("/__oauth", get(oauth::stats))
        .route("/__aws_credentials", post(aws::register))
        .route("/__aws_credentials/lifetime", post(aws::set_lifetime))
        .route("/__aws", get(aws::stats))
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
