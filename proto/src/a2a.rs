//! A2A agents the gateway fronts (LiteLLM's `agents:`): where each agent answers, the card
//! callers are shown, and the headers the gateway presents to it.

use crate::Secret;

/// One agent, reached at `/a2a/{name}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct A2aAgent {
    /// `agent_id`: the registry's id (an agent from `config.yaml` has its name).
    pub id: String,
    /// `agent_name`: its path segment, unique.
    pub name: String,
    /// `agent_card_params.url`: the agent's JSON-RPC endpoint.
    pub url: String,
    /// `agent_card_params` when it is a card (it has a `name`): served instead of the
    /// agent's own, as LiteLLM does. `None`: the agent's own card, fetched from
    /// `{url}/.well-known/agent-card.json`.
    pub card: Option<serde_json::Value>,
    /// Sent on every request to the agent (lowercase names): `litellm_params.api_key` as
    /// `authorization: Bearer ...`, and `litellm_params.headers`.
    pub headers: Vec<(String, Secret)>,
    /// `litellm_params.make_public`: every key may call it, even where agent access is
    /// denied by default (`general_settings.agent_access_default_deny`).
    pub public: bool,
    /// `agent_access_groups`: keys and teams granted one of these groups may call it.
    pub access_groups: Vec<String>,
    /// `litellm_params.cost_per_query`: what each call the agent answers costs (USD).
    pub cost_per_query: f64,
}

impl A2aAgent {
    /// Whether `name` may name an agent: it is a path segment of the gateway's URLs.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && name != "."
            && name != ".."
    }
}
