//! Who a presented key is, for the admin API's access checks: the master key, or a virtual
//! key with its user's role and team memberships.

use routeiq_proto::KeyHash;
use sqlx::{PgPool, Row};

use crate::error::StoreError;
use crate::settings;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Principal {
    pub master: bool,
    pub key_hash: String,
    pub user_id: Option<String>,
    pub user_role: Option<String>,
    pub team_id: Option<String>,
    pub member_team_ids: Vec<String>,
    pub admin_team_ids: Vec<String>,
}

/// Resolves `key`. Unknown, blocked (the key or its team) and expired keys are
/// [`StoreError::Unauthenticated`]; so is every key when no master key is configured,
/// because then nobody can be told apart from an administrator.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Principal, StoreError> {
    let hash = KeyHash::of(key);
    let Some(master) = settings::load(pool).await?.master_key_hash else {
        return Err(StoreError::Unauthenticated(
            "no master key is configured (general_settings.master_key): the admin API is disabled"
                .into(),
        ));
    };
    if master.ct_eq(&hash) {
        return Ok(Principal {
            master: true,
            ..Principal::default()
        });
    }
    let row = sqlx::query(
        "SELECT k.user_id, k.team_id, u.user_role,
                (k.blocked OR COALESCE(t.blocked, false)) AS blocked,
                COALESCE(k.expires_at <= now(), false) AS expired,
                ARRAY(SELECT m.team_id FROM team_memberships m
                       WHERE m.user_id = k.user_id ORDER BY m.team_id) AS member_teams,
                ARRAY(SELECT m.team_id FROM team_memberships m
                       WHERE m.user_id = k.user_id AND m.role = 'admin'
                       ORDER BY m.team_id) AS admin_teams
           FROM virtual_keys k
           LEFT JOIN teams t ON t.team_id = k.team_id
           LEFT JOIN users u ON u.user_id = k.user_id
          WHERE k.key_hash = $1",
    )
    .bind(hash.0.to_vec())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::Unauthenticated("invalid API key".into()))?;
    if row.try_get::<bool, _>("blocked")? {
        return Err(StoreError::Unauthenticated("this key is blocked".into()));
    }
    if row.try_get::<bool, _>("expired")? {
        return Err(StoreError::Unauthenticated("this key has expired".into()));
    }
    Ok(Principal {
        master: false,
        key_hash: hash.to_hex(),
        user_id: row.try_get("user_id")?,
        user_role: row.try_get("user_role")?,
        team_id: row.try_get("team_id")?,
        member_team_ids: row.try_get("member_teams")?,
        admin_team_ids: row.try_get("admin_teams")?,
    })
}
