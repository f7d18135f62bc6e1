//! Model access: which models a virtual key may call, from the snapshot alone.
//!
//! A model is allowed when both the key's `models` and its team's `models` allow it; an
//! empty list allows every model. A list allows a model by its name, by an access group of
//! the model's deployments (`model_info.access_groups`), by a wildcard (`openai/*` allows
//! `openai/gpt-4o`, `*` allows everything), or by LiteLLM's `all-proxy-models`.

use routeiq_proto::VirtualKey;

use crate::error::ApiError;
use crate::state::LiveState;

/// LiteLLM's name for "every model on the proxy".
const ALL_MODELS: &str = "all-proxy-models";

/// Whose list refused the model, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Key,
    Team,
}

/// Which list (if any) refuses `model` for `key`.
pub fn refused_by(state: &LiveState, key: &VirtualKey, model: &str) -> Option<Scope> {
    if !allows(state, &key.models, model) {
        Some(Scope::Key)
    } else if !allows(state, &key.team_models, model) {
        Some(Scope::Team)
    } else {
        None
    }
}

/// Accepts the request's model for `key` (the master key and an open gateway: every
/// model), or a 403 naming the model and what is allowed.
pub fn check(state: &LiveState, key: Option<&VirtualKey>, model: &str) -> Result<(), ApiError> {
    let Some(key) = key else { return Ok(()) };
    match refused_by(state, key, model) {
        None => Ok(()),
        Some(Scope::Key) => Err(ApiError::model_not_allowed(model, "this key", &key.models)),
        Some(Scope::Team) => Err(ApiError::model_not_allowed(
            model,
            &format!("this key's team `{}`", key.team_id),
            &key.team_models,
        )),
    }
}

fn allows(state: &LiveState, list: &[String], model: &str) -> bool {
    list.is_empty()
        || list.iter().any(|entry| {
            entry == model
                || entry == ALL_MODELS
                || entry
                    .strip_suffix('*')
                    .is_some_and(|prefix| model.starts_with(prefix))
                || state.in_access_group(entry, model)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::{Deployment, ModelInfo, Snapshot};

    fn deployment(name: &str, groups: &[&str]) -> Deployment {
        Deployment {
            mock_response: Some("ok".into()),
            model_info: ModelInfo {
                access_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                ..ModelInfo::default()
            },
            ..Deployment::mock(&format!("{name}-1"), name)
        }
    }

    fn key(models: &[&str], team_models: &[&str]) -> VirtualKey {
        let list = |l: &[&str]| l.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>().into();
        VirtualKey {
            team_id: "t1".into(),
            models: list(models),
            team_models: list(team_models),
            ..VirtualKey::default()
        }
    }

    #[test]
    fn key_team_groups_and_wildcards() {
        let state = LiveState::prepare(
            Snapshot {
                deployments: vec![
                    deployment("gpt-4o", &["beta"]),
                    deployment("openai/gpt-4o-mini", &[]),
                    deployment("claude", &["beta", "anthropic"]),
                    deployment("cheap", &[]),
                ],
                ..Snapshot::default()
            },
            &Default::default(),
        )
        .unwrap();
        // (key models, team models, model, refused by)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a str, Option<Scope>);
        let cases: &[Case] = &[
            (&[], &[], "gpt-4o", None),
            (&["gpt-4o"], &[], "gpt-4o", None),
            (&["gpt-4o"], &[], "cheap", Some(Scope::Key)),
            (&["beta"], &[], "claude", None),
            (&["beta"], &[], "cheap", Some(Scope::Key)),
            (&["openai/*"], &[], "openai/gpt-4o-mini", None),
            (&["openai/*"], &[], "gpt-4o", Some(Scope::Key)),
            (&["*"], &[], "cheap", None),
            (&["all-proxy-models"], &[], "cheap", None),
            (&[], &["cheap"], "cheap", None),
            (&[], &["cheap"], "gpt-4o", Some(Scope::Team)),
            (&["gpt-4o"], &["beta"], "gpt-4o", None),
            (&["gpt-4o", "cheap"], &["beta"], "cheap", Some(Scope::Team)),
            (&["anthropic"], &["beta"], "claude", None),
            (&["anthropic"], &["beta"], "gpt-4o", Some(Scope::Key)),
        ];
        for (models, team, model, want) in cases {
            let k = key(models, team);
            assert_eq!(
                refused_by(&state, &k, model),
                *want,
                "{models:?} {team:?} {model}"
            );
        }
        let err = check(&state, Some(&key(&["gpt-4o"], &[])), "cheap").unwrap_err();
        assert_eq!(err.status, 403);
        assert!(err.message.contains("`cheap`") && err.message.contains("gpt-4o"));
        let err = check(&state, Some(&key(&[], &["cheap"])), "gpt-4o").unwrap_err();
        assert!(err.message.contains("team `t1`"), "{}", err.message);
        assert!(check(&state, None, "anything").is_ok());
    }
}
