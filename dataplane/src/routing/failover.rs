//! Retries and fallbacks: which deployment a request tries next after one failed.
//!
//! A [`Failover`] follows LiteLLM's order. The first attempt goes to the model group's pick.
//! A failure is classified (`ErrorClass`, or a context-window overflow); the group is
//! retried `retry_policy` / `num_retries` times for that class, each retry on a deployment
//! not tried yet when there is one (else the same one, after a backoff that honours the
//! upstream's `retry-after`). Then the fallback groups are tried in order, each with its
//! own retries: `context_window_fallbacks` or `content_policy_fallbacks` for those
//! failures (else the general ones), `fallbacks` for the model, else `default_fallbacks`.
//! Requests the provider refused as invalid are not retried or sent elsewhere. Every
//! failure counts against its deployment's breaker (`health`). When everything is
//! exhausted, one error names every attempt and carries the last provider error.
//!
//! Callers attempt only before anything was sent to the client.

use std::sync::Arc;
use std::time::Duration;

use routeiq_proto::{ErrorClass, RouterSettings};

use super::health::{BreakerState, Outcome};
use super::{ModelGroup, Pick, RouteRequest};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::telemetry::Metrics;

/// Longest wait before retrying the deployment that just failed; an upstream asking for
/// longer is not retried (fallbacks still apply).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// First backoff when retrying a deployment already tried; doubles per retry.
const BACKOFF: Duration = Duration::from_millis(250);
/// Latency recorded for a failed attempt (at most; less when the deployment's timeout is
/// shorter), so latency-based routing does not take a failing deployment for a fast one.
const FAILURE_LATENCY: Duration = Duration::from_secs(30);

/// What kind of failure an attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Class(ErrorClass),
    /// The prompt does not fit the model's context window (a bad request with its own
    /// fallbacks).
    ContextWindow,
}

impl Failure {
    /// Classifies an attempt's error (from the provider, the connection, or a timeout).
    pub fn of(e: &ApiError) -> Self {
        match e.code.as_deref() {
            Some("context_length_exceeded") => return Self::ContextWindow,
            Some("content_policy_violation") => {
                return Self::Class(ErrorClass::ContentPolicyViolation)
            }
            Some("upstream_auth_error") => return Self::Class(ErrorClass::Authentication),
            _ => {}
        }
        Self::Class(match e.status {
            429 => ErrorClass::RateLimit,
            401 | 403 => ErrorClass::Authentication,
            408 | 504 => ErrorClass::Timeout,
            400..=499 => ErrorClass::BadRequest,
            _ => ErrorClass::InternalServer,
        })
    }

    /// Whether the request, not the deployment, was at fault (a bad request, a prompt too
    /// long, a content-policy refusal): such failures never count against a deployment.
    fn client_caused(self) -> bool {
        matches!(
            self,
            Self::ContextWindow
                | Self::Class(ErrorClass::BadRequest | ErrorClass::ContentPolicyViolation)
        )
    }

    fn class(self) -> ErrorClass {
        match self {
            Self::Class(c) => c,
            Self::ContextWindow => ErrorClass::BadRequest,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Class(c) => c.label(),
            Self::ContextWindow => "context_window_exceeded",
        }
    }
}

pub struct Failover<'a> {
    app: &'a App,
    live: &'a LiveState,
    settings: &'a RouterSettings,
    metrics: &'a Metrics,
    req: RouteRequest,
    /// The model the client asked for.
    model: &'a str,
    group: &'a ModelGroup,
    /// Indices (in `group`) tried so far.
    tried: smallvec::SmallVec<[usize; 4]>,
    /// The current attempt is its deployment's half-open probe.
    probe: bool,
    group_retries: u32,
    /// Fallback groups still to try, once a failure chose them.
    chain: Option<std::vec::IntoIter<String>>,
    /// Retries made (LiteLLM's `x-litellm-attempted-retries`).
    pub retries: u32,
    /// Fallback groups tried (`x-litellm-attempted-fallbacks`).
    pub fallbacks: u32,
    /// Attempts made and failed.
    attempts: u32,
    /// The status and class of the failure that sent the request to its fallbacks.
    fell_back_on: Option<(u16, &'static str)>,
    /// One line per failed attempt (and per group that had nothing to offer), for the
    /// final error.
    log: Vec<String>,
}

impl<'a> Failover<'a> {
    /// Plans the attempts for `model`: 404 when there is no such model.
    pub fn new(
        app: &'a App,
        live: &'a LiveState,
        model: &'a str,
        req: RouteRequest,
    ) -> Result<Self, ApiError> {
        let group = live.group(model).ok_or_else(|| live.unknown_model(model))?;
        Ok(Self {
            app,
            live,
            settings: live.router_settings(),
            metrics: &app.metrics,
            req,
            model,
            group,
            tried: smallvec::SmallVec::new(),
            probe: false,
            group_retries: 0,
            chain: None,
            retries: 0,
            fallbacks: 0,
            attempts: 0,
            fell_back_on: None,
            log: Vec::new(),
        })
    }

    pub fn request(&self) -> &RouteRequest {
        &self.req
    }

    /// What the requested group's router needs computed from the query before the first
    /// pick.
    pub fn preparation(&self) -> super::Preparation {
        self.group.preparation()
    }

    /// What the current group's router runs around the picked deployment, if anything.
    pub fn compound(&self) -> Option<super::Compound> {
        self.group.compound()
    }

    /// The deployment for the first attempt. When the model has none available (all
    /// cooling down, prompt too large, ...) the fallbacks are tried.
    pub fn first(&mut self) -> Result<Arc<CompiledDeployment>, ApiError> {
        match self.group.pick(self.settings, &self.req, &[], now_ms()) {
            Ok(p) => Ok(self.take(p)),
            Err(none) => {
                let e = none.into_error(&self.group.name, &self.req);
                self.log.push(format!("{}: {}", self.group.name, e.message));
                self.fall_back(Failure::of(&e), e)
            }
        }
    }

    fn take(&mut self, p: Pick) -> Arc<CompiledDeployment> {
        self.tried.push(p.index);
        self.probe = p.probe;
        let d = &self.group.deployments[p.index];
        if p.probe {
            self.metrics.deployment_state(d, BreakerState::HalfOpen);
        }
        Arc::clone(d)
    }

    /// The request ends before its attempt on `d` was made (refused by a limit, or its
    /// body could not be built): a half-open probe it held is given back.
    pub fn abandon(&self, d: &CompiledDeployment) {
        if self.probe {
            d.health.release_probe();
        }
    }

    /// The request could not be sent to `d` at all (it needs something `d` lacks, such as a
    /// skill not copied to it yet): the group's next deployment not tried yet, without a
    /// retry or a mark against `d`; else `e` as it is.
    pub fn skip(
        &mut self,
        d: &CompiledDeployment,
        e: ApiError,
    ) -> Result<Arc<CompiledDeployment>, ApiError> {
        self.abandon(d);
        match self
            .group
            .pick(self.settings, &self.req, &self.tried, now_ms())
        {
            Ok(p) if !self.tried.contains(&p.index) => {
                self.log.push(e.message);
                Ok(self.take(p))
            }
            Ok(p) => {
                if p.probe {
                    self.group.deployments[p.index].health.release_probe();
                }
                Err(e)
            }
            Err(_) => Err(e),
        }
    }

    /// The attempt on `d` succeeded (its response began): if it was the half-open probe,
    /// the breaker closes.
    pub fn succeeded(&self, d: &CompiledDeployment) {
        if self.probe && d.health.probe_succeeded() {
            self.metrics.deployment_state(d, BreakerState::Closed);
        }
        if let Some(cause) = self.fell_back_on.filter(|_| self.fallbacks > 0) {
            self.metrics.fallback(
                self.model,
                &d.deployment.model_name,
                self.req.key.as_deref(),
                cause,
                true,
            );
        }
    }

    /// The attempt on `d` failed with `e`: the next deployment to try, after any backoff,
    /// or the final error.
    pub async fn failed(
        &mut self,
        d: &CompiledDeployment,
        e: ApiError,
    ) -> Result<Arc<CompiledDeployment>, ApiError> {
        let failure = Failure::of(&e);
        let now = now_ms();
        self.attempts += 1;
        self.metrics.deployment_failure(
            d,
            self.model,
            self.req.key.as_deref(),
            (e.status, failure.label()),
        );
        if failure.client_caused() {
            // The request's fault, not the deployment's: nothing against its breaker.
            self.abandon(d);
        } else {
            let penalty = d.timeout.min(FAILURE_LATENCY);
            d.health
                .record_latency(penalty, self.req.stream.then_some(penalty));
            let alone = self.group.deployments.len() == 1;
            let outcome = d
                .health
                .failed(failure.class(), self.settings, alone, self.probe, now);
            if let Outcome::Opened(until) = outcome {
                tracing::warn!(
                    deployment = %d.deployment.id,
                    model_group = %d.deployment.model_name,
                    cooldown_ms = until.saturating_sub(now),
                    error = failure.label(),
                    "deployment cooling down"
                );
                self.metrics.cooled_down(d, e.status);
                self.metrics.deployment_state(d, BreakerState::Open);
                if let Some(tx) = &self.app.cooldowns {
                    let _ = tx.try_send((d.deployment.id.clone(), until));
                }
            }
        }
        // Attempt errors name their deployment and group (`CompiledDeployment::label`).
        self.log.push(e.message.clone());

        let allowed = match failure {
            Failure::ContextWindow => 0,
            Failure::Class(c) => self.settings.retries_for(c),
        };
        if self.group_retries < allowed {
            if let Ok(p) = self
                .group
                .pick(self.settings, &self.req, &self.tried, now_ms())
            {
                // A deployment not tried yet is tried at once; one already tried (nothing
                // else is left) after a backoff, or not at all when the upstream asked for
                // a long wait.
                let again = self.tried.contains(&p.index);
                let asked = e.retry_after.map(Duration::from_secs).unwrap_or_default();
                if again && asked > MAX_RETRY_WAIT {
                    if p.probe {
                        self.group.deployments[p.index].health.release_probe();
                    }
                } else {
                    self.group_retries += 1;
                    self.retries += 1;
                    self.metrics.retry(&self.group.name, failure.label());
                    let backoff = if again {
                        asked.max(BACKOFF * 2u32.pow(self.group_retries.min(5) - 1))
                    } else {
                        Duration::ZERO
                    };
                    let pause = backoff.max(self.settings.retry_after).min(MAX_RETRY_WAIT);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    return Ok(self.take(p));
                }
            }
        }
        self.fall_back(failure, e)
    }

    /// The next fallback group with a deployment to offer, or the final error. A bad
    /// request ends the request, in a fallback group too: another model would refuse it.
    fn fall_back(
        &mut self,
        failure: Failure,
        last: ApiError,
    ) -> Result<Arc<CompiledDeployment>, ApiError> {
        if failure == Failure::Class(ErrorClass::BadRequest) {
            return Err(self.exhausted(last));
        }
        if self.chain.is_none() {
            self.chain = Some(self.fallback_groups(failure).into_iter());
            self.fell_back_on = Some((last.status, failure.label()));
        }
        while let Some(name) = self.chain.as_mut().and_then(Iterator::next) {
            let Some(group) = self.live.group(&name) else {
                self.log.push(format!("{name}: no such model group"));
                continue;
            };
            self.group = group;
            self.tried.clear();
            // The first group's router decision is not this group's.
            if let Some(q) = &self.req.query {
                q.forget_decision();
            }
            self.group_retries = 0;
            match group.pick(self.settings, &self.req, &[], now_ms()) {
                Ok(p) => {
                    self.fallbacks += 1;
                    return Ok(self.take(p));
                }
                Err(none) => {
                    let e: ApiError = none.into_error(&name, &self.req);
                    self.log.push(format!("{name}: {}", e.message));
                }
            }
        }
        if let Some(cause) = self.fell_back_on.filter(|_| self.fallbacks > 0) {
            self.metrics.fallback(
                self.model,
                &self.group.name,
                self.req.key.as_deref(),
                cause,
                false,
            );
        }
        Err(self.exhausted(last))
    }

    fn fallback_groups(&self, failure: Failure) -> Vec<String> {
        let s = self.settings;
        let specific = match failure {
            Failure::ContextWindow => {
                RouterSettings::fallbacks_of(&s.context_window_fallbacks, self.model)
            }
            Failure::Class(ErrorClass::ContentPolicyViolation) => {
                RouterSettings::fallbacks_of(&s.content_policy_fallbacks, self.model)
            }
            Failure::Class(_) => None,
        };
        specific
            .or_else(|| RouterSettings::fallbacks_of(&s.fallbacks, self.model))
            .map(<[String]>::to_vec)
            .unwrap_or_else(|| {
                s.default_fallbacks
                    .iter()
                    .filter(|m| *m != self.model)
                    .cloned()
                    .collect()
            })
    }

    /// The error once nothing is left: the last provider error's status and type, with
    /// every attempt named when there was more than one.
    fn exhausted(&self, mut last: ApiError) -> ApiError {
        if self.log.len() > 1 {
            last.message = format!(
                "model `{}`: all {} attempts failed ({} retries, {} fallbacks): {}. Last error: {}",
                self.model,
                self.attempts,
                self.retries,
                self.fallbacks,
                self.log.join("; "),
                last.message
            );
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::{Deployment, Fallback, Snapshot};

    fn app(router: RouterSettings) -> App {
        let dep = Deployment::mock;
        let snapshot = Snapshot {
            deployments: vec![dep("a", "m"), dep("b", "m"), dep("f", "backup")],
            router,
            ..Snapshot::default()
        };
        let live = LiveState::prepare(snapshot, &Default::default()).unwrap();
        App::new(live, None, None).unwrap()
    }

    #[test]
    fn failures_and_fallbacks_carry_the_keys_labels_in_litellms_places() {
        let app = app(RouterSettings {
            num_retries: Some(0),
            disable_cooldowns: true,
            fallbacks: vec![Fallback {
                model: "m".into(),
                fallbacks: vec!["backup".into()],
            }],
            ..RouterSettings::default()
        });
        let live = app.load();
        let key = Arc::new(routeiq_proto::VirtualKey {
            hash: routeiq_proto::KeyHash::of("sk-labels"),
            alias: "the-alias".into(),
            team_id: "the-team".into(),
            ..routeiq_proto::VirtualKey::default()
        });
        let req = RouteRequest {
            key: Some(Arc::clone(&key)),
            ..RouteRequest::default()
        };
        run(async {
            let mut plan = Failover::new(&app, &live, "m", req).unwrap();
            let first = plan.first().unwrap();
            let served = plan.failed(&first, boom()).await.unwrap();
            assert_eq!(served.deployment.id.0, "f");
            plan.succeeded(&served);
        });
        let text = String::from_utf8(app.metrics.render()).unwrap();
        let hashed = format!("hashed_api_key=\"{}\"", key.hash.to_hex());
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{")))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .to_owned()
        };
        let failure = line("litellm_deployment_failure_responses_total");
        for want in [
            hashed.as_str(),
            "api_key_alias=\"the-alias\"",
            "team=\"the-team\"",
            "team_alias=\"None\"",
            "model_group=\"m\"",
            "requested_model=\"m\"",
            "exception_status=\"502\"",
            "client_ip=\"None\"",
        ] {
            assert!(failure.contains(want), "{want} not in {failure}");
        }
        let fallback = line("litellm_deployment_successful_fallbacks_total");
        for want in [
            hashed.as_str(),
            "api_key_alias=\"the-alias\"",
            "team=\"the-team\"",
            "requested_model=\"m\"",
            "fallback_model=\"backup\"",
            "exception_status=\"502\"",
            "model_id=\"None\"",
        ] {
            assert!(fallback.contains(want), "{want} not in {fallback}");
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn boom() -> ApiError {
        ApiError::upstream(502, crate::error::ErrorKind::Upstream, "boom")
    }

    #[test]
    fn retries_go_to_the_other_deployment_then_fallbacks_in_order() {
        let app = app(RouterSettings {
            num_retries: Some(1),
            disable_cooldowns: true,
            fallbacks: vec![Fallback {
                model: "m".into(),
                fallbacks: vec!["nope".into(), "backup".into()],
            }],
            ..RouterSettings::default()
        });
        let live = app.load();
        run(async {
            let mut plan = Failover::new(&app, &live, "m", RouteRequest::default()).unwrap();
            let first = plan.first().unwrap();
            let second = plan.failed(&first, boom()).await.unwrap();
            assert_ne!(
                first.deployment.id, second.deployment.id,
                "the retry goes elsewhere"
            );
            assert_eq!(second.deployment.model_name, "m");
            let third = plan.failed(&second, boom()).await.unwrap();
            assert_eq!(
                third.deployment.id.0, "f",
                "then the fallbacks, skipping unknown groups"
            );
            assert_eq!((plan.retries, plan.fallbacks), (1, 1));
            let fourth = plan.failed(&third, boom()).await.unwrap();
            assert_eq!(
                fourth.deployment.id.0, "f",
                "its own retry, after a backoff"
            );
            let e = plan.failed(&fourth, boom()).await.unwrap_err();
            assert_eq!(e.status, 502);
            assert!(
                e.message
                    .contains("all 4 attempts failed (2 retries, 1 fallbacks)"),
                "{}",
                e.message
            );
            assert!(
                e.message.contains("nope: no such model group"),
                "{}",
                e.message
            );
        });
    }

    #[test]
    fn a_bad_request_ends_the_request_and_counts_against_no_deployment() {
        let app = app(RouterSettings {
            allowed_fails: Some(0),
            fallbacks: vec![Fallback {
                model: "m".into(),
                fallbacks: vec!["backup".into()],
            }],
            ..RouterSettings::default()
        });
        let live = app.load();
        run(async {
            let mut plan = Failover::new(&app, &live, "m", RouteRequest::default()).unwrap();
            let d = plan.first().unwrap();
            let e = plan
                .failed(
                    &d,
                    ApiError::bad_request("no").with_code("upstream_bad_request"),
                )
                .await
                .unwrap_err();
            assert_eq!((e.status, e.message.as_str()), (400, "no"));
            assert_eq!(d.health.state(now_ms()), BreakerState::Closed);
        });
    }

    #[test]
    fn a_probe_whose_request_is_refused_before_sending_is_given_back() {
        let app = app(RouterSettings::default());
        let live = app.load();
        let group = live.group("m").unwrap();
        let now = now_ms();
        // `a` half-open (its cooldown over), `b` cooling down: `a` is the only pick.
        group.deployments[0].health.open_until(now - 1);
        group.deployments[1].health.open_until(now + 60_000);
        let plan = Failover::new(&app, &live, "m", RouteRequest::default()).unwrap();
        let mut plan = plan;
        let d = plan.first().unwrap();
        assert_eq!(d.deployment.id.0, "a");
        assert!(!d.health.available(now_ms(), 5000), "the probe is out");
        plan.abandon(&d);
        assert!(d.health.available(now_ms(), 5000), "and given back");
    }

    #[test]
    fn failures_are_classified_like_litellm() {
        let class = |e: ApiError| Failure::of(&e);
        assert_eq!(
            class(ApiError::upstream(
                502,
                crate::error::ErrorKind::Upstream,
                "x"
            )),
            Failure::Class(ErrorClass::InternalServer)
        );
        assert_eq!(
            class(ApiError::timeout("slow")),
            Failure::Class(ErrorClass::Timeout)
        );
        assert_eq!(
            class(ApiError::rate_limited("x")),
            Failure::Class(ErrorClass::RateLimit)
        );
        assert_eq!(
            class(ApiError::bad_request("x").with_code("context_length_exceeded")),
            Failure::ContextWindow
        );
        assert_eq!(
            class(ApiError::bad_request("x").with_code("upstream_bad_request")),
            Failure::Class(ErrorClass::BadRequest)
        );
        assert_eq!(
            class(
                ApiError::upstream(502, crate::error::ErrorKind::Upstream, "x")
                    .with_code("upstream_auth_error")
            ),
            Failure::Class(ErrorClass::Authentication)
        );
    }
}
