//! LiteLLM's default `simple-shuffle`: a random deployment, weighted by `weight`, else by
//! `rpm`, else by `tpm` when the deployments give them; uniform otherwise.

use std::sync::Arc;

use super::Router;
use crate::state::CompiledDeployment;

pub struct SimpleShuffle {
    /// Cumulative weights; empty for a uniform pick.
    cumulative: Vec<f64>,
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
                let mut total = 0.0;
                let cumulative = deployments
                    .iter()
                    .map(|d| {
                        total += pick(d).filter(|w| w.is_finite() && *w > 0.0).unwrap_or(0.0);
                        total
                    })
                    .collect::<Vec<_>>();
                if total > 0.0 {
                    return Self { cumulative };
                }
            }
        }
        Self {
            cumulative: Vec::new(),
        }
    }
}

impl Router for SimpleShuffle {
    fn pick(&self, deployments: &[Arc<CompiledDeployment>]) -> Option<usize> {
        match deployments.len() {
            0 => None,
            1 => Some(0),
            n if self.cumulative.len() != n => Some(fastrand::usize(..n)),
            n => {
                let total = self.cumulative[n - 1];
                let x = fastrand::f64() * total;
                Some(self.cumulative.partition_point(|c| *c <= x).min(n - 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::{Deployment, DeploymentId, ModelInfo, ProviderKind};
    use std::time::Duration;

    fn dep(weight: Option<f64>, rpm: Option<u64>) -> Arc<CompiledDeployment> {
        Arc::new(CompiledDeployment {
            deployment: Deployment {
                id: DeploymentId(format!("{weight:?}{rpm:?}")),
                model_name: "m".into(),
                provider: ProviderKind::Mock,
                upstream_model: "m".into(),
                api_base: String::new(),
                api_key: None,
                api_version: None,
                timeout: None,
                rpm,
                tpm: None,
                weight,
                mock_response: None,
                model_info: ModelInfo::default(),
            },
            target: None,
            timeout: Duration::from_secs(1),
            prices: Default::default(),
        })
    }

    fn shares(ds: &[Arc<CompiledDeployment>], n: usize) -> Vec<f64> {
        let r = SimpleShuffle::new(ds);
        let mut counts = vec![0usize; ds.len()];
        for _ in 0..n {
            counts[r.pick(ds).unwrap()] += 1;
        }
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let ds = [dep(Some(1.0), None), dep(Some(3.0), None)];
        let s = shares(&ds, 40_000);
        assert!((s[1] - 0.75).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn rpm_is_used_when_no_weight() {
        let ds = [dep(None, Some(100)), dep(None, Some(900))];
        let s = shares(&ds, 40_000);
        assert!((s[1] - 0.9).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn uniform_without_hints() {
        let ds = [dep(None, None), dep(None, None), dep(None, None)];
        for share in shares(&ds, 30_000) {
            assert!((share - 1.0 / 3.0).abs() < 0.02);
        }
        assert_eq!(SimpleShuffle::new(&[]).pick(&[]), None);
    }
}
