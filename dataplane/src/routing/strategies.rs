//! LiteLLM's routing strategies. Each picks among the candidates the group's filters left;
//! ties are broken at random so equal deployments share the load.

use std::sync::Arc;

use super::{has_capacity, RouteRequest, Router};
use crate::state::CompiledDeployment;

/// The candidate with the smallest `key`, ties broken uniformly at random (reservoir
/// sampling, no allocation).
fn argmin_by<K: PartialOrd>(
    candidates: &[usize],
    mut key: impl FnMut(usize) -> K,
) -> Option<usize> {
    let mut best: Option<(usize, K)> = None;
    let mut ties = 0u32;
    for &i in candidates {
        let k = key(i);
        match &best {
            Some((_, b)) if k > *b => {}
            Some((_, b)) if k == *b => {
                ties += 1;
                if fastrand::u32(..=ties) == 0 {
                    best = Some((i, k));
                }
            }
            _ => {
                ties = 0;
                best = Some((i, k));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// `simple-shuffle`: random, weighted by `weight`, else `rpm`, else `tpm` when the
/// deployments give them; uniform otherwise.
pub struct SimpleShuffle {
    /// Weight per deployment; empty for uniform picks.
    weights: Vec<f64>,
}

impl SimpleShuffle {
    pub fn new(deployments: &[Arc<CompiledDeployment>]) -> Self {
        let pickers: [fn(&CompiledDeployment) -> Option<f64>; 3] = [
            |d| d.deployment.weight,
            |d| d.deployment.rpm.map(|v| v as f64),
            |d| d.deployment.tpm.map(|v| v as f64),
        ];
        for pick in pickers {
            if deployments.iter().any(|d| pick(d).is_some()) {
                let weights: Vec<f64> = deployments
                    .iter()
                    .map(|d| pick(d).filter(|w| w.is_finite() && *w > 0.0).unwrap_or(0.0))
                    .collect();
                if weights.iter().sum::<f64>() > 0.0 {
                    return Self { weights };
                }
            }
        }
        Self {
            weights: Vec::new(),
        }
    }
}

impl Router for SimpleShuffle {
    fn pick(
        &self,
        _group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        _req: &RouteRequest,
        _now_ms: u64,
    ) -> Option<usize> {
        if candidates.len() <= 1 || self.weights.is_empty() {
            return candidates
                .get(fastrand::usize(..candidates.len().max(1)))
                .copied();
        }
        let total: f64 = candidates.iter().map(|i| self.weights[*i]).sum();
        if total <= 0.0 {
            return Some(candidates[fastrand::usize(..candidates.len())]);
        }
        let mut x = fastrand::f64() * total;
        for &i in candidates {
            x -= self.weights[i];
            if x < 0.0 {
                return Some(i);
            }
        }
        candidates
            .iter()
            .rev()
            .find(|i| self.weights[**i] > 0.0)
            .copied()
    }
}

/// `least-busy`: the fewest requests in flight from this data plane.
pub struct LeastBusy;

impl Router for LeastBusy {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        _req: &RouteRequest,
        _now_ms: u64,
    ) -> Option<usize> {
        argmin_by(candidates, |i| group[i].health.in_flight())
    }
}

/// `latency-based-routing`: the lowest moving average of latency (time to first token for
/// streams); any deployment within `lowest_latency_buffer` (a fraction) of the lowest may
/// be picked, at random. Deployments not measured yet (or not for `ttl_ms`) go first, so
/// each gets measured; failed attempts count as slow ones.
pub struct LatencyBased {
    pub buffer: f64,
    pub ttl_ms: u64,
}

impl Router for LatencyBased {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        req: &RouteRequest,
        now_ms: u64,
    ) -> Option<usize> {
        let latency = |i: usize| group[i].health.latency(req.stream, now_ms, self.ttl_ms);
        let best = argmin_by(candidates, latency)?;
        let lowest = latency(best);
        if self.buffer <= 0.0 || lowest == 0.0 {
            return Some(best);
        }
        // One pass, each latency read once (others update them concurrently): a uniform
        // pick among those within the buffer, by reservoir sampling.
        let limit = lowest * (1.0 + self.buffer);
        let mut chosen = best;
        let mut seen = 0u32;
        for &i in candidates {
            if latency(i) <= limit {
                seen += 1;
                if fastrand::u32(..seen) == 0 {
                    chosen = i;
                }
            }
        }
        Some(chosen)
    }
}

/// `cost-based-routing`: the cheapest deployment by its prices per token (input plus
/// output).
pub struct CostBased;

impl Router for CostBased {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        _req: &RouteRequest,
        _now_ms: u64,
    ) -> Option<usize> {
        argmin_by(candidates, |i| {
            let p = &group[i].prices;
            p.input + p.output
        })
    }
}

/// `usage-based-routing-v2`: the lowest TPM used this minute, among deployments whose
/// `rpm`/`tpm` leave room for the request (usage across data planes when Redis is shared).
pub struct UsageBased;

impl Router for UsageBased {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        req: &RouteRequest,
        now_ms: u64,
    ) -> Option<usize> {
        let mut room = super::Candidates::new();
        room.extend(
            candidates
                .iter()
                .copied()
                .filter(|i| has_capacity(&group[*i], req, now_ms)),
        );
        argmin_by(&room, |i| group[i].health.usage(now_ms).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::health::DeploymentHealth;
    use routeiq_proto::Deployment;
    use std::time::Duration;

    pub fn dep(id: &str, weight: Option<f64>, rpm: Option<u64>) -> Arc<CompiledDeployment> {
        let deployment = Deployment {
            rpm,
            weight,
            ..Deployment::mock(id, "m")
        };
        Arc::new(CompiledDeployment {
            label: CompiledDeployment::label_of(&deployment),
            deployment,
            target: None,
            timeout: Duration::from_secs(1),
            stream_timeout: Duration::from_secs(1),
            prices: Default::default(),
            health: Arc::new(DeploymentHealth::default()),
            format: crate::translate::ChatFormat::OpenAi,
            text_completions: false,
            responses_api: false,
            credentials: None,
            params: Default::default(),
        })
    }

    fn shares(r: &dyn Router, ds: &[Arc<CompiledDeployment>], n: usize) -> Vec<f64> {
        let all: Vec<usize> = (0..ds.len()).collect();
        let mut counts = vec![0usize; ds.len()];
        for _ in 0..n {
            counts[r.pick(ds, &all, &RouteRequest::default(), 0).unwrap()] += 1;
        }
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    }

    #[test]
    fn shuffle_follows_weights_then_rpm_else_uniform() {
        let ds = [dep("a", Some(1.0), None), dep("b", Some(3.0), None)];
        let s = shares(&SimpleShuffle::new(&ds), &ds, 40_000);
        assert!((s[1] - 0.75).abs() < 0.02, "{s:?}");
        let ds = [dep("a", None, Some(100)), dep("b", None, Some(900))];
        let s = shares(&SimpleShuffle::new(&ds), &ds, 40_000);
        assert!((s[1] - 0.9).abs() < 0.02, "{s:?}");
        let ds = [
            dep("a", None, None),
            dep("b", None, None),
            dep("c", None, None),
        ];
        for share in shares(&SimpleShuffle::new(&ds), &ds, 30_000) {
            assert!((share - 1.0 / 3.0).abs() < 0.02);
        }
        // Weighted among the candidates left.
        let ds = [
            dep("a", Some(1.0), None),
            dep("b", Some(3.0), None),
            dep("c", Some(4.0), None),
        ];
        let r = SimpleShuffle::new(&ds);
        let mut c = 0;
        for _ in 0..20_000 {
            if r.pick(&ds, &[0, 2], &RouteRequest::default(), 0) == Some(2) {
                c += 1;
            }
        }
        assert!((c as f64 / 20_000.0 - 0.8).abs() < 0.02);
    }

    #[test]
    fn least_busy_picks_the_idlest_and_spreads_ties() {
        let ds = [
            dep("a", None, None),
            dep("b", None, None),
            dep("c", None, None),
        ];
        ds[0].health.start(0, 0);
        ds[1].health.start(0, 0);
        ds[1].health.start(0, 0);
        assert_eq!(
            LeastBusy.pick(&ds, &[0, 1, 2], &RouteRequest::default(), 0),
            Some(2)
        );
        ds[2].health.start(0, 0);
        let s = shares(&LeastBusy, &ds, 10_000);
        assert!(s[1] == 0.0 && (s[0] - 0.5).abs() < 0.03, "{s:?}");
    }

    #[test]
    fn latency_prefers_fast_unmeasured_first_and_buffers() {
        let ds = [
            dep("a", None, None),
            dep("b", None, None),
            dep("c", None, None),
        ];
        ds[0]
            .health
            .record_latency(Duration::from_millis(100), None);
        ds[1]
            .health
            .record_latency(Duration::from_millis(300), None);
        let strict = LatencyBased {
            buffer: 0.0,
            ttl_ms: 60_000,
        };
        assert_eq!(
            strict.pick(&ds, &[0, 1, 2], &RouteRequest::default(), 0),
            Some(2)
        );
        assert_eq!(
            strict.pick(&ds, &[0, 1], &RouteRequest::default(), 0),
            Some(0)
        );
        ds[2]
            .health
            .record_latency(Duration::from_millis(120), None);
        let buffered = LatencyBased {
            buffer: 0.5,
            ttl_ms: 60_000,
        };
        let s = shares(&buffered, &ds, 20_000);
        assert!(s[1] == 0.0 && (s[0] - 0.5).abs() < 0.03, "{s:?}");
    }

    #[test]
    fn usage_based_skips_full_and_picks_least_used() {
        let ds = [dep("a", None, Some(2)), dep("b", None, None)];
        ds[1].health.start(500, 0);
        ds[0].health.start(10, 0);
        assert_eq!(
            UsageBased.pick(&ds, &[0, 1], &RouteRequest::default(), 0),
            Some(0)
        );
        ds[0].health.start(10, 0);
        assert_eq!(
            UsageBased.pick(&ds, &[0, 1], &RouteRequest::default(), 0),
            Some(1)
        );
    }
}
