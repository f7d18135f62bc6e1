//! Router settings: how a model group picks a deployment and how a request recovers from a
//! failing one. LiteLLM's `router_settings` keys (some may also sit in `litellm_settings`),
//! with LiteLLM's meanings and defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How the router picks among deployments that share a `model_name`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RoutingStrategy {
    #[default]
    SimpleShuffle,
    LeastBusy,
    LatencyBased,
    CostBased,
    UsageBasedV2,
    /// `llmrouter-<name>`: a learned router, scoring candidates with a routing model
    /// (`routing_strategy_args.model_path` / `model_s3_*`; see the data plane's
    /// `routing::learned`).
    LlmRouter(String),
    /// A name RouteIQ does not know; routes with simple-shuffle (the loader warns).
    Unknown(String),
}

/// The learned strategies served from routing-model artifacts (`llmrouter-<name>`).
pub const LEARNED_STRATEGIES: [&str; 12] = [
    "knn",
    "svm",
    "mlp",
    "mf",
    "elo",
    "hybrid",
    "graph",
    "routerdc",
    "personalized",
    "gmt",
    "smallest",
    "largest",
];

impl RoutingStrategy {
    /// LiteLLM's name for the strategy.
    pub fn name(&self) -> &str {
        match self {
            Self::SimpleShuffle => "simple-shuffle",
            Self::LeastBusy => "least-busy",
            Self::LatencyBased => "latency-based-routing",
            Self::CostBased => "cost-based-routing",
            Self::UsageBasedV2 => "usage-based-routing-v2",
            Self::LlmRouter(n) | Self::Unknown(n) => n,
        }
    }

    /// The strategy of a LiteLLM name; empty means the default. LiteLLM's older
    /// `usage-based-routing` is served by v2.
    pub fn from_name(name: &str) -> Self {
        match name {
            "" | "simple-shuffle" => Self::SimpleShuffle,
            "least-busy" => Self::LeastBusy,
            "latency-based-routing" => Self::LatencyBased,
            "cost-based-routing" => Self::CostBased,
            "usage-based-routing-v2" | "usage-based-routing" => Self::UsageBasedV2,
            n if n.starts_with("llmrouter-") => Self::LlmRouter(n.to_owned()),
            n => Self::Unknown(n.to_owned()),
        }
    }
}

/// The classes of upstream failure LiteLLM's `retry_policy` and `allowed_fails_policy`
/// distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    BadRequest,
    Authentication,
    Timeout,
    RateLimit,
    ContentPolicyViolation,
    InternalServer,
}

impl ErrorClass {
    pub const ALL: [Self; 6] = [
        Self::BadRequest,
        Self::Authentication,
        Self::Timeout,
        Self::RateLimit,
        Self::ContentPolicyViolation,
        Self::InternalServer,
    ];

    /// LiteLLM's field-name stem (`TimeoutError` in `TimeoutErrorRetries`).
    pub fn litellm_name(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequestError",
            Self::Authentication => "AuthenticationError",
            Self::Timeout => "TimeoutError",
            Self::RateLimit => "RateLimitError",
            Self::ContentPolicyViolation => "ContentPolicyViolationError",
            Self::InternalServer => "InternalServerError",
        }
    }

    /// Low-cardinality label for metrics and messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Authentication => "authentication",
            Self::Timeout => "timeout",
            Self::RateLimit => "rate_limit",
            Self::ContentPolicyViolation => "content_policy_violation",
            Self::InternalServer => "internal_server",
        }
    }

    /// Its position in [`Self::ALL`] (per-class arrays are indexed by it).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A count per error class (`retry_policy`: `TimeoutErrorRetries: 3`, ...;
/// `allowed_fails_policy`: `TimeoutErrorAllowedFails: 3`, ...). `None`: not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerClass([Option<u32>; 6]);

impl PerClass {
    pub fn get(&self, c: ErrorClass) -> Option<u32> {
        self.0[c.index()]
    }
    pub fn set(&mut self, c: ErrorClass, v: Option<u32>) {
        self.0[c.index()] = v;
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
    /// Entries keyed `<class><suffix>` (`suffix`: `Retries` or `AllowedFails`).
    pub fn to_map(&self, suffix: &str) -> serde_json::Map<String, serde_json::Value> {
        ErrorClass::ALL
            .iter()
            .filter_map(|c| {
                self.get(*c)
                    .map(|v| (format!("{}{suffix}", c.litellm_name()), v.into()))
            })
            .collect()
    }
    /// The inverse of [`Self::to_map`]; an unknown key or a non-count value is an error
    /// naming it.
    pub fn from_map(
        map: &serde_json::Map<String, serde_json::Value>,
        suffix: &str,
    ) -> Result<Self, String> {
        let mut out = Self::default();
        for (k, v) in map {
            let class = ErrorClass::ALL
                .into_iter()
                .find(|c| k.strip_suffix(suffix) == Some(c.litellm_name()))
                .ok_or_else(|| {
                    let known: Vec<String> = ErrorClass::ALL
                        .iter()
                        .map(|c| format!("{}{suffix}", c.litellm_name()))
                        .collect();
                    format!("unknown key `{k}`; known: {}", known.join(", "))
                })?;
            let n = match v {
                serde_json::Value::Null => None,
                v => Some(
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| format!("`{k}` must be a non-negative integer"))?,
                ),
            };
            out.set(class, n);
        }
        Ok(out)
    }
}

/// One `fallbacks` entry: `{model: [fallback, ...]}`, tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub model: String,
    pub fallbacks: Vec<String>,
}

/// LiteLLM's defaults.
pub const DEFAULT_NUM_RETRIES: u32 = 2;
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
pub const DEFAULT_COOLDOWN_TIME: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouterSettings {
    pub routing_strategy: RoutingStrategy,
    /// `routing_strategy_args` as given (`lowest_latency_buffer`, ...; the learned
    /// strategies' artifact settings).
    pub routing_strategy_args: serde_json::Map<String, serde_json::Value>,
    /// Global upstream timeout (`router_settings.timeout` / `litellm_settings.request_timeout`).
    pub request_timeout: Option<Duration>,
    /// Wait for a stream's first chunk, and between chunks (`stream_timeout`).
    pub stream_timeout: Option<Duration>,
    /// Retries per request (`num_retries`; default [`DEFAULT_NUM_RETRIES`]).
    pub num_retries: Option<u32>,
    /// Least wait before retrying a deployment that was just tried (`retry_after`).
    pub retry_after: Duration,
    pub retry_policy: PerClass,
    /// Failures per minute a deployment may have before it cools down (`allowed_fails`).
    pub allowed_fails: Option<u32>,
    pub allowed_fails_policy: PerClass,
    /// How long a failing deployment is skipped (`cooldown_time`).
    pub cooldown_time: Option<Duration>,
    pub disable_cooldowns: bool,
    pub fallbacks: Vec<Fallback>,
    pub context_window_fallbacks: Vec<Fallback>,
    pub content_policy_fallbacks: Vec<Fallback>,
    /// Fallbacks for every model group without its own (`default_fallbacks`).
    pub default_fallbacks: Vec<String>,
    pub enable_pre_call_checks: bool,
    pub enable_tag_filtering: bool,
}

impl RouterSettings {
    pub fn num_retries(&self) -> u32 {
        self.num_retries.unwrap_or(DEFAULT_NUM_RETRIES)
    }

    /// Retries for a failure of `class`: the `retry_policy` entry, else `num_retries` for
    /// failures worth retrying (timeouts, rate limits, provider errors) and none for the
    /// ones a retry cannot fix (bad requests, refused credentials, content policy).
    pub fn retries_for(&self, class: ErrorClass) -> u32 {
        self.retry_policy.get(class).unwrap_or(match class {
            ErrorClass::Timeout | ErrorClass::RateLimit | ErrorClass::InternalServer => {
                self.num_retries()
            }
            _ => 0,
        })
    }

    /// Failures of `class` a deployment may have in a minute before it cools down:
    /// the `allowed_fails_policy` entry; else none for rate limits and refused credentials
    /// (LiteLLM cools those down at once); else `allowed_fails`.
    pub fn allowed_fails_for(&self, class: ErrorClass) -> u32 {
        match (self.allowed_fails_policy.get(class), class) {
            (Some(n), _) => n,
            (None, ErrorClass::RateLimit | ErrorClass::Authentication) => 0,
            (None, _) => self.allowed_fails.unwrap_or(DEFAULT_ALLOWED_FAILS),
        }
    }

    pub fn cooldown_time(&self) -> Duration {
        self.cooldown_time.unwrap_or(DEFAULT_COOLDOWN_TIME)
    }

    /// `routing_strategy_args[key]` when it is a finite number.
    pub fn arg_number(&self, key: &str) -> Option<f64> {
        self.routing_strategy_args
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .filter(|v| v.is_finite())
    }

    /// What is wrong with the learned strategies' `routing_strategy_args` (each ignored
    /// where it is, as the data plane ignores it), for `--check` and config loads: wrong
    /// types and ranges, and `shadow` / `ab` versions that name no artifact.
    pub fn learned_arg_warnings(&self) -> Vec<String> {
        let RoutingStrategy::LlmRouter(_) = &self.routing_strategy else {
            return Vec::new();
        };
        let mut out = Vec::new();
        learned_args_check(&self.routing_strategy_args, "", &mut out);
        for key in ["shadow", "ab"] {
            let Some(v) = self.routing_strategy_args.get(key) else {
                continue;
            };
            let at = format!("router_settings.routing_strategy_args.{key}");
            let Some(own) = v.as_object() else {
                out.push(format!("{at} must be an object; the {key} version is off"));
                continue;
            };
            learned_args_check(own, &format!("{key}."), &mut out);
            let has = |k: &str| {
                own.get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            };
            let located = has("model_path") || (has("model_s3_bucket") && has("model_s3_key"));
            if !located {
                out.push(format!(
                    "{at} needs model_path, or model_s3_bucket and model_s3_key; the {key} version is off"
                ));
            }
            if let Some(strategy) = own.get("strategy") {
                let name = strategy
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("llmrouter-");
                if !LEARNED_STRATEGIES.contains(&name) {
                    out.push(format!(
                        "{at}.strategy {strategy} is not a learned strategy ({}); the {key} version is off",
                        LEARNED_STRATEGIES.join(", ")
                    ));
                }
            }
            if key == "ab" {
                let share = own.get("share").and_then(Value::as_f64);
                if !share.is_some_and(is_ab_share) {
                    out.push(format!(
                        "{at}.share must be a number between 0 and 1 (exclusive); the ab version is off"
                    ));
                }
                if let Some(sticky) = own.get("sticky") {
                    if !matches!(sticky.as_str(), Some("user" | "key")) {
                        out.push(format!(
                            "{at}.sticky {sticky} must be \"user\" or \"key\"; \"user\" is used"
                        ));
                    }
                }
            }
        }
        out
    }

    /// `routing_strategy_args[key]` when it is a non-empty string.
    pub fn arg_text(&self, key: &str) -> Option<&str> {
        self.routing_strategy_args
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `lowest_latency_buffer` from `routing_strategy_args` (0 when absent).
    pub fn lowest_latency_buffer(&self) -> f64 {
        self.arg_number("lowest_latency_buffer")
            .filter(|b| *b >= 0.0)
            .unwrap_or(0.0)
    }

    /// How long a latency measurement counts for latency-based routing:
    /// `routing_strategy_args.ttl` (seconds, LiteLLM's key), default an hour. Older, a
    /// deployment counts as unmeasured and is measured again.
    pub fn latency_ttl(&self) -> Duration {
        self.arg_number("ttl")
            .filter(|t| *t > 0.0 && *t <= MAX_SECS)
            .map_or(Duration::from_secs(3600), Duration::from_secs_f64)
    }

    /// The fallback groups for `model` from one of the lists.
    pub fn fallbacks_of<'a>(list: &'a [Fallback], model: &str) -> Option<&'a [String]> {
        list.iter()
            .find(|f| f.model == model)
            .map(|f| f.fallbacks.as_slice())
    }
}

type Json = serde_json::Value;
type Object = serde_json::Map<String, Json>;

/// Longest duration a router setting may give (a year): more is a typo, and would not
/// fit the arithmetic on timestamps.
pub(crate) const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

fn secs(at: &str, v: &Json) -> Result<Duration, String> {
    v.as_f64()
        .filter(|s| s.is_finite() && (0.0..=MAX_SECS).contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{at}: must be a number of seconds from 0 to {MAX_SECS}, got {v}"))
}

fn count(at: &str, v: &Json) -> Result<u32, String> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{at}: must be a non-negative integer, got {v}"))
}

fn flag(at: &str, v: &Json) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{at}: must be true or false, got {v}"))
}

fn strings(at: &str, v: &Json) -> Result<Vec<String>, String> {
    match v {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{at}: must be a list of model names"))
            })
            .collect(),
        _ => Err(format!("{at}: must be a list of model names")),
    }
}

/// `[{"gpt-4o": ["claude"]}, ...]` (LiteLLM's shape; one object with several keys is
/// accepted too).
fn fallback_list(at: &str, v: &Json) -> Result<Vec<Fallback>, String> {
    let items = match v {
        Json::Array(items) => items.as_slice(),
        Json::Object(_) => std::slice::from_ref(v),
        _ => {
            return Err(format!(
                "{at}: must be a list like [{{\"model\": [\"fallback\"]}}]"
            ))
        }
    };
    let mut out = Vec::new();
    for item in items {
        let Json::Object(m) = item else {
            return Err(format!(
                "{at}: each entry must map a model to its fallbacks"
            ));
        };
        for (model, fb) in m {
            out.push(Fallback {
                model: model.clone(),
                fallbacks: strings(&format!("{at}.{model}"), fb)?,
            });
        }
    }
    Ok(out)
}

fn fallback_json(list: &[Fallback]) -> Json {
    Json::Array(
        list.iter()
            .map(|f| serde_json::json!({ f.model.clone(): f.fallbacks }))
            .collect(),
    )
}

impl RouterSettings {
    /// The keys [`Self::from_litellm`] reads.
    pub const KEYS: [&'static str; 18] = [
        "routing_strategy",
        "routing_strategy_args",
        "timeout",
        "request_timeout",
        "stream_timeout",
        "num_retries",
        "retry_after",
        "retry_policy",
        "allowed_fails",
        "allowed_fails_policy",
        "cooldown_time",
        "disable_cooldowns",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "default_fallbacks",
        "enable_pre_call_checks",
        "enable_tag_filtering",
    ];

    /// Reads LiteLLM's router keys from `m` (other keys are left to the caller). Errors
    /// name the key (`prefix.key`).
    pub fn from_litellm(m: &Object, prefix: &str) -> Result<Self, String> {
        let mut s = Self::default();
        for (k, v) in m {
            if v.is_null() {
                continue;
            }
            let at = format!("{prefix}.{k}");
            match k.as_str() {
                "routing_strategy" => {
                    s.routing_strategy = RoutingStrategy::from_name(
                        v.as_str()
                            .ok_or_else(|| format!("{at}: must be a strategy name"))?,
                    )
                }
                "routing_strategy_args" => {
                    s.routing_strategy_args = v
                        .as_object()
                        .cloned()
                        .ok_or_else(|| format!("{at}: must be a mapping"))?
                }
                "timeout" | "request_timeout" => s.request_timeout = Some(secs(&at, v)?),
                "stream_timeout" => s.stream_timeout = Some(secs(&at, v)?),
                "num_retries" => s.num_retries = Some(count(&at, v)?),
                "retry_after" => s.retry_after = secs(&at, v)?,
                "retry_policy" | "allowed_fails_policy" => {
                    let suffix = if k == "retry_policy" {
                        "Retries"
                    } else {
                        "AllowedFails"
                    };
                    let map = v
                        .as_object()
                        .ok_or_else(|| format!("{at}: must be a mapping"))?;
                    let p = PerClass::from_map(map, suffix).map_err(|e| format!("{at}: {e}"))?;
                    if k == "retry_policy" {
                        s.retry_policy = p
                    } else {
                        s.allowed_fails_policy = p
                    }
                }
                "allowed_fails" => s.allowed_fails = Some(count(&at, v)?),
                "cooldown_time" => s.cooldown_time = Some(secs(&at, v)?),
                "disable_cooldowns" => s.disable_cooldowns = flag(&at, v)?,
                "fallbacks" => s.fallbacks = fallback_list(&at, v)?,
                "context_window_fallbacks" => s.context_window_fallbacks = fallback_list(&at, v)?,
                "content_policy_fallbacks" => s.content_policy_fallbacks = fallback_list(&at, v)?,
                "default_fallbacks" => s.default_fallbacks = strings(&at, v)?,
                "enable_pre_call_checks" => s.enable_pre_call_checks = flag(&at, v)?,
                "enable_tag_filtering" => s.enable_tag_filtering = flag(&at, v)?,
                _ => {}
            }
        }
        Ok(s)
    }

    /// The settings under LiteLLM's key names; [`Self::from_litellm`] reads them back.
    pub fn to_litellm(&self) -> Object {
        let mut m = Object::new();
        m.insert(
            "routing_strategy".into(),
            self.routing_strategy.name().into(),
        );
        if !self.routing_strategy_args.is_empty() {
            m.insert(
                "routing_strategy_args".into(),
                Json::Object(self.routing_strategy_args.clone()),
            );
        }
        let mut put_secs = |k: &str, d: Option<Duration>| {
            if let Some(d) = d {
                m.insert(k.into(), d.as_secs_f64().into());
            }
        };
        put_secs("timeout", self.request_timeout);
        put_secs("stream_timeout", self.stream_timeout);
        put_secs("cooldown_time", self.cooldown_time);
        put_secs(
            "retry_after",
            Some(self.retry_after).filter(|d| !d.is_zero()),
        );
        if let Some(n) = self.num_retries {
            m.insert("num_retries".into(), n.into());
        }
        if let Some(n) = self.allowed_fails {
            m.insert("allowed_fails".into(), n.into());
        }
        if !self.retry_policy.is_empty() {
            m.insert(
                "retry_policy".into(),
                Json::Object(self.retry_policy.to_map("Retries")),
            );
        }
        if !self.allowed_fails_policy.is_empty() {
            m.insert(
                "allowed_fails_policy".into(),
                Json::Object(self.allowed_fails_policy.to_map("AllowedFails")),
            );
        }
        for (k, list) in [
            ("fallbacks", &self.fallbacks),
            ("context_window_fallbacks", &self.context_window_fallbacks),
            ("content_policy_fallbacks", &self.content_policy_fallbacks),
        ] {
            if !list.is_empty() {
                m.insert(k.into(), fallback_json(list));
            }
        }
        if !self.default_fallbacks.is_empty() {
            m.insert(
                "default_fallbacks".into(),
                self.default_fallbacks.clone().into(),
            );
        }
        for (k, on) in [
            ("disable_cooldowns", self.disable_cooldowns),
            ("enable_pre_call_checks", self.enable_pre_call_checks),
            ("enable_tag_filtering", self.enable_tag_filtering),
        ] {
            if on {
                m.insert(k.into(), true.into());
            }
        }
        m
    }
}

/// Whether `share` is an A/B version's share of the clients: strictly between 0 and 1 (the
/// one rule of the config check, the data plane, the registry and the admin API).
pub fn is_ab_share(share: f64) -> bool {
    share > 0.0 && share < 1.0
}

/// The learned strategies' scalar arguments in `args` (`prefix`: where they are, under
/// `routing_strategy_args`) that the data plane would ignore.
fn learned_args_check(args: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    let at = |k: &str| format!("router_settings.routing_strategy_args.{prefix}{k}");
    for k in ["cost_weight", "max_price_per_m", "quality_floor"] {
        if let Some(v) = args.get(k) {
            if !v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0) {
                out.push(format!("{} {v} must be a number >= 0; ignored", at(k)));
            }
        }
    }
    if let Some(v) = args.get("reload_interval") {
        if !v.as_f64().is_some_and(|x| (0.1..=86_400.0).contains(&x)) {
            out.push(format!(
                "{} {v} must be a number of seconds from 0.1 to 86400; 10 is used",
                at("reload_interval")
            ));
        }
    }
    for k in ["conservative", "hot_reload"] {
        if let Some(v) = args.get(k).filter(|v| !v.is_boolean()) {
            out.push(format!("{} {v} must be true or false; ignored", at(k)));
        }
    }
    if let Some(v) = args.get("model_sha256") {
        let ok = v
            .as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            out.push(format!(
                "{} {v} must be 64 hex digits (the manifest's SHA-256); no artifact will match it",
                at("model_sha256")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_arguments_the_data_plane_would_ignore_are_named() {
        let settings = |args: Value| RouterSettings {
            routing_strategy: RoutingStrategy::LlmRouter("llmrouter-mlp".into()),
            routing_strategy_args: args.as_object().cloned().unwrap_or_default(),
            ..RouterSettings::default()
        };
        let good = settings(serde_json::json!({
            "model_path": "/srv/mlp", "cost_weight": 0.5, "conservative": true,
            "reload_interval": 2,
            "shadow": {"strategy": "llmrouter-knn", "model_path": "/srv/knn"},
            "ab": {"model_s3_bucket": "m", "model_s3_key": "mlp/v4", "share": 0.1, "sticky": "key"},
        }));
        assert_eq!(good.learned_arg_warnings(), Vec::<String>::new());
        let bad = settings(serde_json::json!({
            "conservative": "yes", "max_price_per_m": -1, "model_sha256": "abc",
            "shadow": {"strategy": "causallm", "cost_weight": "high"},
            "ab": {"model_path": "/srv/v4", "share": 1, "sticky": "team"},
        }))
        .learned_arg_warnings();
        for want in [
            "routing_strategy_args.conservative \"yes\" must be true or false",
            "routing_strategy_args.max_price_per_m -1 must be a number >= 0",
            "routing_strategy_args.model_sha256 \"abc\" must be 64 hex digits",
            "routing_strategy_args.shadow.cost_weight \"high\" must be a number >= 0",
            "routing_strategy_args.shadow needs model_path",
            "routing_strategy_args.shadow.strategy \"causallm\" is not a learned strategy",
            "routing_strategy_args.ab.share must be a number between 0 and 1",
            "routing_strategy_args.ab.sticky \"team\" must be \"user\" or \"key\"",
        ] {
            assert!(bad.iter().any(|w| w.contains(want)), "{want}: {bad:#?}");
        }
        assert_eq!(bad.len(), 8, "{bad:#?}");
        // Not a learned strategy: its arguments are not ours to judge.
        let other = RouterSettings {
            routing_strategy: RoutingStrategy::SimpleShuffle,
            ..settings(serde_json::json!({"conservative": "yes"}))
        };
        assert!(other.learned_arg_warnings().is_empty());
    }

    #[test]
    fn strategy_names_round_trip() {
        for n in [
            "simple-shuffle",
            "least-busy",
            "latency-based-routing",
            "cost-based-routing",
            "usage-based-routing-v2",
            "llmrouter-knn",
            "who-knows",
        ] {
            assert_eq!(RoutingStrategy::from_name(n).name(), n);
        }
        assert_eq!(
            RoutingStrategy::from_name("usage-based-routing"),
            RoutingStrategy::UsageBasedV2
        );
    }

    #[test]
    fn per_class_maps() {
        let m: serde_json::Map<_, _> =
            serde_json::from_str(r#"{"TimeoutErrorRetries": 4, "AuthenticationErrorRetries": 0}"#)
                .unwrap();
        let p = PerClass::from_map(&m, "Retries").unwrap();
        assert_eq!(p.get(ErrorClass::Timeout), Some(4));
        assert_eq!(p.get(ErrorClass::Authentication), Some(0));
        assert_eq!(p.get(ErrorClass::RateLimit), None);
        assert_eq!(p.to_map("Retries"), m);
        let bad: serde_json::Map<_, _> = serde_json::from_str(r#"{"Nope": 1}"#).unwrap();
        assert!(PerClass::from_map(&bad, "Retries")
            .unwrap_err()
            .contains("Nope"));
    }

    #[test]
    fn litellm_keys_round_trip() {
        let m: Object = serde_json::from_str(
            r#"{"routing_strategy": "latency-based-routing",
                "routing_strategy_args": {"lowest_latency_buffer": 0.5},
                "timeout": 30, "stream_timeout": 5.5, "num_retries": 3, "retry_after": 1,
                "retry_policy": {"TimeoutErrorRetries": 1},
                "allowed_fails": 2, "allowed_fails_policy": {"RateLimitErrorAllowedFails": 10},
                "cooldown_time": 7, "fallbacks": [{"a": ["b", "c"]}],
                "context_window_fallbacks": [{"a": ["big"]}], "content_policy_fallbacks": [{"a": ["c"]}],
                "default_fallbacks": ["d"], "enable_pre_call_checks": true,
                "enable_tag_filtering": true, "disable_cooldowns": true}"#,
        )
        .unwrap();
        let s = RouterSettings::from_litellm(&m, "router_settings").unwrap();
        assert_eq!(s.routing_strategy, RoutingStrategy::LatencyBased);
        assert_eq!(s.lowest_latency_buffer(), 0.5);
        assert_eq!(s.stream_timeout, Some(Duration::from_millis(5500)));
        assert_eq!(s.retries_for(ErrorClass::Timeout), 1);
        assert_eq!(s.retries_for(ErrorClass::RateLimit), 3);
        assert_eq!(s.allowed_fails_for(ErrorClass::RateLimit), 10);
        assert_eq!(s.allowed_fails_for(ErrorClass::Timeout), 2);
        assert_eq!(
            RouterSettings::fallbacks_of(&s.fallbacks, "a").unwrap(),
            ["b".to_owned(), "c".to_owned()]
        );
        let back = RouterSettings::from_litellm(&s.to_litellm(), "x").unwrap();
        assert_eq!(back, s);
        let huge: Object = serde_json::from_str(r#"{"timeout": 1e20}"#).unwrap();
        assert!(RouterSettings::from_litellm(&huge, "r").is_err());
        let bad: Object = serde_json::from_str(r#"{"num_retries": -1}"#).unwrap();
        assert!(RouterSettings::from_litellm(&bad, "router_settings")
            .unwrap_err()
            .starts_with("router_settings.num_retries"));
    }

    #[test]
    fn retry_defaults_follow_the_error_class() {
        let mut s = RouterSettings::default();
        assert_eq!(s.retries_for(ErrorClass::InternalServer), 2);
        assert_eq!(s.retries_for(ErrorClass::BadRequest), 0);
        s.num_retries = Some(5);
        s.retry_policy.set(ErrorClass::Authentication, Some(1));
        assert_eq!(s.retries_for(ErrorClass::Timeout), 5);
        assert_eq!(s.retries_for(ErrorClass::Authentication), 1);
        assert_eq!(s.allowed_fails_for(ErrorClass::Timeout), 3);
        assert_eq!(s.allowed_fails_for(ErrorClass::RateLimit), 0);
    }
}
