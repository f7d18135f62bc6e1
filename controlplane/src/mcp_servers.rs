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
    source: String,
}

/// `auth`, sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    auth_type: String,
    auth_value: String,
    #[serde(default)]
    static_headers: BTreeMap<String, String>,
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
            };
            Ok((server, config.source))
        })
        .collect()
}
