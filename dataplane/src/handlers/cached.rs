//! Answering a chat request from the response cache: in the delivery the client asked for
//! (a stored stream's own events, or the stored response as a stream, or one response
//! from either), with the key's rate limits and budgets checked as for any request, and a
//! cost of 0.

use bytes::Bytes;
use pingora::proxy::Session;

use crate::cache::{replay, Answer, Entry, Plan};
use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::respond;
use crate::state::{App, LiveState};

/// What a hit sends.
pub enum Reply {
    Full(Bytes),
    Stream(Vec<Bytes>),
}

impl Reply {
    /// `entry` in the delivery asked for; `None` when a stored answer cannot be read in it
    /// (the request is then served as a miss).
    pub fn of(entry: &Entry, client: ClientApi, stream: bool, include_usage: bool) -> Option<Self> {
        let drop_usage = client == ClientApi::OpenAi && !include_usage;
        match (&entry.answer, stream) {
            (Answer::Full(body), false) => Some(Self::Full(body.clone())),
            (Answer::Stream(events), false) => {
                replay::full_from_stream(client, events).map(Self::Full)
            }
            (Answer::Stream(events), true) => Some(Self::Stream(
                events
                    .iter()
                    .filter(|e| !(drop_usage && replay::is_usage_chunk(e)))
                    .map(replay::without_cost)
                    .collect(),
            )),
            (Answer::Full(body), true) => {
                replay::stream_from_full(client, body, include_usage).map(Self::Stream)
            }
        }
    }
}

/// Sends a hit for model group `model` (`similarity`: a semantic one).
#[allow(clippy::too_many_arguments)]
pub async fn answer(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    model: &str,
    plan: &Plan,
    entry: &Entry,
    similarity: Option<f32>,
    reply: Reply,
) -> Result<(), ApiError> {
    ctx.model = Some(model.to_owned());
    // Rate limits count the request; budgets must not be exhausted; nothing is charged.
    ctx.hold(app, live, 0.0, 0).await?;
    crate::cache::hit(ctx, plan, entry, similarity);
    let m = &app.cache.metrics;
    m.hits.with_label_values(&[model]).inc();
    if let Some(u) = entry.usage {
        m.cached_tokens
            .with_label_values(&[model])
            .inc_by(u.total());
    }
    let mut headers = vec![
        ("x-litellm-call-id", ctx.request_id.clone()),
        ("x-litellm-model-group", model.to_owned()),
        ("x-litellm-response-cost", "0".to_owned()),
    ];
    headers.extend(ctx.rate_headers.iter().cloned());
    if let Some(c) = &ctx.cache {
        headers.extend(c.headers());
    }
    let sent = match reply {
        Reply::Full(body) => respond::json(session, ctx, &headers, body).await,
        Reply::Stream(mut events) => {
            async {
                respond::stream_start(session, ctx, &headers).await?;
                respond::stream_write(session, &mut events).await?;
                respond::stream_end(session).await
            }
            .await
        }
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}
