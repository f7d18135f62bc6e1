//! `llmrouter-causallm`: an LLM chooses the candidate. Before the first pick the gateway
//! asks `routing_strategy_args.router_model` (one of its own model groups, through its own
//! providers, retries and fallbacks) which candidate should answer the query, within
//! `router_timeout`. The answer must name a candidate; a timeout, an error or an answer
//! naming none leaves the pick to the fallback strategy.

use std::sync::Arc;
use std::time::Duration;

use routeiq_proto::RouterSettings;
use serde_json::{json, Value};

use super::{Decision, Query};
use crate::routing::{RouteRequest, Router};
use crate::state::CompiledDeployment;

/// The strategy's name.
pub const STRATEGY: &str = "llmrouter-causallm";

/// Default `router_timeout` (seconds).
const DEFAULT_TIMEOUT_SECS: f64 = 5.0;
/// Bytes of the query shown to the router model.
const MAX_QUERY_BYTES: usize = 4000;

/// What to ask the router model, and how long to wait.
#[derive(Debug)]
pub struct Ask {
    pub strategy: String,
    pub router_model: String,
    pub timeout: Duration,
    /// The instructions, listing the candidates.
    system: String,
    /// Candidate names, longest first (so a name containing another wins).
    names: Vec<String>,
}

impl Ask {
    /// The request to send (OpenAI chat shape) for `query`.
    pub fn body(&self, query: &str) -> Value {
        json!({
            "model": self.router_model,
            "messages": [
                {"role": "system", "content": self.system},
                {"role": "user", "content": super::cut(query, MAX_QUERY_BYTES)},
            ],
            "max_tokens": 32,
            "temperature": 0,
        })
    }

    /// The candidate the answer names: the whole answer, trimmed of quotes and dots, else
    /// the longest candidate name it contains.
    pub fn candidate(&self, answer: &str) -> Option<String> {
        let a = answer
            .trim()
            .trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c == '.')
            .to_ascii_lowercase();
        self.names
            .iter()
            .find(|n| n.to_ascii_lowercase() == a)
            .or_else(|| {
                self.names
                    .iter()
                    .find(|n| a.contains(&n.to_ascii_lowercase()))
            })
            .cloned()
    }

    /// Records the router model's choice (or its absence) on the query.
    pub fn answered(&self, query: &Query, answer: Result<String, String>) {
        let choice = match answer {
            Ok(text) => {
                let c = self.candidate(&text);
                if c.is_none() {
                    tracing::debug!(router_model = %self.router_model, answer = %text, "the router model named no candidate");
                }
                c
            }
            Err(e) => {
                tracing::warn!(router_model = %self.router_model, error = %e, "router model call failed; routing with the fallback strategy");
                None
            }
        };
        query.set_choice(choice);
    }
}

/// The candidates' descriptions: `routing_strategy_args.llm_data_path`, LLMRouter's
/// `llm_data` JSON (`{name: {feature, ...}}`); empty when absent or unreadable.
pub fn descriptions(settings: &RouterSettings) -> serde_json::Map<String, Value> {
    settings
        .routing_strategy_args
        .get("llm_data_path")
        .and_then(Value::as_str)
        .and_then(|p| match std::fs::read(p) {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(e) => {
                tracing::warn!(path = p, error = %e, "llm_data_path unreadable; candidates go without descriptions");
                None
            }
        })
        .unwrap_or_default()
}

/// The router of `llmrouter-causallm` groups.
pub struct LlmAsked {
    ask: Arc<Ask>,
    /// Per deployment of the group, the names it may have among the candidates.
    names: Vec<[String; 2]>,
    fallback: Box<dyn Router>,
}

impl LlmAsked {
    pub fn new(
        strategy: &str,
        settings: &RouterSettings,
        deployments: &[Arc<CompiledDeployment>],
        fallback: Box<dyn Router>,
    ) -> Self {
        let names = super::candidate_names(deployments);
        let descriptions = descriptions(settings);
        let mut candidates: Vec<String> = names.iter().map(|n| n[1].clone()).collect();
        candidates.sort();
        candidates.dedup();
        let mut system = String::from(
            "You route user queries to the language model best suited to answer them, \
             weighing answer quality against price. Reply with the name of one candidate \
             and nothing else.\n\nCandidates:\n",
        );
        for c in &candidates {
            let about = descriptions
                .get(c)
                .and_then(|d| d.get("feature"))
                .and_then(Value::as_str)
                .unwrap_or("");
            system.push_str(&format!("- {c}: {about}\n"));
        }
        let mut by_length = candidates;
        by_length.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let timeout = settings
            .arg_number("router_timeout")
            .filter(|s| *s > 0.0 && *s <= 600.0)
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        Self {
            ask: Arc::new(Ask {
                strategy: strategy.to_owned(),
                router_model: settings
                    .arg_text("router_model")
                    .unwrap_or_default()
                    .to_owned(),
                timeout: Duration::from_secs_f64(timeout),
                system,
                names: by_length,
            }),
            names,
            fallback,
        }
    }
}

impl Router for LlmAsked {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        req: &RouteRequest,
        now_ms: u64,
    ) -> Option<usize> {
        let query = req.query.as_ref();
        let chosen = query.and_then(|q| q.choice()).and_then(|name| {
            candidates
                .iter()
                .find(|i| self.names[**i].contains(&name))
                .map(|i| (*i, name))
        });
        if let Some(q) = query {
            q.decide(Decision::plain(
                self.ask.strategy.clone(),
                chosen.as_ref().map(|_| self.ask.router_model.clone()),
                chosen.as_ref().map(|(_, n)| n.clone()),
                Arc::clone(&q.text),
            ));
        }
        match chosen {
            Some((i, _)) => Some(i),
            None => self.fallback.pick(group, candidates, req, now_ms),
        }
    }

    fn preparation(&self) -> super::super::Preparation {
        if self.ask.router_model.is_empty() {
            super::super::Preparation::None
        } else {
            super::super::Preparation::Ask(Arc::clone(&self.ask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(names: &[&str]) -> Ask {
        let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Ask {
            strategy: "llmrouter-causallm".into(),
            router_model: "r".into(),
            timeout: Duration::from_secs(1),
            system: String::new(),
            names,
        }
    }

    #[test]
    fn answers_name_candidates() {
        let a = ask(&["llama-3.1-8b", "llama-3.1-8b-instruct", "gemma"]);
        assert_eq!(a.candidate(" \"Gemma\".").as_deref(), Some("gemma"));
        assert_eq!(a.candidate("llama-3.1-8b").as_deref(), Some("llama-3.1-8b"));
        assert_eq!(
            a.candidate("I pick llama-3.1-8b-instruct for this")
                .as_deref(),
            Some("llama-3.1-8b-instruct")
        );
        assert_eq!(a.candidate("no idea"), None);
    }

    #[test]
    fn long_queries_are_cut_on_a_char_boundary() {
        let a = ask(&["x"]);
        let q = "é".repeat(3000);
        let body = a.body(&q);
        let sent = body["messages"][1]["content"].as_str().unwrap();
        assert!(sent.len() <= MAX_QUERY_BYTES && q.starts_with(sent));
    }
}
