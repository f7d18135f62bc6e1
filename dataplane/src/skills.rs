//! Skills a Messages request loads (`container.skills`, Anthropic's Skills API). A skill of
//! the gateway's registry is named by its registry id; on the Anthropic deployment that
//! serves the request it becomes that deployment's copy (the control plane uploads every
//! version to every Anthropic deployment). Anthropic's own skills and ids the registry does
//! not know pass through as they are. The Skills and code-execution betas are added to the
//! upstream call (`providers::anthropic`).

use std::collections::HashMap;

use routeiq_proto::{ProviderKind, Skill, SkillRefError};
use serde_json::Value;

use crate::error::{ApiError, ClientApi, ErrorKind};
use crate::state::CompiledDeployment;

/// The betas a request that loads skills needs.
pub const BETAS: &str = "code-execution-2025-08-25,skills-2025-10-02";

/// A request's `container`, when it loads skills.
pub struct Loads {
    container: Value,
    /// Indexes into `container.skills` of the registry's skills, with their skill.
    registry: Vec<(usize, Skill)>,
}

impl Loads {
    /// The skills `container` loads; `None` when it loads none. Only Anthropic's Messages
    /// API carries them: an OpenAI-format request naming skills is refused.
    pub fn of(
        container: Option<Value>,
        client: ClientApi,
        skills: &HashMap<String, Skill>,
    ) -> Result<Option<Self>, ApiError> {
        let Some(container) = container else {
            return Ok(None);
        };
        let Some(list) = container.get("skills") else {
            return Ok(None);
        };
        let Value::Array(list) = list else {
            return Err(ApiError::bad_request("`container.skills` must be an array")
                .with_param("container"));
        };
        if list.is_empty() {
            return Ok(None);
        }
        if client != ClientApi::Anthropic {
            return Err(ApiError::unsupported(
                "skills (`container.skills`) are loaded through Anthropic's Messages API: POST /v1/messages",
            )
            .with_param("container"));
        }
        let mut registry = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let id = entry
                .get("skill_id")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`container.skills[{i}].skill_id` is required"))
                        .with_param("container")
                })?;
            let custom = entry.get("type").and_then(Value::as_str) != Some("anthropic");
            if let Some(skill) = skills.get(id).filter(|_| custom) {
                registry.push((i, skill.clone()));
            }
        }
        Ok(Some(Self {
            container,
            registry,
        }))
    }

    /// The registry's skill ids the request loads.
    pub fn registry_ids(&self) -> impl Iterator<Item = &str> {
        self.registry.iter().map(|(_, s)| s.id.as_str())
    }

    /// The container as deployment `d` must see it: each registry skill named by its copy
    /// on `d`.
    pub fn container_on(&self, d: &CompiledDeployment) -> Result<Value, ApiError> {
        if d.deployment.provider != ProviderKind::Anthropic {
            return Err(ApiError::unsupported(format!(
                "skills run on Anthropic deployments; {} is a {} deployment",
                d.label,
                d.deployment.provider.as_str()
            ))
            .with_param("container"));
        }
        let mut container = self.container.clone();
        for (i, skill) in &self.registry {
            let Some(entry) = container["skills"].get_mut(*i) else {
                continue;
            };
            let version = entry.get("version").and_then(Value::as_str);
            let copy = skill
                .copy_on(version, &d.deployment.id.0)
                .map_err(|e| match e {
                    SkillRefError::NoVersion { .. } => {
                        ApiError::not_found(e.to_string()).with_param("container")
                    }
                    SkillRefError::NotUploaded { .. } => {
                        ApiError::upstream(503, ErrorKind::Unavailable, e.to_string())
                            .with_retry_after(Some(5))
                    }
                })?;
            entry["skill_id"] = Value::String(copy.upstream_skill_id.clone());
            entry["version"] = Value::String(copy.upstream_version.clone());
            entry["type"] = Value::String("custom".into());
        }
        Ok(container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::SkillCopy;
    use serde_json::json;

    fn registry() -> HashMap<String, Skill> {
        let skill = Skill {
            id: "skill_gw".into(),
            versions: vec!["100".into(), "200".into()],
            copies: vec![SkillCopy {
                version: "200".into(),
                deployment_id: "d1".into(),
                upstream_skill_id: "skill_up".into(),
                upstream_version: "9".into(),
            }],
        };
        HashMap::from([(skill.id.clone(), skill)])
    }

    #[test]
    fn only_requests_that_load_skills_are_touched() {
        let r = registry();
        assert!(Loads::of(None, ClientApi::Anthropic, &r).unwrap().is_none());
        let empty = json!({"skills": []});
        assert!(Loads::of(Some(empty.clone()), ClientApi::OpenAi, &r)
            .unwrap()
            .is_none());
        let bad = json!({"skills": "x"});
        assert_eq!(
            Loads::of(Some(bad), ClientApi::Anthropic, &r)
                .err()
                .unwrap()
                .status,
            400
        );
        let some = json!({"skills": [{"type": "anthropic", "skill_id": "pptx"}]});
        assert_eq!(
            Loads::of(Some(some.clone()), ClientApi::OpenAi, &r)
                .err()
                .unwrap()
                .status,
            400
        );
        let l = Loads::of(Some(some), ClientApi::Anthropic, &r)
            .unwrap()
            .unwrap();
        assert_eq!(l.registry_ids().count(), 0);
        let named = json!({"skills": [{"type": "anthropic", "skill_id": "skill_gw"}]});
        let l = Loads::of(Some(named), ClientApi::Anthropic, &r)
            .unwrap()
            .unwrap();
        assert_eq!(
            l.registry_ids().count(),
            0,
            "Anthropic's skills are not ours"
        );
    }
}
