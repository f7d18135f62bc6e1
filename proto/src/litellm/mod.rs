//! Reads a LiteLLM-style `config.yaml` and compiles it into a [`Snapshot`].
//!
//! Parsing is tolerant where the format is LiteLLM's: unknown keys are reported as warnings,
//! never as errors. Anything malformed is an error naming the YAML path of the problem.

mod env;
mod model;
mod schema;

use std::path::{Path, PathBuf};

use crate::Snapshot;

pub use model::{
    compatible_row, known_prefixes, parse_model, text_completion_model, ChatParams, Compatible,
    BEDROCK_DEFAULT_REGION, OPENAI_CHAT_PARAMS, VERTEX_DEFAULT_LOCATION,
};
pub use schema::{ADDITIONAL_DROP_PARAMS, CUSTOM_LLM_PROVIDER, DROP_PARAMS};

/// A config that could not be loaded. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("{path}: at `{at}`: {message}")]
    Invalid {
        path: PathBuf,
        at: String,
        message: String,
    },
    #[error("{path}: at `{at}`: environment variable `{var}` is not set (referenced as os.environ/{var})")]
    MissingEnv {
        path: PathBuf,
        at: String,
        var: String,
    },
}

/// The result of loading a config: the snapshot, plus warnings worth logging.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// `credential_list`, as written (values are secrets).
    pub credentials: Vec<Credential>,
    /// SHA-256 of the config text (hex), to recognise a file imported before.
    pub sha256: String,
    /// `router_settings.redis_host` / `redis_port` / `redis_password` as a URL.
    pub redis_url: Option<crate::Secret>,
    pub warnings: Vec<String>,
}

/// One named set of provider secrets from `credential_list`.
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub name: String,
    pub values: std::collections::BTreeMap<String, crate::Secret>,
    /// `credential_info` (a JSON object; empty when absent).
    pub info: serde_json::Value,
}

/// Reads and compiles the config file at `path`, resolving `os.environ/NAME` references
/// from the process environment. (The one file read of this crate, done by the binaries at
/// startup; everything else here is pure.)
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    compile(&text, path, &|name| std::env::var(name).ok())
}

/// Compiles config text. `lookup` resolves environment variables (injectable for tests).
pub fn compile(
    text: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let mut value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|source| ConfigError::Yaml {
            path: path.to_owned(),
            source,
        })?;
    if value.is_null() {
        value = serde_norway::Value::Mapping(Default::default());
    }
    let overrides = env::environment_variables_section(&value);
    let lookup = |name: &str| overrides.get(name).cloned().or_else(|| lookup(name));
    env::resolve(&mut value, &lookup).map_err(|e| ConfigError::MissingEnv {
        path: path.to_owned(),
        at: e.at,
        var: e.var,
    })?;
    let raw: schema::RawConfig =
        serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            at: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
    let mut warnings = Vec::new();
    raw.collect_unknown(&mut warnings);
    let credentials = raw.credentials();
    let invalid = |(at, message)| ConfigError::Invalid {
        path: path.to_owned(),
        at,
        message,
    };
    let redis_url = raw.redis_url().map_err(invalid)?;
    let snapshot = raw.into_snapshot(&lookup, &mut warnings).map_err(invalid)?;
    let sha256 = crate::hex(&sha2::Digest::finalize(
        <sha2::Sha256 as sha2::Digest>::new_with_prefix(text),
    ));
    Ok(Loaded {
        snapshot,
        credentials,
        sha256,
        redis_url,
        warnings,
    })
}

/// A model given through the management API (LiteLLM's `/model/new` body: `model_name`,
/// `litellm_params`, `model_info`), compiled exactly like a `model_list` entry.
/// `credential` is the credential that `litellm_params.litellm_credential_name` names, if
/// any (see [`credential_name`]). Errors are `(path in the body, message)`. A deployment
/// without `model_info.id` gets an empty id, for the caller to assign.
pub fn compile_model(
    entry: &serde_json::Value,
    credential: Option<(&str, &std::collections::HashMap<String, String>)>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(crate::Deployment, Vec<String>), (String, String)> {
    let mut value: serde_norway::Value =
        serde_json::from_value(entry.clone()).map_err(|e| (String::new(), e.to_string()))?;
    env::resolve(&mut value, lookup)
        .map_err(|e| (e.at, format!("environment variable `{}` is not set", e.var)))?;
    let raw: schema::RawDeployment = serde_path_to_error::deserialize(value)
        .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))?;
    let mut warnings = Vec::new();
    raw.collect_unknown("", &mut warnings);
    let credentials = credential.into_iter().collect();
    let mut d = schema::compile_deployment(&raw, "", &credentials, lookup)
        .map_err(|(at, m)| (at.trim_start_matches('.').to_owned(), m))?;
    if raw.model_info.id.is_none() {
        d.id = crate::DeploymentId(String::new());
    }
    Ok((d, warnings))
}

/// An MCP server given through the management API: an `mcp_servers` entry as JSON (`url`,
/// `transport`, `auth_type`, `auth_value`, `static_headers`, `allowed_tools`, ...) compiled
/// exactly like one in `config.yaml`, `os.environ/NAME` resolved with `lookup`. Errors are
/// `(path in the entry, message)`; the warnings name ignored fields.
pub fn compile_mcp_server(
    name: &str,
    entry: &serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(crate::McpServer, Vec<String>), (String, String)> {
    schema::compile_mcp_entry(name, api_entry(entry, lookup)?)
}

/// An entry given through the management API as the config file's YAML, its
/// `os.environ/NAME` values resolved with `lookup`.
fn api_entry(
    entry: &serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<serde_norway::Value, (String, String)> {
    let mut value: serde_norway::Value =
        serde_json::from_value(entry.clone()).map_err(|e| (String::new(), e.to_string()))?;
    env::resolve(&mut value, lookup)
        .map_err(|e| (e.at, format!("environment variable `{}` is not set", e.var)))?;
    Ok(value)
}

/// A server as the `mcp_servers` entry that compiles to it, credentials included: what an
/// update through the management API is merged over.
pub fn mcp_server_entry(m: &crate::McpServer) -> serde_json::Value {
    let mut e = serde_json::json!({
        "url": m.url,
        "transport": m.transport.as_str(),
        "auth_type": m.auth.kind(),
        "static_headers": m
            .static_headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.expose())))
            .collect::<serde_json::Map<_, _>>(),
        "disallowed_tools": m.disallowed_tools,
        "access_groups": m.access_groups,
        "allow_all_keys": m.allow_all_keys,
    });
    match &m.oauth2 {
        Some(o) => {
            e["client_id"] = o.client_id.as_str().into();
            e["client_secret"] = m.auth.value().into();
            e["token_url"] = o.token_url.as_str().into();
            e["scopes"] = o.scopes.clone().into();
        }
        None if !m.auth.value().is_empty() => e["auth_value"] = m.auth.value().into(),
        None => {}
    }
    if let Some(d) = &m.description {
        e["description"] = d.as_str().into();
    }
    if let Some(a) = &m.allowed_tools {
        e["allowed_tools"] = a.clone().into();
    }
    if let Some(p) = &m.spec_path {
        e["spec_path"] = p.as_str().into();
    }
    if m.cost != crate::McpToolCost::default() {
        e["mcp_info"] = mcp_info(&m.cost);
    }
    if !m.command.is_empty() {
        e["command"] = m.command.as_str().into();
        e["args"] = m.args.clone().into();
        e["env"] = m
            .env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.expose())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    e
}

/// An agent given through the management API (LiteLLM's `/v1/agents` body: `agent_name`,
/// `agent_card_params`, `litellm_params`, `agent_access_groups`) compiled exactly like an
/// `agents` entry in `config.yaml`, under the registry's `id`, `os.environ/NAME` resolved
/// with `lookup`. Errors are `(path in the entry, message)`; the warnings name ignored
/// fields.
pub fn compile_agent(
    id: &str,
    entry: &serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(crate::A2aAgent, Vec<String>), (String, String)> {
    schema::compile_agent_entry(id, api_entry(entry, lookup)?)
}

/// An agent as the `agents` entry that compiles to it. `secrets`: with its headers' values
/// (what an update is merged over); without, their names only, each valued `***` (what
/// callers are shown).
pub fn agent_entry(a: &crate::A2aAgent, secrets: bool) -> serde_json::Value {
    let mut card = match &a.card {
        Some(serde_json::Value::Object(c)) => c.clone(),
        _ => serde_json::Map::new(),
    };
    card.entry("url").or_insert_with(|| a.url.as_str().into());
    let headers: serde_json::Map<_, _> = a
        .headers
        .iter()
        .map(|(k, v)| {
            let v = if secrets { v.expose() } else { "***" };
            (k.clone(), serde_json::Value::from(v))
        })
        .collect();
    let mut params = serde_json::json!({"headers": headers, "make_public": a.public});
    if a.cost_per_query > 0.0 {
        params["cost_per_query"] = a.cost_per_query.into();
    }
    serde_json::json!({
        "agent_name": a.name,
        "agent_card_params": card,
        "litellm_params": params,
        "agent_access_groups": a.access_groups,
    })
}

/// LiteLLM's `mcp_info` for a server's tool-call cost.
pub fn mcp_info(cost: &crate::McpToolCost) -> serde_json::Value {
    serde_json::json!({"mcp_server_cost_info": {
        "default_cost_per_query": cost.per_call,
        "tool_name_to_cost_per_query": cost
            .per_tool
            .iter()
            .map(|(t, c)| (t.clone(), serde_json::Value::from(*c)))
            .collect::<serde_json::Map<_, _>>(),
    }})
}

/// The credential a `/model/new` body refers to (`litellm_params.litellm_credential_name`;
/// empty: none, as LiteLLM reads it).
pub fn credential_name(entry: &serde_json::Value) -> Option<&str> {
    entry
        .get("litellm_params")?
        .get("litellm_credential_name")?
        .as_str()
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests;
