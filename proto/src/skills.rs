//! Skills (Anthropic's Skills API, `/v1/skills`): the registry's skills as a data plane
//! needs them. A skill's bundle is uploaded by the control plane to each Anthropic
//! deployment; a request that loads the skill (`container.skills`) names, on the deployment
//! that serves it, that deployment's copy.

/// One skill of the registry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Skill {
    /// The registry's id (`skill_...`), the one clients name.
    pub id: String,
    /// Its versions, oldest first: the last is the one `latest` (or no version) names.
    pub versions: Vec<String>,
    /// Every version's copy on every deployment it has reached so far.
    pub copies: Vec<SkillCopy>,
}

/// One version of a skill as uploaded to one deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SkillCopy {
    pub version: String,
    pub deployment_id: String,
    /// The skill's id at the deployment's provider.
    pub upstream_skill_id: String,
    /// The version's id there.
    pub upstream_version: String,
}

/// Why a skill reference cannot be served by a deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkillRefError {
    #[error("skill `{skill}` has no version `{version}`")]
    NoVersion { skill: String, version: String },
    #[error(
        "skill `{skill}` version `{version}` has not reached deployment `{deployment}` yet (the control plane uploads it to every Anthropic deployment; try again shortly)"
    )]
    NotUploaded {
        skill: String,
        version: String,
        deployment: String,
    },
}

impl Skill {
    /// The copy on `deployment` of `version` (`None` or `latest`: the latest version).
    pub fn copy_on(
        &self,
        version: Option<&str>,
        deployment: &str,
    ) -> Result<&SkillCopy, SkillRefError> {
        let version = match version {
            None | Some("latest") => self.versions.last().map_or("", String::as_str),
            Some(v) => v,
        };
        if let Some(c) = self
            .copies
            .iter()
            .find(|c| c.version == version && c.deployment_id == deployment)
        {
            return Ok(c);
        }
        if self.versions.iter().any(|v| v == version) {
            Err(SkillRefError::NotUploaded {
                skill: self.id.clone(),
                version: version.to_owned(),
                deployment: deployment.to_owned(),
            })
        } else {
            Err(SkillRefError::NoVersion {
                skill: self.id.clone(),
                version: version.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(version: &str, deployment: &str) -> SkillCopy {
        SkillCopy {
            version: version.into(),
            deployment_id: deployment.into(),
            upstream_skill_id: format!("up_{deployment}"),
            upstream_version: format!("{version}_{deployment}"),
        }
    }

    #[test]
    fn latest_and_pinned_versions_resolve_per_deployment() {
        let s = Skill {
            id: "skill_a".into(),
            versions: vec!["1".into(), "2".into(), "3".into()],
            copies: vec![copy("1", "d1"), copy("3", "d1"), copy("1", "d2")],
        };
        assert_eq!(s.copy_on(None, "d1").unwrap().upstream_version, "3_d1");
        assert_eq!(
            s.copy_on(Some("latest"), "d1").unwrap().upstream_version,
            "3_d1"
        );
        assert_eq!(
            s.copy_on(Some("1"), "d2").unwrap().upstream_skill_id,
            "up_d2"
        );
        assert!(matches!(
            s.copy_on(None, "d2"),
            Err(SkillRefError::NotUploaded { .. })
        ));
        assert!(matches!(
            s.copy_on(Some("2"), "d1"),
            Err(SkillRefError::NotUploaded { .. })
        ));
        assert!(matches!(
            s.copy_on(Some("9"), "d1"),
            Err(SkillRefError::NoVersion { .. })
        ));
    }
}
