//! `llmrouter-automix` (AutoMix, Madaan et al. 2023): answer with the small model, have
//! the small model verify its own answer, and escalate to the large model when the
//! verification's confidence is below a threshold.
//!
//! The router picks the small candidate (the large one when the small one is unavailable,
//! or for streams, which cannot be verified before the client sees them); the chat
//! handler runs the verification and the escalation (`handlers::cascade`) with this
//! module's [`Cascade`].

use std::sync::Arc;
use std::time::Duration;

use routeiq_proto::RouterSettings;
use serde_json::{json, Value};

use super::{candidate_names, cut, Decision};
use crate::routing::{RouteRequest, Router};
use crate::state::CompiledDeployment;

pub const STRATEGY: &str = "llmrouter-automix";

/// Bytes of the question and of the draft answer shown to the verifier.
const MAX_VERIFY_BYTES: usize = 6000;

/// The cascade's settings (`routing_strategy_args`).
#[derive(Debug, Clone)]
pub struct Cascade {
    /// `small_model`, `large_model`: candidate names (upstream model ids).
    pub small: String,
    pub large: String,
    /// `verify_threshold` (default 0.5): the least confidence that keeps the draft.
    pub threshold: f64,
    /// `verify_samples` (default 1, at most 8): verifications asked; the confidence is the
    /// share that says yes (sampled at temperature 1 when more than one).
    pub samples: u32,
    /// `verify_timeout` seconds (default 10): no verdict in time escalates.
    pub timeout: Duration,
}

impl Cascade {
    fn of(settings: &RouterSettings) -> Self {
        let text = |k: &str| settings.arg_text(k).unwrap_or_default().to_owned();
        let num = |k: &str| settings.arg_number(k);
        Self {
            small: text("small_model"),
            large: text("large_model"),
            threshold: num("verify_threshold").unwrap_or(0.5).clamp(0.0, 1.0),
            samples: num("verify_samples").map_or(1, |n| n.clamp(1.0, 8.0) as u32),
            timeout: Duration::from_secs_f64(
                num("verify_timeout")
                    .filter(|s| *s > 0.0 && *s <= 600.0)
                    .unwrap_or(10.0),
            ),
        }
    }

    /// The verification request for the draft `answer` to `question`.
    pub fn verify_body(&self, question: &str, answer: &str) -> Value {
        json!({
            "model": self.small,
            "messages": [
                {"role": "system", "content": "You check answers. Given a question and a proposed answer, reply Yes if the answer is correct and complete, otherwise No. Reply with one word."},
                {"role": "user", "content": format!(
                    "Question: {}\n\nProposed answer: {}\n\nIs the proposed answer correct?",
                    cut(question, MAX_VERIFY_BYTES), cut(answer, MAX_VERIFY_BYTES)
                )},
            ],
            "max_tokens": 4,
            "temperature": if self.samples > 1 { 1.0 } else { 0.0 },
        })
    }

    /// Whether a verification reply says yes.
    pub fn says_yes(reply: &str) -> bool {
        reply
            .trim_start_matches(|c: char| !c.is_alphanumeric())
            .get(..3)
            .is_some_and(|w| w.eq_ignore_ascii_case("yes"))
    }
}

/// The router of `llmrouter-automix` groups.
pub struct AutoMix {
    cascade: Arc<Cascade>,
    names: Vec<[String; 2]>,
    fallback: Box<dyn Router>,
}

impl AutoMix {
    pub fn new(
        settings: &RouterSettings,
        deployments: &[Arc<CompiledDeployment>],
        fallback: Box<dyn Router>,
    ) -> Self {
        Self {
            cascade: Arc::new(Cascade::of(settings)),
            names: candidate_names(deployments),
            fallback,
        }
    }

    fn find(&self, candidates: &[usize], name: &str) -> Option<usize> {
        candidates
            .iter()
            .copied()
            .find(|i| !name.is_empty() && self.names[*i].iter().any(|n| n == name))
    }
}

impl Router for AutoMix {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        req: &RouteRequest,
        now_ms: u64,
    ) -> Option<usize> {
        let c = &self.cascade;
        let order = if req.stream {
            [&c.large, &c.small]
        } else {
            [&c.small, &c.large]
        };
        let chosen = order
            .iter()
            .find_map(|name| self.find(candidates, name).map(|i| (i, (*name).clone())));
        if let Some(q) = &req.query {
            q.decide(Decision::plain(
                STRATEGY.to_owned(),
                chosen.as_ref().map(|_| "cascade".to_owned()),
                chosen.as_ref().map(|(_, n)| n.clone()),
                Arc::clone(&q.text),
            ));
        }
        match chosen {
            Some((i, _)) => Some(i),
            None => self.fallback.pick(group, candidates, req, now_ms),
        }
    }

    fn compound(&self) -> Option<crate::routing::Compound> {
        Some(crate::routing::Compound::AutoMix(Arc::clone(&self.cascade)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert!(Cascade::says_yes("Yes."));
        assert!(Cascade::says_yes(" **yes** it is"));
        assert!(!Cascade::says_yes("No"));
        assert!(!Cascade::says_yes("mock reply to: Question"));
        assert!(!Cascade::says_yes(""));
    }
}
