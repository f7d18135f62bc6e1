//! Gateway-wide settings (`settings` table): the master key's hash, router settings, the
//! request-size limit, the end-user header, the egress allow-list and the response cache,
//! as imported from `config.yaml`.

use std::time::Duration;

use routeiq_proto::{GatewaySettings, KeyHash, RouterSettings, RoutingStrategy, Snapshot};
use serde_json::{json, Value};
use sqlx::{PgExecutor, Row};

use crate::error::StoreError;

fn to_json(s: &GatewaySettings) -> Value {
    json!({
        "master_key_hash": s.master_key_hash.map(|h| h.to_hex()),
        "router": Value::Object(s.router.to_litellm()),
        "max_request_body_bytes": s.max_request_body_bytes,
        "user_header_name": s.user_header_name,
        "allowed_egress": s.allowed_egress.as_ref().map(|e| e.entries()),
        "agent_access_default_deny": s.agent_access_default_deny,
        "cache": s.cache.as_ref().map(|c| Value::Object(c.to_litellm())),
        "turn_off_message_logging": s.turn_off_message_logging,
    })
}

fn from_json(v: &Value) -> Result<GatewaySettings, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("settings.gateway.{what}"));
    let master_key_hash = match v.get("master_key_hash") {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) => {
            Some(KeyHash::from_hex(h).ok_or_else(|| corrupt("master_key_hash"))?)
        }
        Some(_) => return Err(corrupt("master_key_hash")),
    };
    Ok(GatewaySettings {
        master_key_hash,
        router: match v.get("router") {
            Some(Value::Object(m)) => RouterSettings::from_litellm(m, "router")
                .map_err(|e| StoreError::Corrupt(format!("settings.gateway.{e}")))?,
            // Written before the router settings were stored whole.
            _ => RouterSettings {
                routing_strategy: RoutingStrategy::from_name(
                    v.get("routing_strategy")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
                request_timeout: v
                    .get("request_timeout_seconds")
                    .and_then(Value::as_f64)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                ..RouterSettings::default()
            },
        },
        max_request_body_bytes: v
            .get("max_request_body_bytes")
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .unwrap_or(Snapshot::DEFAULT_MAX_REQUEST_BODY_BYTES),
        user_header_name: v
            .get("user_header_name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        allowed_egress: match v.get("allowed_egress") {
            None | Some(Value::Null) => None,
            Some(list) => {
                let list: Vec<String> =
                    serde_json::from_value(list.clone()).map_err(|_| corrupt("allowed_egress"))?;
                Some(
                    routeiq_proto::AllowedEgress::parse(&list)
                        .map_err(|_| corrupt("allowed_egress"))?,
                )
            }
        },
        agent_access_default_deny: v
            .get("agent_access_default_deny")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        cache: match v.get("cache") {
            Some(Value::Object(m)) => Some(
                routeiq_proto::CacheSettings::from_litellm(m, "cache", &mut Vec::new())
                    .map_err(|(at, _)| corrupt(&at))?,
            ),
            _ => None,
        },
        turn_off_message_logging: v
            .get("turn_off_message_logging")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

pub async fn load(conn: impl PgExecutor<'_>) -> Result<GatewaySettings, StoreError> {
    let row = sqlx::query("SELECT value FROM settings WHERE name = 'gateway'")
        .fetch_optional(conn)
        .await?;
    match row {
        Some(r) => from_json(&r.try_get::<Value, _>("value")?),
        None => Ok(GatewaySettings::default()),
    }
}

pub async fn store(conn: impl PgExecutor<'_>, s: &GatewaySettings) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ('gateway', $1)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(to_json(s))
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_keeps_every_flag() {
        for flag in [false, true] {
            let s = GatewaySettings {
                agent_access_default_deny: flag,
                turn_off_message_logging: !flag,
                user_header_name: Some("x-end-user".into()),
                ..GatewaySettings::default()
            };
            assert_eq!(from_json(&to_json(&s)).unwrap(), s);
        }
        // Settings stored before the flag existed read as off.
        let mut old = to_json(&GatewaySettings::default());
        old.as_object_mut()
            .unwrap()
            .remove("turn_off_message_logging");
        assert!(!from_json(&old).unwrap().turn_off_message_logging);
    }
}
