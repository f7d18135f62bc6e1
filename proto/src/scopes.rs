//! Teams, users and organizations as the data plane enforces them: budgets and rate limits
//! that apply on top of their keys' own.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    Team = 0,
    User = 1,
    Organization = 2,
}

impl ScopeKind {
    /// Every kind, in discriminant order (`kind as usize` indexes it).
    pub const ALL: [Self; 3] = [Self::Team, Self::User, Self::Organization];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::User => "user",
            Self::Organization => "organization",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "team" => Some(Self::Team),
            "user" => Some(Self::User),
            "organization" => Some(Self::Organization),
            _ => None,
        }
    }
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A team, user or organization with something to enforce.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub kind: ScopeKind,
    pub id: String,
    pub max_budget: Option<f64>,
    /// Past this spend requests pass but count as over the soft budget (alerting).
    pub soft_budget: Option<f64>,
    /// Spend as of the snapshot version (USD).
    pub spend: f64,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
    /// Its `object_permission` (`None`: none).
    pub permission: Option<std::sync::Arc<crate::ObjectPermission>>,
}

impl Scope {
    /// Whether it has a budget, a limit or an object permission (the control plane sends
    /// only those).
    pub fn enforces(&self) -> bool {
        self.permission.is_some()
            || self.max_budget.is_some()
            || self.soft_budget.is_some()
            || self.rpm_limit.is_some()
            || self.tpm_limit.is_some()
            || self.max_parallel_requests.is_some()
    }
}
