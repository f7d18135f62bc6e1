//! The MCP server registry (`mcp_servers`): a server's address and tool filters in
//! `config`, its credentials (auth value and static headers) sealed in `auth`, like
//! provider keys. `server_id` is the server's name; `config.source` says who owns the row
//! (`config`: the imported config file, which replaces its rows on each import).

use std::collections::BTreeMap;

use routeiq_proto::{McpAuth, McpServer, McpTransport, Secret};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Row};

use crate::crypto::SecretBox;
use crate::error::StoreError;

/// `config`: what is not secret.
#[derive(Serialize, Deserialize)]
struct Config {
    description: Option<String>,
    allowed_tools: Option<Vec<String>>,
    #[serde(default)]
    disallowed_tools: Vec<String>,
    #[serde(default)]
    access_groups: Vec<String>,
    #[serde(default)]
    allow_all_keys: bool,
    #[serde(default)]
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    oauth2: Option<routeiq_proto::OAuth2Client>,
    #[serde(default)]
    spec_path: Option<String>,
    #[serde(default)]
    cost: routeiq_proto::McpToolCost,
    source: String,
}

/// `auth`, sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    auth_type: String,
    auth_value: String,
    #[serde(default)]
    static_headers: BTreeMap<String, String>,
    /// A stdio server's environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("mcp_servers: {e}"))
}

/// Inserts or replaces a server.
pub async fn upsert(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    m: &McpServer,
    source: &str,
) -> Result<(), StoreError> {
    let config = Config {
        description: m.description.clone(),
        allowed_tools: m.allowed_tools.clone(),
        disallowed_tools: m.disallowed_tools.clone(),
        access_groups: m.access_groups.clone(),
        allow_all_keys: m.allow_all_keys,
        command: m.command.clone(),
        args: m.args.clone(),
        oauth2: m.oauth2.clone(),
        spec_path: m.spec_path.clone(),
        cost: m.cost.clone(),
        source: source.to_owned(),
    };
    let sealed = Sealed {
        auth_type: m.auth.kind().to_owned(),
        auth_value: m.auth.value().to_owned(),
        static_headers: m
            .static_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect(),
        env: m
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect(),
    };
    let sealed = secrets.seal(&serde_json::to_string(&sealed).map_err(corrupt)?)?;
    sqlx::query(
        "INSERT INTO mcp_servers (server_id, name, url, transport, auth, config)
         VALUES ($1, $1, $2, $3, $4, $5)
         ON CONFLICT (server_id) DO UPDATE SET
           url = EXCLUDED.url, transport = EXCLUDED.transport, auth = EXCLUDED.auth,
           config = EXCLUDED.config, updated_at = now()",
    )
    .bind(&m.name)
    .bind(&m.url)
    .bind(m.transport.as_str())
    .bind(sealed)
    .bind(serde_json::to_value(&config).map_err(corrupt)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: impl PgExecutor<'_>, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mcp_servers WHERE server_id = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every server with the source of its row, by name.
pub async fn load_all(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
) -> Result<Vec<(McpServer, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT server_id, url, transport, auth, config FROM mcp_servers ORDER BY server_id",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let transport: String = r.try_get("transport")?;
            let transport = McpTransport::parse(&transport)
                .ok_or_else(|| corrupt(format!("transport `{transport}`")))?;
            let config: Config = serde_json::from_value(r.try_get("config")?).map_err(corrupt)?;
            let sealed: Sealed = match r.try_get::<Option<Vec<u8>>, _>("auth")? {
                Some(b) => serde_json::from_str(&secrets.open(&b)?).map_err(corrupt)?,
                None => Sealed {
                    auth_type: "none".into(),
                    auth_value: String::new(),
                    static_headers: BTreeMap::new(),
                    env: BTreeMap::new(),
                },
            };
            let auth =
                McpAuth::from_parts(&sealed.auth_type, sealed.auth_value).map_err(corrupt)?;
            let server = McpServer {
                name: r.try_get("server_id")?,
                description: config.description,
                transport,
                url: r.try_get("url")?,
                auth,
                static_headers: sealed
                    .static_headers
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v)))
                    .collect(),
                allowed_tools: config.allowed_tools,
                disallowed_tools: config.disallowed_tools,
                access_groups: config.access_groups,
                allow_all_keys: config.allow_all_keys,
                command: config.command,
                args: config.args,
                oauth2: config.oauth2,
                spec_path: config.spec_path,
                cost: config.cost,
                env: sealed
                    .env
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v)))
                    .collect(),
            };
            Ok((server, config.source))
        })
        .collect()
}

/// A change as an entry of its own: the given fields, with a stand-in for the URL or
/// command its transport needs.
fn alone(given: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let mut e = given.clone();
    let stdio = e.get("transport").and_then(serde_json::Value::as_str) == Some("stdio");
    let (field, stand_in) = if stdio {
        ("command", "stand-in")
    } else {
        ("url", "http://stand-in.invalid/mcp")
    };
    e.entry(field).or_insert_with(|| stand_in.into());
    serde_json::Value::Object(e)
}

/// A server as the audit log records it: everything but its secrets.
fn redacted(m: &McpServer) -> serde_json::Value {
    serde_json::json!({
        "name": m.name, "url": m.url, "transport": m.transport.as_str(),
        "auth_type": m.auth.kind(), "has_auth_value": !m.auth.value().is_empty(),
        "static_headers": m.static_headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "allowed_tools": m.allowed_tools, "disallowed_tools": m.disallowed_tools,
        "access_groups": m.access_groups, "allow_all_keys": m.allow_all_keys,
        "description": m.description, "command": m.command, "args": m.args,
        "spec_path": m.spec_path,
        "mcp_info": routeiq_proto::litellm::mcp_info(&m.cost),
        "env": m.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
    })
}

/// A server change through the API (`source = 'api'`). `entry` is a LiteLLM `mcp_servers`
/// entry; on update it is merged over the stored server's (its fields replace the stored
/// ones, `null` removes one). Checked like a config entry, stored, audited and sent to data
/// planes as one delta. Returns the server, the ignored fields and the version.
pub async fn save(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    actor: &crate::audit::Actor,
    name: &str,
    entry: &serde_json::Value,
    create: bool,
) -> Result<(McpServer, Vec<String>, u64), StoreError> {
    if !McpServer::valid_name(name) {
        return Err(StoreError::Invalid(format!(
            "server name `{name}`: 1 to 64 letters, digits, `_` or `-`"
        )));
    }
    let serde_json::Value::Object(given) = entry else {
        return Err(StoreError::Invalid(
            "the server must be a JSON object".into(),
        ));
    };
    let mut tx = pool.begin().await?;
    crate::deployments::lock(&mut tx).await?;
    let before = load_all(&mut *tx, secrets)
        .await?
        .into_iter()
        .find(|(m, _)| m.name == name)
        .map(|(m, _)| m);
    let merged = match (&before, create) {
        (Some(_), true) => {
            return Err(StoreError::Conflict(format!(
                "MCP server `{name}` already exists"
            )))
        }
        (None, false) => {
            return Err(StoreError::NotFound(format!(
                "MCP server `{name}` not found"
            )))
        }
        (Some(old), false) => {
            let serde_json::Value::Object(mut e) = routeiq_proto::litellm::mcp_server_entry(old)
            else {
                return Err(StoreError::Corrupt(format!("mcp_servers.{name}")));
            };
            for (k, v) in given {
                if v.is_null() {
                    e.remove(k);
                } else {
                    e.insert(k.clone(), v.clone());
                }
            }
            serde_json::Value::Object(e)
        }
        (None, true) => entry.clone(),
    };
    let compile = |entry: &serde_json::Value| {
        routeiq_proto::litellm::compile_mcp_server(name, entry, &|v| std::env::var(v).ok()).map_err(
            |(at, m)| {
                if at.is_empty() {
                    m
                } else {
                    format!("{at}: {m}")
                }
            },
        )
    };
    let (server, warnings) = match compile(&merged) {
        Ok(compiled) => compiled,
        // A change that is sound on its own but not with what is stored (an OpenAPI file
        // for a stdio server): a conflict with the current state.
        Err(e) if before.is_some() && compile(&alone(given)).is_ok() => {
            return Err(StoreError::Conflict(format!(
                "{e} (with the stored server's other fields: give those it depends on too)"
            )))
        }
        Err(e) => return Err(StoreError::Invalid(e)),
    };
    upsert(&mut *tx, secrets, &server, "api").await?;
    let version = crate::changes::append(
        &mut tx,
        vec![routeiq_proto::DeltaOp::UpsertMcpServer(server.clone())],
    )
    .await?;
    crate::audit::record(
        &mut *tx,
        actor,
        crate::audit::Entry {
            action: if create {
                "mcp_server.create"
            } else {
                "mcp_server.update"
            },
            object_type: "mcp_server",
            object_id: name,
            before: before.as_ref().map(redacted),
            after: Some(redacted(&server)),
            snapshot_version: Some(version),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((server, warnings, version))
}

/// Deletes servers by name, as one delta.
pub async fn delete_many(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    actor: &crate::audit::Actor,
    names: &[String],
) -> Result<u64, StoreError> {
    if names.is_empty() {
        return Err(StoreError::Invalid("no MCP servers given".into()));
    }
    let mut tx = pool.begin().await?;
    crate::deployments::lock(&mut tx).await?;
    let all = load_all(&mut *tx, secrets).await?;
    let mut befores = Vec::with_capacity(names.len());
    for name in names {
        let (m, _) = all
            .iter()
            .find(|(m, _)| &m.name == name)
            .ok_or_else(|| StoreError::NotFound(format!("MCP server `{name}` not found")))?;
        befores.push(redacted(m));
    }
    sqlx::query("DELETE FROM mcp_servers WHERE server_id = ANY($1)")
        .bind(names)
        .execute(&mut *tx)
        .await?;
    let ops = names
        .iter()
        .map(|n| routeiq_proto::DeltaOp::DeleteMcpServer(n.clone()))
        .collect();
    let version = crate::changes::append(&mut tx, ops).await?;
    crate::audit::deletions(&mut tx, actor, "mcp_server", names, befores, version).await?;
    tx.commit().await?;
    Ok(version)
}
