//! The protobuf messages (`proto/routeiq/v1/*.proto`) and their conversions into the plain
//! domain types. Protobuf types stop here: everything past this module uses the domain
//! types, and a message that does not make sense is an [`InvalidMessage`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{
    A2aAgent, Delta, DeltaOp, Deployment, DeploymentId, GatewaySettings, KeyHash, McpAuth,
    McpServer, McpToolCost, McpTransport, ModelBudget, ModelInfo, OAuth2Client, ObjectPermission,
    ProviderKind, ProviderSettings, RouterSettings, RoutingStrategy, Scope, ScopeKind, Secret,
    Skill, SkillCopy, Snapshot, UsageEvent, VirtualKey,
};

/// Generated code for package `routeiq.v1`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod pb {
    tonic::include_proto!("routeiq.v1");
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidMessage {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidMessage {
    InvalidMessage::Invalid {
        field,
        message: message.into(),
    }
}

fn key_hash(field: &'static str, b: &[u8]) -> Result<KeyHash, InvalidMessage> {
    KeyHash::from_slice(b).ok_or_else(|| invalid(field, format!("{} bytes, not 32", b.len())))
}

/// Empty bytes mean "none".
fn optional_key_hash(field: &'static str, b: &[u8]) -> Result<Option<KeyHash>, InvalidMessage> {
    if b.is_empty() {
        Ok(None)
    } else {
        key_hash(field, b).map(Some)
    }
}

fn duration(field: &'static str, secs: Option<f64>) -> Result<Option<Duration>, InvalidMessage> {
    secs.map(|s| Duration::try_from_secs_f64(s).map_err(|e| invalid(field, e.to_string())))
        .transpose()
}

// ---- snapshot ----

impl From<&Snapshot> for pb::Snapshot {
    fn from(s: &Snapshot) -> Self {
        Self {
            keys: s.keys.iter().map(|k| k.as_ref().into()).collect(),
            ..header(s)
        }
    }
}

/// Everything of a snapshot but its keys.
fn header(s: &Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        version: s.version,
        master_key_hash: s.master_key_hash.map(|h| h.0.to_vec()).unwrap_or_default(),
        deployments: s.deployments.iter().map(Into::into).collect(),
        router: Some((&s.router).into()),
        max_request_body_bytes: s.max_request_body_bytes as u64,
        keys: Vec::new(),
        user_header_name: s.user_header_name.clone().unwrap_or_default(),
        scopes: s.scopes.iter().map(Into::into).collect(),
        allowed_egress: s.allowed_egress.as_ref().map(egress_to_pb),
        agent_access_default_deny: s.agent_access_default_deny,
        turn_off_message_logging: s.turn_off_message_logging,
        mcp_servers: s.mcp_servers.iter().map(Into::into).collect(),
        agents: s.agents.iter().map(Into::into).collect(),
        skills: s.skills.iter().map(Into::into).collect(),
        cache: s.cache.as_ref().map(cache_to_pb),
    }
}

impl From<&Skill> for pb::Skill {
    fn from(s: &Skill) -> Self {
        Self {
            id: s.id.clone(),
            versions: s.versions.clone(),
            copies: s
                .copies
                .iter()
                .map(|c| pb::SkillCopy {
                    version: c.version.clone(),
                    deployment_id: c.deployment_id.clone(),
                    upstream_skill_id: c.upstream_skill_id.clone(),
                    upstream_version: c.upstream_version.clone(),
                })
                .collect(),
        }
    }
}

impl From<pb::Skill> for Skill {
    fn from(s: pb::Skill) -> Self {
        Self {
            id: s.id,
            versions: s.versions,
            copies: s
                .copies
                .into_iter()
                .map(|c| SkillCopy {
                    version: c.version,
                    deployment_id: c.deployment_id,
                    upstream_skill_id: c.upstream_skill_id,
                    upstream_version: c.upstream_version,
                })
                .collect(),
        }
    }
}

impl From<&A2aAgent> for pb::A2aAgent {
    fn from(a: &A2aAgent) -> Self {
        Self {
            id: a.id.clone(),
            name: a.name.clone(),
            url: a.url.clone(),
            card_json: a.card.as_ref().map(|c| c.to_string()).unwrap_or_default(),
            headers: a
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            public: a.public,
            access_groups: a.access_groups.clone(),
            cost_per_query: a.cost_per_query,
        }
    }
}

impl TryFrom<pb::A2aAgent> for A2aAgent {
    type Error = InvalidMessage;
    fn try_from(a: pb::A2aAgent) -> Result<Self, InvalidMessage> {
        let card = match a.card_json.as_str() {
            "" => None,
            json => Some(
                serde_json::from_str(json)
                    .map_err(|e| invalid("agent.card_json", e.to_string()))?,
            ),
        };
        let mut headers: Vec<(String, Secret)> = a
            .headers
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        headers.sort_by(|x, y| x.0.cmp(&y.0));
        Ok(Self {
            id: a.id,
            name: a.name,
            url: a.url,
            card,
            headers,
            public: a.public,
            access_groups: a.access_groups,
            cost_per_query: a.cost_per_query,
        })
    }
}

impl From<&McpServer> for pb::McpServer {
    fn from(m: &McpServer) -> Self {
        Self {
            name: m.name.clone(),
            description: m.description.clone().unwrap_or_default(),
            transport: m.transport.as_str().to_owned(),
            url: m.url.clone(),
            auth_type: m.auth.kind().to_owned(),
            auth_value: m.auth.value().to_owned(),
            static_headers: m
                .static_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            restrict_tools: m.allowed_tools.is_some(),
            allowed_tools: m.allowed_tools.clone().unwrap_or_default(),
            disallowed_tools: m.disallowed_tools.clone(),
            access_groups: m.access_groups.clone(),
            allow_all_keys: m.allow_all_keys,
            command: m.command.clone(),
            args: m.args.clone(),
            oauth2_client_id: m
                .oauth2
                .as_ref()
                .map(|o| o.client_id.clone())
                .unwrap_or_default(),
            oauth2_token_url: m
                .oauth2
                .as_ref()
                .map(|o| o.token_url.clone())
                .unwrap_or_default(),
            oauth2_scopes: m
                .oauth2
                .as_ref()
                .map(|o| o.scopes.clone())
                .unwrap_or_default(),
            env: m
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            spec_path: m.spec_path.clone().unwrap_or_default(),
            cost_per_call: m.cost.per_call,
            cost_per_tool: m.cost.per_tool.iter().cloned().collect(),
        }
    }
}

impl From<&ObjectPermission> for pb::ObjectPermission {
    fn from(g: &ObjectPermission) -> Self {
        Self {
            servers: g.servers.clone(),
            access_groups: g.access_groups.clone(),
            tools: g
                .tools
                .iter()
                .map(|(s, t)| (s.clone(), pb::ToolNames { names: t.clone() }))
                .collect(),
            agents: g.agents.clone(),
            agent_access_groups: g.agent_access_groups.clone(),
        }
    }
}

/// An object permission off the wire; an empty one is none.
fn permission(g: Option<pb::ObjectPermission>) -> Option<std::sync::Arc<ObjectPermission>> {
    let g = g?;
    let g = ObjectPermission {
        servers: g.servers,
        access_groups: g.access_groups,
        tools: g.tools.into_iter().map(|(s, t)| (s, t.names)).collect(),
        agents: g.agents,
        agent_access_groups: g.agent_access_groups,
    };
    (!g.is_empty()).then(|| std::sync::Arc::new(g))
}

impl TryFrom<pb::McpServer> for McpServer {
    type Error = InvalidMessage;
    fn try_from(m: pb::McpServer) -> Result<Self, InvalidMessage> {
        let transport = McpTransport::parse(&m.transport)
            .ok_or_else(|| invalid("mcp_server.transport", m.transport.clone()))?;
        let auth = McpAuth::from_parts(&m.auth_type, m.auth_value)
            .map_err(|e| invalid("mcp_server.auth_type", e))?;
        let mut static_headers: Vec<(String, Secret)> = m
            .static_headers
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        static_headers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut env: Vec<(String, Secret)> = m
            .env
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        env.sort_by(|a, b| a.0.cmp(&b.0));
        let mut per_tool: Vec<(String, f64)> = m.cost_per_tool.into_iter().collect();
        per_tool.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            name: m.name,
            description: Some(m.description).filter(|d| !d.is_empty()),
            transport,
            url: m.url,
            auth,
            static_headers,
            allowed_tools: m.restrict_tools.then_some(m.allowed_tools),
            disallowed_tools: m.disallowed_tools,
            access_groups: m.access_groups,
            allow_all_keys: m.allow_all_keys,
            command: m.command,
            args: m.args,
            env,
            oauth2: (!m.oauth2_token_url.is_empty()).then_some(OAuth2Client {
                client_id: m.oauth2_client_id,
                token_url: m.oauth2_token_url,
                scopes: m.oauth2_scopes,
            }),
            spec_path: Some(m.spec_path).filter(|p| !p.is_empty()),
            cost: McpToolCost {
                per_call: m.cost_per_call,
                per_tool,
            },
        })
    }
}

impl TryFrom<pb::Snapshot> for Snapshot {
    type Error = InvalidMessage;
    fn try_from(s: pb::Snapshot) -> Result<Self, InvalidMessage> {
        let router = s
            .router
            .ok_or(InvalidMessage::Missing("snapshot.router"))?
            .try_into()?;
        Ok(Self {
            version: s.version,
            master_key_hash: optional_key_hash("snapshot.master_key_hash", &s.master_key_hash)?,
            deployments: s
                .deployments
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            router,
            max_request_body_bytes: usize::try_from(s.max_request_body_bytes)
                .map_err(|e| invalid("snapshot.max_request_body_bytes", e.to_string()))?,
            user_header_name: Some(s.user_header_name).filter(|h| !h.is_empty()),
            allowed_egress: s
                .allowed_egress
                .map(|e| egress_from_pb("snapshot.allowed_egress", e))
                .transpose()?,
            agent_access_default_deny: s.agent_access_default_deny,
            turn_off_message_logging: s.turn_off_message_logging,
            cache: s.cache.map(cache_from_pb).transpose()?,
            mcp_servers: s
                .mcp_servers
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            agents: s
                .agents
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            skills: s.skills.into_iter().map(Into::into).collect(),
            scopes: s
                .scopes
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            keys: s
                .keys
                .into_iter()
                .map(|k| VirtualKey::try_from(k).map(std::sync::Arc::new))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&RouterSettings> for pb::RouterSettings {
    fn from(r: &RouterSettings) -> Self {
        Self {
            routing_strategy: r.routing_strategy.name().to_owned(),
            request_timeout_seconds: r.request_timeout.map(|d| d.as_secs_f64()),
            litellm_json: serde_json::Value::Object(r.to_litellm()).to_string(),
        }
    }
}

impl TryFrom<pb::RouterSettings> for RouterSettings {
    type Error = InvalidMessage;
    fn try_from(r: pb::RouterSettings) -> Result<Self, InvalidMessage> {
        if !r.litellm_json.is_empty() {
            let m: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&r.litellm_json)
                    .map_err(|e| invalid("router.litellm_json", e.to_string()))?;
            return RouterSettings::from_litellm(&m, "router")
                .map_err(|e| invalid("router.litellm_json", e));
        }
        Ok(Self {
            routing_strategy: RoutingStrategy::from_name(&r.routing_strategy),
            request_timeout: duration("router.request_timeout_seconds", r.request_timeout_seconds)?,
            ..Default::default()
        })
    }
}

impl From<&GatewaySettings> for pb::GatewaySettings {
    fn from(s: &GatewaySettings) -> Self {
        Self {
            master_key_hash: s.master_key_hash.map(|h| h.0.to_vec()).unwrap_or_default(),
            router: Some((&s.router).into()),
            max_request_body_bytes: s.max_request_body_bytes as u64,
            user_header_name: s.user_header_name.clone().unwrap_or_default(),
            allowed_egress: s.allowed_egress.as_ref().map(egress_to_pb),
            agent_access_default_deny: s.agent_access_default_deny,
            turn_off_message_logging: s.turn_off_message_logging,
            cache: s.cache.as_ref().map(cache_to_pb),
        }
    }
}

fn cache_to_pb(c: &crate::CacheSettings) -> pb::CacheSettings {
    pb::CacheSettings {
        r#type: c.kind.as_str().into(),
        ttl_seconds: c.ttl.as_secs_f64(),
        namespace: c.namespace.clone().unwrap_or_default(),
        chat: c.call_types.chat,
        messages: c.call_types.messages,
        responses: c.call_types.responses,
        default_off: c.mode == crate::CacheMode::DefaultOff,
        scope: c.scope.as_str().into(),
        similarity_threshold: c.similarity_threshold,
        max_memory_bytes: c.max_memory_bytes,
        store_truncated: c.store_truncated,
        semantic: c.semantic.as_ref().map(|s| {
            let mut pb = pb::SemanticCache {
                max_messages: s.max_messages,
                max_entries: s.max_entries,
                ..Default::default()
            };
            match &s.encoder {
                crate::EncoderSource::Path(p) => pb.model_path = p.clone(),
                crate::EncoderSource::S3 { bucket, key } => {
                    pb.s3_bucket = bucket.clone();
                    pb.s3_key = key.clone();
                }
                crate::EncoderSource::Deployment(group) => pb.embedding_model = group.clone(),
            }
            pb
        }),
    }
}

fn cache_from_pb(c: pb::CacheSettings) -> Result<crate::CacheSettings, InvalidMessage> {
    use crate::{CacheKind, CacheMode, CacheScope};
    Ok(crate::CacheSettings {
        kind: match c.r#type.as_str() {
            "local" => CacheKind::Local,
            "redis" => CacheKind::Redis,
            other => return Err(invalid("settings.cache.type", format!("unknown `{other}`"))),
        },
        ttl: duration("settings.cache.ttl_seconds", Some(c.ttl_seconds))?
            .ok_or(InvalidMessage::Missing("settings.cache.ttl_seconds"))?,
        namespace: Some(c.namespace).filter(|n| !n.is_empty()),
        call_types: crate::CallTypes {
            chat: c.chat,
            messages: c.messages,
            responses: c.responses,
        },
        mode: if c.default_off {
            CacheMode::DefaultOff
        } else {
            CacheMode::DefaultOn
        },
        scope: match c.scope.as_str() {
            "team" => CacheScope::Team,
            "key" => CacheScope::Key,
            "global" => CacheScope::Global,
            other => {
                return Err(invalid(
                    "settings.cache.scope",
                    format!("unknown `{other}`"),
                ))
            }
        },
        similarity_threshold: c.similarity_threshold,
        max_memory_bytes: c.max_memory_bytes,
        store_truncated: c.store_truncated,
        semantic: c.semantic.map(semantic_from_pb).transpose()?,
    })
}

impl From<&crate::SemanticEntry> for pb::SemanticEntry {
    fn from(e: &crate::SemanticEntry) -> Self {
        Self {
            origin: e.origin.clone(),
            encoder: e.encoder.clone(),
            partition: e.partition.to_vec(),
            key: e.key.to_vec(),
            expires_ms: e.expires_ms,
            vector: e.vector.clone(),
        }
    }
}

impl TryFrom<pb::SemanticEntry> for crate::SemanticEntry {
    type Error = InvalidMessage;

    fn try_from(e: pb::SemanticEntry) -> Result<Self, InvalidMessage> {
        if e.vector.is_empty() || e.vector.iter().any(|x| !x.is_finite()) {
            return Err(invalid(
                "semantic_entry.vector",
                "empty, or not finite".to_owned(),
            ));
        }
        Ok(Self {
            partition: key_hash("semantic_entry.partition", &e.partition)?.0,
            key: key_hash("semantic_entry.key", &e.key)?.0,
            origin: e.origin,
            encoder: e.encoder,
            expires_ms: e.expires_ms,
            vector: e.vector,
        })
    }
}

fn semantic_from_pb(s: pb::SemanticCache) -> Result<crate::SemanticSettings, InvalidMessage> {
    let encoder = if !s.model_path.is_empty() {
        crate::EncoderSource::Path(s.model_path)
    } else if !s.embedding_model.is_empty() {
        crate::EncoderSource::Deployment(s.embedding_model)
    } else if !s.s3_bucket.is_empty() {
        crate::EncoderSource::S3 {
            bucket: s.s3_bucket,
            key: s.s3_key,
        }
    } else {
        return Err(InvalidMessage::Missing(
            "settings.cache.semantic.model_path",
        ));
    };
    if s.max_messages == 0 || s.max_entries == 0 {
        return Err(invalid(
            "settings.cache.semantic",
            "max_messages and max_entries must be above 0".to_owned(),
        ));
    }
    Ok(crate::SemanticSettings {
        encoder,
        max_messages: s.max_messages,
        max_entries: s.max_entries,
    })
}

fn egress_to_pb(e: &crate::AllowedEgress) -> pb::Egress {
    pb::Egress {
        allowed: e.entries().to_vec(),
    }
}

fn egress_from_pb(
    field: &'static str,
    e: pb::Egress,
) -> Result<crate::AllowedEgress, InvalidMessage> {
    crate::AllowedEgress::parse(&e.allowed).map_err(|m| invalid(field, m))
}

impl TryFrom<pb::GatewaySettings> for GatewaySettings {
    type Error = InvalidMessage;
    fn try_from(s: pb::GatewaySettings) -> Result<Self, InvalidMessage> {
        Ok(Self {
            master_key_hash: optional_key_hash("settings.master_key_hash", &s.master_key_hash)?,
            router: s
                .router
                .ok_or(InvalidMessage::Missing("settings.router"))?
                .try_into()?,
            max_request_body_bytes: usize::try_from(s.max_request_body_bytes)
                .map_err(|e| invalid("settings.max_request_body_bytes", e.to_string()))?,
            user_header_name: Some(s.user_header_name).filter(|h| !h.is_empty()),
            allowed_egress: s
                .allowed_egress
                .map(|e| egress_from_pb("settings.allowed_egress", e))
                .transpose()?,
            agent_access_default_deny: s.agent_access_default_deny,
            turn_off_message_logging: s.turn_off_message_logging,
            cache: s.cache.map(cache_from_pb).transpose()?,
        })
    }
}

impl From<&Deployment> for pb::Deployment {
    fn from(d: &Deployment) -> Self {
        let mi = &d.model_info;
        Self {
            id: d.id.0.clone(),
            model_name: d.model_name.clone(),
            provider: d.provider.as_str().into(),
            upstream_model: d.upstream_model.clone(),
            api_base: d.api_base.clone(),
            api_key: d.api_key.as_ref().map(|k| k.expose().to_owned()),
            api_version: d.api_version.clone(),
            timeout_seconds: d.timeout.map(|t| t.as_secs_f64()),
            rpm: d.rpm,
            tpm: d.tpm,
            weight: d.weight,
            mock_response: d.mock_response.clone(),
            tags: d.tags.clone(),
            stream_timeout_seconds: d.stream_timeout.map(|t| t.as_secs_f64()),
            params: d.settings.params.clone().into_iter().collect(),
            secret_params: d
                .settings
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            model_info: Some(pb::ModelInfo {
                max_input_tokens: mi.max_input_tokens,
                max_output_tokens: mi.max_output_tokens,
                input_cost_per_token: mi.input_cost_per_token,
                output_cost_per_token: mi.output_cost_per_token,
                mode: mi.mode.clone(),
                access_groups: mi.access_groups.clone(),
                extra_json: if mi.extra.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&mi.extra).unwrap_or_default()
                },
            }),
        }
    }
}

impl TryFrom<pb::Deployment> for Deployment {
    type Error = InvalidMessage;
    fn try_from(d: pb::Deployment) -> Result<Self, InvalidMessage> {
        let provider = ProviderKind::parse(&d.provider)
            .ok_or_else(|| invalid("deployment.provider", format!("unknown `{}`", d.provider)))?;
        let mi = d.model_info.unwrap_or_default();
        let extra: BTreeMap<String, serde_json::Value> = if mi.extra_json.is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(&mi.extra_json)
                .map_err(|e| invalid("deployment.model_info.extra_json", e.to_string()))?
        };
        Ok(Self {
            id: DeploymentId(d.id),
            model_name: d.model_name,
            provider,
            upstream_model: d.upstream_model,
            api_base: d.api_base,
            api_key: d.api_key.map(Secret::new),
            api_version: d.api_version,
            timeout: duration("deployment.timeout_seconds", d.timeout_seconds)?,
            rpm: d.rpm,
            tpm: d.tpm,
            weight: d.weight,
            mock_response: d.mock_response,
            tags: d.tags,
            stream_timeout: duration(
                "deployment.stream_timeout_seconds",
                d.stream_timeout_seconds,
            )?,
            model_info: ModelInfo {
                max_input_tokens: mi.max_input_tokens,
                max_output_tokens: mi.max_output_tokens,
                input_cost_per_token: mi.input_cost_per_token,
                output_cost_per_token: mi.output_cost_per_token,
                mode: mi.mode,
                access_groups: mi.access_groups,
                extra,
            },
            settings: ProviderSettings {
                params: d.params.into_iter().collect(),
                secrets: d
                    .secret_params
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v)))
                    .collect(),
            },
        })
    }
}

impl From<&VirtualKey> for pb::VirtualKey {
    fn from(k: &VirtualKey) -> Self {
        Self {
            key_hash: k.hash.0.to_vec(),
            key_alias: k.alias.clone(),
            team_id: k.team_id.clone(),
            team_alias: k.team_alias.clone(),
            user_id: k.user_id.clone(),
            organization_id: k.organization_id.clone(),
            organization_alias: k.organization_alias.clone(),
            model_budgets: k
                .model_budgets
                .iter()
                .map(|b| pb::ModelBudget {
                    model: b.model.clone(),
                    max_budget: b.max_budget,
                    spend: b.spend,
                })
                .collect(),
            models: k.models.to_vec(),
            team_models: k.team_models.to_vec(),
            max_budget: k.max_budget,
            soft_budget: k.soft_budget,
            spend: k.spend,
            expires_at: k.expires_at,
            blocked: k.blocked,
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            max_parallel_requests: k.max_parallel_requests,
            object_permission: k.permission.as_deref().map(Into::into),
            cache: k.cache.as_ref().map(|c| pb::KeyCachePolicy {
                no_cache: c.no_cache,
                no_store: c.no_store,
                use_cache: c.use_cache,
                namespace: c.namespace.clone().unwrap_or_default(),
            }),
        }
    }
}

impl TryFrom<pb::VirtualKey> for VirtualKey {
    type Error = InvalidMessage;
    fn try_from(k: pb::VirtualKey) -> Result<Self, InvalidMessage> {
        Ok(Self {
            hash: key_hash("virtual_key.key_hash", &k.key_hash)?,
            alias: k.key_alias,
            team_id: k.team_id,
            team_alias: k.team_alias,
            user_id: k.user_id,
            organization_id: k.organization_id,
            organization_alias: k.organization_alias,
            model_budgets: k
                .model_budgets
                .into_iter()
                .map(|b| ModelBudget {
                    model: b.model,
                    max_budget: b.max_budget,
                    spend: b.spend,
                })
                .collect(),
            models: k.models.into(),
            team_models: k.team_models.into(),
            max_budget: k.max_budget,
            soft_budget: k.soft_budget,
            spend: k.spend,
            expires_at: k.expires_at,
            blocked: k.blocked,
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            max_parallel_requests: k.max_parallel_requests,
            permission: permission(k.object_permission),
            cache: k.cache.map(|c| crate::CachePolicy {
                no_cache: c.no_cache,
                no_store: c.no_store,
                use_cache: c.use_cache,
                namespace: Some(c.namespace).filter(|n| !n.is_empty()),
            }),
        })
    }
}

fn scope_kind(field: &'static str, kind: &str) -> Result<ScopeKind, InvalidMessage> {
    ScopeKind::parse(kind).ok_or_else(|| invalid(field, format!("unknown scope kind `{kind}`")))
}

impl From<&Scope> for pb::Scope {
    fn from(s: &Scope) -> Self {
        Self {
            kind: s.kind.as_str().into(),
            id: s.id.clone(),
            max_budget: s.max_budget,
            soft_budget: s.soft_budget,
            spend: s.spend,
            rpm_limit: s.rpm_limit,
            tpm_limit: s.tpm_limit,
            max_parallel_requests: s.max_parallel_requests,
            object_permission: s.permission.as_deref().map(Into::into),
        }
    }
}

impl TryFrom<pb::Scope> for Scope {
    type Error = InvalidMessage;
    fn try_from(s: pb::Scope) -> Result<Self, InvalidMessage> {
        Ok(Self {
            kind: scope_kind("scope.kind", &s.kind)?,
            id: s.id,
            max_budget: s.max_budget,
            soft_budget: s.soft_budget,
            spend: s.spend,
            rpm_limit: s.rpm_limit,
            tpm_limit: s.tpm_limit,
            max_parallel_requests: s.max_parallel_requests,
            permission: permission(s.object_permission),
        })
    }
}

// ---- the stored snapshot: a header and key chunks ----

/// Keys per `KeyChunk` in the stored form.
const KEYS_PER_CHUNK: usize = 16 * 1024;

/// Why a stored snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StoredSnapshotError {
    #[error("stored snapshot is not valid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stored snapshot: {0}")]
    Invalid(#[from] InvalidMessage),
}

/// Encodes a snapshot in its stored form: a length-delimited `Snapshot` without keys,
/// then length-delimited `KeyChunk`s.
pub fn encode_stored(s: &Snapshot) -> Vec<u8> {
    use prost::Message;
    let mut out = Vec::with_capacity(64 + s.keys.len() * 64);
    header(s).encode_length_delimited(&mut out).ok();
    for chunk in s.keys.chunks(KEYS_PER_CHUNK) {
        pb::KeyChunk {
            keys: chunk.iter().map(|k| k.as_ref().into()).collect(),
        }
        .encode_length_delimited(&mut out)
        .ok();
    }
    out
}

/// Decodes the stored form chunk by chunk: at most one chunk of key messages is decoded
/// at a time.
pub fn decode_stored(mut bytes: &[u8]) -> Result<Snapshot, StoredSnapshotError> {
    use prost::Message;
    let header = pb::Snapshot::decode_length_delimited(&mut bytes)?;
    let mut snapshot = Snapshot::try_from(header)?;
    // Most keys share one of a few model lists: keep one copy of each.
    let mut lists: std::collections::HashSet<std::sync::Arc<[String]>> = Default::default();
    let mut intern = |list: &mut Vec<String>| match lists.get(list.as_slice()) {
        Some(shared) => std::sync::Arc::clone(shared),
        None => {
            let shared: std::sync::Arc<[String]> = std::mem::take(list).into();
            lists.insert(std::sync::Arc::clone(&shared));
            shared
        }
    };
    while !bytes.is_empty() {
        let chunk = pb::KeyChunk::decode_length_delimited(&mut bytes)?;
        snapshot.keys.reserve(chunk.keys.len());
        for mut k in chunk.keys {
            let models = intern(&mut k.models);
            let team_models = intern(&mut k.team_models);
            let mut key = VirtualKey::try_from(k)?;
            key.models = models;
            key.team_models = team_models;
            snapshot.keys.push(std::sync::Arc::new(key));
        }
    }
    Ok(snapshot)
}

// ---- deltas ----

impl From<&Delta> for pb::SnapshotDelta {
    fn from(d: &Delta) -> Self {
        use pb::delta_op::Op;
        Self {
            version: d.version,
            ops: d
                .ops
                .iter()
                .map(|op| pb::DeltaOp {
                    op: Some(match op {
                        DeltaOp::UpsertKey(k) => Op::UpsertKey(k.into()),
                        DeltaOp::DeleteKey(h) => Op::DeleteKey(h.0.to_vec()),
                        DeltaOp::KeySpend { hash, spend } => Op::KeySpend(pb::KeySpend {
                            key_hash: hash.0.to_vec(),
                            spend: *spend,
                        }),
                        DeltaOp::UpsertDeployment(d) => Op::UpsertDeployment(d.into()),
                        DeltaOp::DeleteDeployment(id) => Op::DeleteDeployment(id.0.clone()),
                        DeltaOp::Settings(s) => Op::Settings(s.into()),
                        DeltaOp::KeyModelSpend { hash, model, spend } => {
                            Op::KeyModelSpend(pb::KeyModelSpend {
                                key_hash: hash.0.to_vec(),
                                model: model.clone(),
                                spend: *spend,
                            })
                        }
                        DeltaOp::UpsertScope(s) => Op::UpsertScope(s.into()),
                        DeltaOp::DeleteScope { kind, id } => Op::DeleteScope(pb::ScopeRef {
                            kind: kind.as_str().into(),
                            id: id.clone(),
                        }),
                        DeltaOp::ScopeSpend { kind, id, spend } => Op::ScopeSpend(pb::ScopeSpend {
                            kind: kind.as_str().into(),
                            id: id.clone(),
                            spend: *spend,
                        }),
                        DeltaOp::Resync => Op::Resync(pb::Resync {}),
                        DeltaOp::UpsertMcpServer(m) => Op::UpsertMcpServer(m.into()),
                        DeltaOp::DeleteMcpServer(name) => Op::DeleteMcpServer(name.clone()),
                        DeltaOp::UpsertAgent(a) => Op::UpsertAgent(a.into()),
                        DeltaOp::DeleteAgent(id) => Op::DeleteAgent(id.clone()),
                        DeltaOp::UpsertSkill(s) => Op::UpsertSkill(s.into()),
                        DeltaOp::DeleteSkill(id) => Op::DeleteSkill(id.clone()),
                        DeltaOp::ForgetCached(f) => Op::ForgetCached(match f {
                            crate::ForgetCached::All => pb::ForgetCached {
                                all: true,
                                keys: Vec::new(),
                            },
                            crate::ForgetCached::Keys(keys) => pb::ForgetCached {
                                all: false,
                                keys: keys.clone(),
                            },
                        }),
                    }),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::SnapshotDelta> for Delta {
    type Error = InvalidMessage;
    fn try_from(d: pb::SnapshotDelta) -> Result<Self, InvalidMessage> {
        use pb::delta_op::Op;
        let ops = d
            .ops
            .into_iter()
            .map(|op| {
                Ok(match op.op.ok_or(InvalidMessage::Missing("delta_op.op"))? {
                    Op::UpsertKey(k) => DeltaOp::UpsertKey(k.try_into()?),
                    Op::DeleteKey(h) => DeltaOp::DeleteKey(key_hash("delta_op.delete_key", &h)?),
                    Op::KeySpend(s) => DeltaOp::KeySpend {
                        hash: key_hash("delta_op.key_spend.key_hash", &s.key_hash)?,
                        spend: s.spend,
                    },
                    Op::UpsertDeployment(d) => DeltaOp::UpsertDeployment(d.try_into()?),
                    Op::DeleteDeployment(id) => DeltaOp::DeleteDeployment(DeploymentId(id)),
                    Op::Settings(s) => DeltaOp::Settings(s.try_into()?),
                    Op::KeyModelSpend(s) => DeltaOp::KeyModelSpend {
                        hash: key_hash("delta_op.key_model_spend.key_hash", &s.key_hash)?,
                        model: s.model,
                        spend: s.spend,
                    },
                    Op::UpsertScope(s) => DeltaOp::UpsertScope(s.try_into()?),
                    Op::DeleteScope(r) => DeltaOp::DeleteScope {
                        kind: scope_kind("delta_op.delete_scope.kind", &r.kind)?,
                        id: r.id,
                    },
                    Op::ScopeSpend(s) => DeltaOp::ScopeSpend {
                        kind: scope_kind("delta_op.scope_spend.kind", &s.kind)?,
                        id: s.id,
                        spend: s.spend,
                    },
                    Op::Resync(pb::Resync {}) => DeltaOp::Resync,
                    Op::UpsertMcpServer(m) => DeltaOp::UpsertMcpServer(m.try_into()?),
                    Op::DeleteMcpServer(name) => DeltaOp::DeleteMcpServer(name),
                    Op::UpsertAgent(a) => DeltaOp::UpsertAgent(a.try_into()?),
                    Op::DeleteAgent(id) => DeltaOp::DeleteAgent(id),
                    Op::UpsertSkill(s) => DeltaOp::UpsertSkill(s.into()),
                    Op::DeleteSkill(id) => DeltaOp::DeleteSkill(id),
                    Op::ForgetCached(f) if f.all => DeltaOp::ForgetCached(crate::ForgetCached::All),
                    Op::ForgetCached(f) => DeltaOp::ForgetCached(crate::ForgetCached::Keys(f.keys)),
                })
            })
            .collect::<Result<_, InvalidMessage>>()?;
        Ok(Self {
            version: d.version,
            ops,
        })
    }
}

// ---- usage ----

impl From<&UsageEvent> for pb::UsageEvent {
    fn from(u: &UsageEvent) -> Self {
        Self {
            request_id: u.request_id.clone(),
            key_hash: u.key_hash.map(|h| h.0.to_vec()).unwrap_or_default(),
            team_id: u.team_id.clone(),
            user_id: u.user_id.clone(),
            model_group: u.model_group.clone(),
            deployment_id: u.deployment_id.clone(),
            provider: u.provider.clone(),
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost: u.cost,
            latency_ms: u.latency_ms,
            status: u32::from(u.status),
            started_at_ms: u.started_at_ms,
            dataplane_id: u.dataplane_id.clone(),
            end_user: u.end_user.clone(),
            cache_hit: u.cache_hit,
            saved_cost: u.saved_cost,
            router_sha256: u.router_sha256.clone(),
            router_arm: u.router_arm.clone(),
            router_candidate: u.router_candidate.clone(),
            shadow_sha256: u.shadow_sha256.clone(),
            shadow_candidate: u.shadow_candidate.clone(),
        }
    }
}

impl TryFrom<pb::UsageEvent> for UsageEvent {
    type Error = InvalidMessage;
    fn try_from(u: pb::UsageEvent) -> Result<Self, InvalidMessage> {
        if u.request_id.is_empty() {
            return Err(InvalidMessage::Missing("usage_event.request_id"));
        }
        Ok(Self {
            request_id: u.request_id,
            key_hash: optional_key_hash("usage_event.key_hash", &u.key_hash)?,
            team_id: u.team_id,
            user_id: u.user_id,
            model_group: u.model_group,
            deployment_id: u.deployment_id,
            provider: u.provider,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost: u.cost,
            latency_ms: u.latency_ms,
            status: u16::try_from(u.status)
                .map_err(|e| invalid("usage_event.status", e.to_string()))?,
            started_at_ms: u.started_at_ms,
            dataplane_id: u.dataplane_id,
            end_user: u.end_user,
            cache_hit: u.cache_hit,
            saved_cost: u.saved_cost,
            router_sha256: u.router_sha256,
            router_arm: u.router_arm,
            router_candidate: u.router_candidate,
            shadow_sha256: u.shadow_sha256,
            shadow_candidate: u.shadow_candidate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn snapshot_and_delta_round_trip_through_bytes() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/example.yaml"
        ))
        .unwrap();
        let mut snap =
            crate::litellm::compile(&text, std::path::Path::new("example.yaml"), &|_| None)
                .unwrap()
                .snapshot;
        snap.version = 7;
        snap.keys.push(std::sync::Arc::new(VirtualKey {
            hash: KeyHash::of("sk-a"),
            models: vec!["gpt-4o-mini".into()].into(),
            team_models: vec!["gpt-4o-mini".into(), "claude".into()].into(),
            soft_budget: Some(0.5),
            max_budget: Some(1.5),
            expires_at: Some(1_900_000_000),
            team_id: "team-1".into(),
            team_alias: "Search".into(),
            organization_id: "org-1".into(),
            organization_alias: "Acme".into(),
            model_budgets: vec![ModelBudget {
                model: "gpt-4o-mini".into(),
                max_budget: 0.5,
                spend: 0.125,
            }]
            .into(),
            permission: Some(std::sync::Arc::new(ObjectPermission {
                servers: vec!["github".into()],
                access_groups: vec!["dev".into()],
                tools: [("github".to_owned(), vec!["search".to_owned()])].into(),
                agents: vec!["planner".into()],
                agent_access_groups: vec!["support".into()],
            })),
            ..VirtualKey::default()
        }));
        let team = Scope {
            kind: ScopeKind::Team,
            id: "t1".into(),
            max_budget: Some(10.0),
            soft_budget: None,
            spend: 2.5,
            rpm_limit: Some(60),
            tpm_limit: None,
            max_parallel_requests: Some(4),
            permission: Some(std::sync::Arc::new(ObjectPermission {
                servers: vec!["open".into()],
                ..ObjectPermission::default()
            })),
        };
        snap.scopes.push(team.clone());
        snap.mcp_servers = vec![
            McpServer {
                name: "github".into(),
                description: Some("code".into()),
                transport: McpTransport::Http,
                url: "https://mcp.example/mcp".into(),
                auth: McpAuth::BearerToken(Secret::new("t")),
                static_headers: vec![
                    ("x-a".into(), Secret::new("1")),
                    ("x-b".into(), Secret::new("2")),
                ],
                allowed_tools: Some(Vec::new()),
                disallowed_tools: vec!["rm".into()],
                access_groups: vec!["dev".into()],
                ..McpServer::default()
            },
            McpServer {
                name: "open".into(),
                url: "http://10.0.0.1/mcp".into(),
                allow_all_keys: true,
                ..McpServer::default()
            },
            McpServer {
                name: "local".into(),
                transport: McpTransport::Stdio,
                command: "npx".into(),
                args: vec!["-y".into(), "server".into()],
                env: vec![
                    ("A".into(), Secret::new("1")),
                    ("B".into(), Secret::new("2")),
                ],
                ..McpServer::default()
            },
            McpServer {
                name: "m2m".into(),
                url: "https://mcp.example/m2m".into(),
                auth: McpAuth::OAuth2(Secret::new("client-secret")),
                oauth2: Some(OAuth2Client {
                    client_id: "cid".into(),
                    token_url: "https://auth.example/token".into(),
                    scopes: vec!["tools:read".into()],
                }),
                spec_path: Some("/etc/routeiq/petstore.yaml".into()),
                cost: McpToolCost {
                    per_call: 0.01,
                    per_tool: vec![("get_pet".into(), 0.05), ("list_pets".into(), 0.0)],
                },
                ..McpServer::default()
            },
        ];
        snap.agents = vec![
            A2aAgent {
                id: "4f1c".into(),
                name: "planner".into(),
                url: "https://agents.example/planner/".into(),
                card: Some(serde_json::json!({"name": "Planner", "url": "https://x/"})),
                headers: vec![
                    ("authorization".into(), Secret::new("Bearer t")),
                    ("x-team".into(), Secret::new("a")),
                ],
                public: true,
                access_groups: vec!["support".into()],
                cost_per_query: 0.05,
            },
            A2aAgent {
                id: "echo".into(),
                name: "echo".into(),
                url: "http://10.0.0.2:9000/".into(),
                ..A2aAgent::default()
            },
        ];
        snap.skills = vec![Skill {
            id: "skill_1".into(),
            versions: vec!["100".into(), "200".into()],
            copies: vec![SkillCopy {
                version: "200".into(),
                deployment_id: "claude-1".into(),
                upstream_skill_id: "skill_up".into(),
                upstream_version: "9".into(),
            }],
        }];
        snap.turn_off_message_logging = true;
        let bytes = pb::Snapshot::from(&snap).encode_to_vec();
        let back = Snapshot::try_from(pb::Snapshot::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, snap);
        // The stored form, with enough keys for several chunks.
        for i in 0..40_000 {
            snap.keys.push(std::sync::Arc::new(VirtualKey {
                hash: KeyHash::of(&format!("sk-{i}")),
                spend: f64::from(i),
                ..VirtualKey::default()
            }));
        }
        assert_eq!(decode_stored(&encode_stored(&snap)).unwrap(), snap);
        assert!(decode_stored(&encode_stored(&snap)[..100]).is_err());

        let delta = Delta {
            version: 8,
            ops: vec![
                DeltaOp::DeleteKey(KeyHash::of("sk-a")),
                DeltaOp::KeySpend {
                    hash: KeyHash::of("sk-b"),
                    spend: 2.0,
                },
                DeltaOp::Settings(snap.settings()),
                DeltaOp::UpsertScope(team),
                DeltaOp::KeyModelSpend {
                    hash: KeyHash::of("sk-a"),
                    model: "gpt-4o-mini".into(),
                    spend: 0.25,
                },
                DeltaOp::ScopeSpend {
                    kind: ScopeKind::User,
                    id: "u1".into(),
                    spend: 1.25,
                },
                DeltaOp::DeleteScope {
                    kind: ScopeKind::Organization,
                    id: "o1".into(),
                },
                DeltaOp::Resync,
                DeltaOp::UpsertSkill(Skill {
                    id: "skill_1".into(),
                    versions: vec!["100".into()],
                    copies: Vec::new(),
                }),
                DeltaOp::DeleteSkill("skill_2".into()),
                DeltaOp::ForgetCached(crate::ForgetCached::All),
                DeltaOp::ForgetCached(crate::ForgetCached::Keys(vec!["ab".repeat(32)])),
            ],
        };
        let bytes = pb::SnapshotDelta::from(&delta).encode_to_vec();
        let back = Delta::try_from(pb::SnapshotDelta::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, delta);
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        let mut k = pb::VirtualKey::from(&VirtualKey::default());
        k.key_hash = vec![1, 2, 3];
        assert!(matches!(
            VirtualKey::try_from(k),
            Err(InvalidMessage::Invalid { .. })
        ));
        assert_eq!(
            Snapshot::try_from(pb::Snapshot::default()),
            Err(InvalidMessage::Missing("snapshot.router"))
        );
        let d = pb::SnapshotDelta {
            version: 1,
            ops: vec![pb::DeltaOp { op: None }],
        };
        assert_eq!(
            Delta::try_from(d),
            Err(InvalidMessage::Missing("delta_op.op"))
        );
    }
}
