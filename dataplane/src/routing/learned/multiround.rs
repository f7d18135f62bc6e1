//! The multi-round strategies: a request is answered by several model calls.
//!
//! - `llmrouter-llm-multiround`: the router model decomposes the question into
//!   sub-questions; each is routed by asking the router model (as `causallm` does),
//!   answered by the chosen candidate, and the router model writes the final answer from
//!   the sub-answers.
//! - `llmrouter-knn-multiround`: the same, with each sub-question routed by a `knn`
//!   artifact (`model_path` / `model_s3_*`, as `llmrouter-knn`).
//! - `llmrouter-router-r1`: the router model works in turns (Router-R1's protocol): it
//!   may consult a candidate with `<search>NAME: question</search>`, gets
//!   `<information>…</information>` back, and ends with `<answer>…</answer>`.
//!
//! The final answer is one more call to the router model, sent like any request (it may
//! stream), so the response is a real provider response. The other calls are internal
//! (`handlers::internal`) and billed to the request. `handlers::multiround` runs them.

use std::sync::Arc;
use std::time::Duration;

use routeiq_proto::{RouterSettings, RoutingStrategy};
use serde_json::{json, Value};

use super::{candidate_names, cut, Decision};
use crate::routing::{RouteRequest, Router};
use crate::state::CompiledDeployment;

/// Bytes of a question or answer passed between rounds.
pub const MAX_TEXT_BYTES: usize = 6000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Llm,
    Knn,
    RouterR1,
}

impl Mode {
    pub fn of(strategy: &str) -> Option<Self> {
        match strategy {
            "llmrouter-llm-multiround" => Some(Self::Llm),
            "llmrouter-knn-multiround" => Some(Self::Knn),
            "llmrouter-router-r1" => Some(Self::RouterR1),
            _ => None,
        }
    }
}

/// A multi-round strategy's settings and sub-question router.
pub struct MultiRound {
    pub mode: Mode,
    pub strategy: String,
    /// `router_model`: the model group that decomposes, drives and answers.
    pub router_model: String,
    /// `max_subqueries` (default 3, at most 8), `max_rounds` for router-r1 (default 4).
    pub max_subqueries: usize,
    pub max_rounds: usize,
    /// `router_timeout` seconds per internal call (default 10).
    pub timeout: Duration,
    /// Routes each sub-question among the group's deployments (`causallm` for
    /// llm-multiround, `knn` for knn-multiround; unused by router-r1).
    pub sub_router: Box<dyn Router>,
    /// The candidates' names (upstream model ids) and descriptions, for the prompts.
    candidates: Vec<(String, String)>,
}

impl MultiRound {
    pub fn message(role: &str, content: impl Into<String>) -> Value {
        json!({"role": role, "content": content.into()})
    }

    /// The request decomposing `question` into at most `max_subqueries` lines.
    pub fn decompose_body(&self, question: &str) -> Value {
        json!({
            "model": self.router_model,
            "messages": [
                Self::message("system", format!(
                    "Split the user's question into at most {} self-contained sub-questions that together answer it. Write one sub-question per line, with no numbering and nothing else. If the question needs no splitting, write it back as one line.",
                    self.max_subqueries
                )),
                Self::message("user", cut(question, MAX_TEXT_BYTES)),
            ],
            "temperature": 0,
        })
    }

    /// The sub-questions of a decomposition reply (the question itself when there are none).
    pub fn sub_questions(&self, reply: &str, question: &str) -> Vec<String> {
        let subs: Vec<String> = reply
            .lines()
            .map(|l| {
                l.trim()
                    .trim_start_matches(|c: char| {
                        c.is_ascii_digit() || matches!(c, '.' | ')' | '-' | '*')
                    })
                    .trim()
                    .to_owned()
            })
            .filter(|l| !l.is_empty())
            .take(self.max_subqueries)
            .collect();
        if subs.is_empty() {
            vec![cut(question, MAX_TEXT_BYTES).to_owned()]
        } else {
            subs
        }
    }

    /// The messages of the final call: the question with the sub-answers gathered.
    pub fn aggregate_messages(
        &self,
        question: &str,
        answers: &[(String, String, String)],
    ) -> Vec<Value> {
        let mut notes = String::new();
        for (sub, model, answer) in answers {
            notes.push_str(&format!(
                "Sub-question: {sub}\nAnswer from {model}: {}\n\n",
                cut(answer, MAX_TEXT_BYTES)
            ));
        }
        vec![
            Self::message("system", "Answer the user's question. Notes gathered from other models follow; use what is correct in them."),
            Self::message("user", format!("{}\n\nNotes:\n{notes}", cut(question, MAX_TEXT_BYTES))),
        ]
    }

    /// Router-R1's instructions, listing the candidates.
    pub fn r1_system(&self) -> String {
        let mut s = String::from(
            "Answer the user's question. Think step by step. You may consult one of the language models below per turn by writing <search>MODEL: question</search>; the reply comes back as <information>...</information>. When you can answer, write <answer>your answer</answer>.\n\nModels:\n",
        );
        for (name, about) in &self.candidates {
            s.push_str(&format!("- {name}: {about}\n"));
        }
        s
    }

    /// A router-r1 turn: `Ok((model, question))` to consult, `Err(true)` when it answered,
    /// `Err(false)` when it did neither.
    pub fn r1_step(reply: &str) -> Result<(String, String), bool> {
        if reply.contains("<answer>") {
            return Err(true);
        }
        let Some(start) = reply.find("<search>") else {
            return Err(false);
        };
        let rest = &reply[start + "<search>".len()..];
        let inner = rest.split("</search>").next().unwrap_or(rest);
        match inner.split_once(':') {
            Some((m, q)) if !m.trim().is_empty() && !q.trim().is_empty() => {
                Ok((m.trim().to_owned(), q.trim().to_owned()))
            }
            _ => Err(false),
        }
    }
}

/// The router of multi-round groups: the first pick (which the request's admission is
/// computed on) goes through the fallback strategy; the rounds run in the handler.
pub struct MultiRoundRouter {
    rounds: Arc<MultiRound>,
    fallback: Box<dyn Router>,
}

impl MultiRoundRouter {
    pub fn new(
        mode: Mode,
        settings: &RouterSettings,
        deployments: &[Arc<CompiledDeployment>],
        models: &Arc<super::Models>,
        fallback: Box<dyn Router>,
    ) -> Self {
        let num = |k: &str| settings.arg_number(k);
        let sub_router: Box<dyn Router> = match mode {
            Mode::Knn => {
                let knn = RouterSettings {
                    routing_strategy: RoutingStrategy::LlmRouter("llmrouter-knn".into()),
                    ..settings.clone()
                };
                let fallback =
                    crate::routing::build(&super::fallback_settings(settings), deployments, models);
                match super::Spec::of(&knn) {
                    Some(spec) => Box::new(super::LearnedRouter::new(
                        models.slot(spec),
                        settings,
                        deployments,
                        fallback,
                        models,
                    )),
                    None => fallback,
                }
            }
            Mode::Llm | Mode::RouterR1 => Box::new(super::ask::LlmAsked::new(
                super::ask::STRATEGY,
                settings,
                deployments,
                crate::routing::build(&super::fallback_settings(settings), deployments, models),
            )),
        };
        let descriptions = super::ask::descriptions(settings);
        let mut candidates: Vec<(String, String)> = candidate_names(deployments)
            .into_iter()
            .map(|[_, last]| {
                let about = descriptions
                    .get(&last)
                    .and_then(|d| d.get("feature"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                (last, about)
            })
            .collect();
        candidates.sort();
        candidates.dedup();
        let strategy = match &settings.routing_strategy {
            RoutingStrategy::LlmRouter(n) => n.clone(),
            other => other.name().to_owned(),
        };
        Self {
            rounds: Arc::new(MultiRound {
                mode,
                strategy,
                router_model: settings
                    .arg_text("router_model")
                    .unwrap_or_default()
                    .to_owned(),
                max_subqueries: num("max_subqueries").map_or(3, |n| n.clamp(1.0, 8.0) as usize),
                max_rounds: num("max_rounds").map_or(4, |n| n.clamp(1.0, 8.0) as usize),
                timeout: Duration::from_secs_f64(
                    num("router_timeout")
                        .filter(|s| *s > 0.0 && *s <= 600.0)
                        .unwrap_or(10.0),
                ),
                sub_router,
                candidates,
            }),
            fallback,
        }
    }
}

impl Router for MultiRoundRouter {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        req: &RouteRequest,
        now_ms: u64,
    ) -> Option<usize> {
        if let Some(q) = &req.query {
            q.decide(Decision::plain(
                self.rounds.strategy.clone(),
                None,
                None,
                Arc::clone(&q.text),
            ));
        }
        self.fallback.pick(group, candidates, req, now_ms)
    }

    fn compound(&self) -> Option<crate::routing::Compound> {
        if self.rounds.router_model.is_empty() {
            return None;
        }
        Some(crate::routing::Compound::MultiRound(Arc::clone(
            &self.rounds,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1_turns() {
        assert_eq!(
            MultiRound::r1_step("I should ask. <search>gemma-2-9b-it: what is 2+2?</search>"),
            Ok(("gemma-2-9b-it".into(), "what is 2+2?".into()))
        );
        assert_eq!(MultiRound::r1_step("<answer>4</answer>"), Err(true));
        assert_eq!(MultiRound::r1_step("hmm"), Err(false));
        assert_eq!(MultiRound::r1_step("<search>no colon</search>"), Err(false));
    }
}
