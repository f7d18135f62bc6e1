//! Key budgets, reserve then settle: a key's `max_budget` holds within a data plane even
//! under concurrent requests.
//!
//! The key's view carries its spend as the control plane last sent it (the control plane
//! sends the new spend of every key with a budget after each ingestion batch). On top of
//! it this module tracks, per key, the cost of this data plane's requests not yet
//! reflected there (`local`) and the worst-case cost of requests in flight (`reserved`).
//! A request is admitted while `spend + local + reserved` is under `max_budget`; it
//! reserves its worst case (the limiter's token reservation priced with the deployment's
//! prices) and settles to its actual cost when it is logged. So a key ends at most one
//! request's cost over its budget: the last request admitted below it.
//!
//! When a newer spend arrives, the increase is taken to be this data plane's own reported
//! spend first (`local` shrinks by it, never below zero): spend is never counted twice,
//! and other data planes' spend shows once theirs exceeds this one's unreported spend.
//! A budget reset (the spend going down) clears `local`. Only a newer snapshot version
//! moves the account: a request still holding an older view of the key (it authenticated
//! before the last swap) is counted against the newest spend seen.

use std::sync::{Arc, Mutex};

use routeiq_proto::KeyHash;

use crate::holder::{Holder, HolderKind};

use crate::error::ApiError;
use crate::per_key::{lock, PerKey};

#[derive(Debug, Default)]
struct Account {
    /// The snapshot version of the newest view seen (none yet), and its spend.
    version: Option<u64>,
    base: f64,
    local: f64,
    reserved: f64,
    in_flight: u64,
    /// Whether crossing the soft budget was logged (until spend falls below it again).
    soft_logged: bool,
}

impl Account {
    /// Catches up with the spend of a key view of snapshot `version`, if it is newer.
    fn rebase(&mut self, spend: f64, version: u64) {
        if self.version.is_some_and(|seen| version <= seen) {
            return;
        }
        self.version = Some(version);
        if spend < self.base {
            self.local = 0.0; // a budget reset
        } else {
            self.local = (self.local - (spend - self.base)).max(0.0);
        }
        self.base = spend;
    }
}

#[derive(Debug, Default)]
pub struct Budgets {
    accounts: PerKey<Mutex<Account>>,
}

/// Whose budget a hold is on, for the remaining-budget gauges.
#[derive(Debug, Clone)]
pub struct Owner {
    pub kind: HolderKind,
    /// The account (a key's: its hash).
    pub hash: KeyHash,
    /// The key's alias (may be empty) or the scope's id.
    pub name: String,
    pub max_budget: Option<f64>,
}

/// What a settled hold leaves: its owner's spend as this data plane sees it, the request's
/// cost included.
#[derive(Debug)]
pub struct Settled {
    pub owner: Owner,
    pub spent: f64,
}

/// A request's hold on its key's budget, settled when the request is logged (or dropped:
/// settled at zero cost).
#[derive(Debug)]
pub struct Hold {
    account: Arc<Mutex<Account>>,
    owner: Owner,
    reserved: f64,
    settled: bool,
    /// The key's spend had reached its `soft_budget` (the request still passes).
    pub over_soft_budget: bool,
}

impl Budgets {
    fn account(&self, hash: &KeyHash) -> Arc<Mutex<Account>> {
        // Idle accounts with nothing unreported can go: they rebuild from the view.
        self.accounts.get(hash, |a| {
            let a = lock(a);
            a.in_flight > 0 || a.local > 0.0
        })
    }

    /// Admits a request of `key` (a key, team, user or organization, as seen in snapshot
    /// `version`) that may cost up to `worst_case` USD, or refuses it with 429
    /// `budget_exceeded` naming it. `None` when it has neither a budget nor a soft budget.
    pub fn admit(
        &self,
        key: &Holder<'_>,
        version: u64,
        worst_case: f64,
    ) -> Result<Option<Hold>, ApiError> {
        if !key.has_budget() {
            return Ok(None);
        }
        let max = key.max_budget.unwrap_or(f64::INFINITY);
        let account = self.account(key.hash);
        let mut a = lock(&account);
        a.rebase(key.spend, version);
        let spent = a.base + a.local;
        if spent + a.reserved >= max {
            return Err(ApiError::budget_exceeded(format!(
                "Budget has been exceeded for {}! Spend: {spent:.6} USD (requests in flight may \
                 cost up to {:.6} more), max budget: {max:.6} USD",
                key.label(),
                a.reserved
            )));
        }
        let over_soft_budget = key.soft_budget.is_some_and(|soft| spent >= soft);
        if over_soft_budget && !a.soft_logged {
            tracing::warn!(holder = %key.label(), account = ?key.hash, spent, soft_budget = key.soft_budget, "soft budget passed");
        }
        a.soft_logged = over_soft_budget;
        let worst_case = worst_case.max(0.0);
        a.reserved += worst_case;
        a.in_flight += 1;
        drop(a);
        Ok(Some(Hold {
            account,
            owner: Owner {
                kind: key.kind,
                hash: *key.hash,
                name: key.name.to_owned(),
                max_budget: key.max_budget,
            },
            reserved: worst_case,
            settled: false,
            over_soft_budget,
        }))
    }
}

impl Hold {
    /// Replaces the reservation with what the request cost.
    pub fn settle(mut self, cost: f64) -> Settled {
        let spent = self.finish(cost);
        let owner = Owner {
            name: std::mem::take(&mut self.owner.name),
            ..self.owner.clone()
        };
        Settled { owner, spent }
    }

    /// Returns the owner's spend after it.
    fn finish(&mut self, cost: f64) -> f64 {
        let mut a = lock(&self.account);
        if !self.settled {
            self.settled = true;
            a.reserved = (a.reserved - self.reserved).max(0.0);
            a.local += cost.max(0.0);
            a.in_flight -= 1;
        }
        a.base + a.local
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.settled {
            self.finish(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::VirtualKey;

    fn admit(
        b: &Budgets,
        k: &VirtualKey,
        version: u64,
        cost: f64,
    ) -> Result<Option<Hold>, ApiError> {
        b.admit(&Holder::key(k), version, cost)
    }

    fn key(spend: f64, max: f64) -> VirtualKey {
        VirtualKey {
            hash: KeyHash::of("sk-budget"),
            spend,
            max_budget: Some(max),
            ..VirtualKey::default()
        }
    }

    #[test]
    fn reserves_settles_and_rebases() {
        let b = Budgets::default();
        let k = key(0.0, 1.0);
        let h1 = admit(&b, &k, 1, 0.6).unwrap().unwrap();
        let h2 = admit(&b, &k, 1, 0.6).unwrap().unwrap(); // 0.6 < 1.0: admitted
        assert_eq!(admit(&b, &k, 1, 0.1).unwrap_err().status, 429); // 1.2 reserved
        h1.settle(0.3);
        // 0.6 spent here, unreported: the spend the remaining-budget gauges read.
        let settled = h2.settle(0.3);
        assert!((settled.spent - 0.6).abs() < 1e-9, "{}", settled.spent);
        assert_eq!(settled.owner.max_budget, Some(1.0));
        let h3 = admit(&b, &k, 1, 0.3).unwrap().unwrap();
        drop(h3); // costs nothing
                  // The control plane reports 0.5 of it (version 2): the rest (0.1) stays local.
        let h4 = admit(&b, &key(0.5, 1.0), 2, 0.3).unwrap().unwrap(); // 0.6 + 0.3
        h4.settle(0.35); // 0.95 spent
        assert!(admit(&b, &key(0.5, 1.0), 2, 0.01).is_ok()); // 0.95 < 1.0
        let h5 = admit(&b, &key(0.5, 1.0), 2, 0.1).unwrap().unwrap();
        h5.settle(0.1); // 1.05 spent
                        // A request still holding the version-1 view (spend 0) does not look like a reset.
        assert!(admit(&b, &key(0.0, 1.0), 1, 0.0).is_err());
        assert!(admit(&b, &key(1.0, 1.0), 3, 0.0).is_err());
        // A reset (newer view, spend back to zero): nothing local.
        assert!(admit(&b, &key(0.0, 1.0), 4, 0.9).is_ok());
        assert!(admit(&b, &key(0.0, 1.0), 4, 0.0).is_ok());
        assert!(admit(&b, &VirtualKey::default(), 4, 1.0).unwrap().is_none());
        // A soft budget: requests pass, marked as over it once spend reaches it.
        let soft = VirtualKey {
            hash: KeyHash::of("sk-soft"),
            soft_budget: Some(0.5),
            ..VirtualKey::default()
        };
        let h = admit(&b, &soft, 1, 0.1).unwrap().unwrap();
        assert!(!h.over_soft_budget);
        h.settle(0.6);
        assert!(admit(&b, &soft, 1, 0.1).unwrap().unwrap().over_soft_budget);
    }
}
