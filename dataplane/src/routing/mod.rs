//! Choosing a deployment within a model group. One implementation per strategy behind the
//! [`Router`] trait.

mod simple_shuffle;

use std::sync::Arc;

use routeiq_proto::RoutingStrategy;

use crate::state::CompiledDeployment;

pub use simple_shuffle::SimpleShuffle;

pub trait Router: Send + Sync {
    /// Index of the chosen deployment in `deployments`, or `None` if there is none.
    fn pick(&self, deployments: &[Arc<CompiledDeployment>]) -> Option<usize>;
}

/// The router for a model group. Strategies not implemented yet fall back to
/// simple-shuffle (the config loader has warned about them).
pub fn build(
    strategy: &RoutingStrategy,
    deployments: &[Arc<CompiledDeployment>],
) -> Box<dyn Router> {
    match strategy {
        RoutingStrategy::SimpleShuffle | RoutingStrategy::Other(_) => {
            Box::new(SimpleShuffle::new(deployments))
        }
    }
}
