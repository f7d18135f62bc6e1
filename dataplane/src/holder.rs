//! Who a budget or a rate limit belongs to: a virtual key, its budget on one model
//! (`model_max_budget`), or its team, user or organization (`Scope`). `budgets` and
//! `limits` enforce a [`Holder`] whatever it is; a request is admitted by its key and by
//! each of those with something to enforce, and the first that refuses names itself in the
//! error.

use routeiq_proto::{KeyHash, ModelBudget, Scope, ScopeKind, VirtualKey};

/// A scope of the live state, with the account its counters go by. Accounts name the
/// counters of holders other than keys beside the keys' own: digests of labels that key
/// texts do not produce in practice (keys are digests of the key itself).
#[derive(Debug)]
pub struct ScopeEntry {
    pub scope: Scope,
    pub account: KeyHash,
}

impl ScopeEntry {
    pub fn new(scope: Scope) -> Self {
        Self {
            account: KeyHash::of(&format!(
                "routeiq-scope\u{0}{}\u{0}{}",
                scope.kind, scope.id
            )),
            scope,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderKind {
    Key,
    /// A key's budget on one model (`model_max_budget`); `name` is the model.
    KeyModel,
    Scope(ScopeKind),
}

/// A view of what one holder enforces, borrowed for one admission.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub kind: HolderKind,
    /// The key's alias (may be empty) or the scope's id.
    pub name: &'a str,
    /// The account its counters and budget are kept under.
    pub hash: &'a KeyHash,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub spend: f64,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
}

impl<'a> Holder<'a> {
    pub fn key(k: &'a VirtualKey) -> Self {
        Self {
            kind: HolderKind::Key,
            name: &k.alias,
            hash: &k.hash,
            max_budget: k.max_budget,
            soft_budget: k.soft_budget,
            spend: k.spend,
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            max_parallel_requests: k.max_parallel_requests,
        }
    }

    /// The key's budget on one model. `account`: [`Self::model_account`] of the two.
    pub fn key_model(b: &'a ModelBudget, account: &'a KeyHash) -> Self {
        Self {
            kind: HolderKind::KeyModel,
            name: &b.model,
            hash: account,
            max_budget: Some(b.max_budget),
            soft_budget: None,
            spend: b.spend,
            rpm_limit: None,
            tpm_limit: None,
            max_parallel_requests: None,
        }
    }

    /// The account of a key's budget on `model`.
    pub fn model_account(key: &KeyHash, model: &str) -> KeyHash {
        KeyHash::of(&format!(
            "routeiq-key-model\u{0}{}\u{0}{model}",
            key.to_hex()
        ))
    }

    pub fn scope(e: &'a ScopeEntry) -> Self {
        let s = &e.scope;
        Self {
            kind: HolderKind::Scope(s.kind),
            name: &s.id,
            hash: &e.account,
            max_budget: s.max_budget,
            soft_budget: s.soft_budget,
            spend: s.spend,
            rpm_limit: s.rpm_limit,
            tpm_limit: s.tpm_limit,
            max_parallel_requests: s.max_parallel_requests,
        }
    }

    /// How errors name it: `this key`, `team \`t1\``, ...
    pub fn label(&self) -> String {
        match self.kind {
            HolderKind::Key => "this key".to_owned(),
            HolderKind::KeyModel => format!("this key on model `{}`", self.name),
            HolderKind::Scope(kind) => format!("{kind} `{}`", self.name),
        }
    }

    pub fn has_limits(&self) -> bool {
        self.rpm_limit.is_some() || self.tpm_limit.is_some() || self.max_parallel_requests.is_some()
    }

    pub fn has_budget(&self) -> bool {
        self.max_budget.is_some() || self.soft_budget.is_some()
    }
}
