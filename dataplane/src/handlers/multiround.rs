//! The rounds of the multi-round strategies (`routing::learned::multiround`), before the
//! final call: the messages that call sends to the router model, with what the rounds
//! gathered. Every call here is internal and billed to the request; a failed call leaves
//! its round out, so the final call still answers.

use std::sync::Arc;

use serde_json::{json, Value};

use super::attempt;
use super::internal;
use crate::context::RequestCtx;
use crate::routing::learned::multiround::{Mode, MultiRound, MAX_TEXT_BYTES};
use crate::routing::learned::Query;
use crate::routing::learned::{cut, is_candidate};
use crate::routing::RouteRequest;
use crate::state::{App, CompiledDeployment, LiveState};

/// The final call's messages, and the candidates consulted.
pub async fn rounds(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    mr: &MultiRound,
    model: &str,
    question: &str,
) -> (Vec<Value>, Vec<String>) {
    match mr.mode {
        Mode::RouterR1 => r1(app, live, ctx, mr, model, question).await,
        Mode::Llm | Mode::Knn => decompose(app, live, ctx, mr, model, question).await,
    }
}

fn user(content: &str) -> Value {
    json!({"messages": [MultiRound::message("user", content)]})
}

async fn ask(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    mr: &MultiRound,
    body: Value,
) -> Option<String> {
    match internal::complete(app, live, &mr.router_model, body, mr.timeout).await {
        Ok(a) => {
            ctx.extra_cost += a.cost;
            Some(a.text)
        }
        Err(e) => {
            tracing::warn!(router_model = %mr.router_model, error = %e, "multi-round router call failed");
            None
        }
    }
}

async fn decompose(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    mr: &MultiRound,
    model: &str,
    question: &str,
) -> (Vec<Value>, Vec<String>) {
    let reply = ask(app, live, ctx, mr, mr.decompose_body(question)).await;
    let subs = mr.sub_questions(reply.as_deref().unwrap_or(""), question);
    let Some(group) = live.group(model) else {
        return (mr.aggregate_messages(question, &[]), Vec::new());
    };
    let all: Vec<usize> = (0..group.deployments.len()).collect();
    let mut routed: Vec<(String, Arc<CompiledDeployment>, String)> = Vec::new();
    for sub in subs {
        let query = Arc::new(Query::new(sub.clone()));
        attempt::prepare(app, live, ctx, mr.sub_router.preparation(), &query).await;
        let req = RouteRequest {
            query: Some(Arc::clone(&query)),
            ..RouteRequest::default()
        };
        let now = crate::clock::now_ms();
        let Some(i) = mr.sub_router.pick(&group.deployments, &all, &req, now) else {
            continue;
        };
        let d = Arc::clone(&group.deployments[i]);
        let name = query
            .decision()
            .and_then(|r| r.candidate)
            .unwrap_or_else(|| d.deployment.upstream_model.clone());
        routed.push((sub, d, name));
    }
    let answers = futures_util::future::join_all(
        routed
            .iter()
            .map(|(sub, d, _)| internal::complete_on(app, d, user(sub), mr.timeout)),
    )
    .await;
    let mut notes = Vec::new();
    for ((sub, _, name), a) in routed.into_iter().zip(answers) {
        match a {
            Ok(a) => {
                ctx.extra_cost += a.cost;
                notes.push((sub, name, a.text));
            }
            Err(e) => tracing::warn!(candidate = %name, error = %e, "sub-question not answered"),
        }
    }
    let consulted = notes.iter().map(|(_, n, _)| n.clone()).collect();
    (mr.aggregate_messages(question, &notes), consulted)
}

async fn r1(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    mr: &MultiRound,
    model: &str,
    question: &str,
) -> (Vec<Value>, Vec<String>) {
    let mut messages = vec![
        MultiRound::message("system", mr.r1_system()),
        MultiRound::message("user", cut(question, MAX_TEXT_BYTES)),
    ];
    let mut consulted = Vec::new();
    for _ in 0..mr.max_rounds {
        let Some(reply) = ask(app, live, ctx, mr, json!({"messages": messages})).await else {
            break;
        };
        messages.push(MultiRound::message("assistant", reply.clone()));
        let Ok((name, sub)) = MultiRound::r1_step(&reply) else {
            break;
        };
        let d = live.group(model).and_then(|g| {
            g.deployments
                .iter()
                .find(|d| is_candidate(d, &name))
                .cloned()
        });
        let info = match d {
            None => format!("There is no model named {name}; consult one from the list."),
            Some(d) => match internal::complete_on(app, &d, user(&sub), mr.timeout).await {
                Ok(a) => {
                    ctx.extra_cost += a.cost;
                    consulted.push(name);
                    a.text
                }
                Err(e) => format!("{name} did not answer: {e}"),
            },
        };
        messages.push(MultiRound::message(
            "user",
            format!("<information>{}</information>", cut(&info, MAX_TEXT_BYTES)),
        ));
    }
    messages.push(MultiRound::message(
        "user",
        "Now write your final answer for the user, without any tags.",
    ));
    (messages, consulted)
}
