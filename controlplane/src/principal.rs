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

/// The answer about a key: who it is, or why it is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accepted(Principal),
    Rejected(String),
}

/// Resolves `key`. Unknown, blocked (the key or its team) and expired keys are rejected;
/// so is every key when no master key is configured, because then nobody can be told
/// apart from an administrator.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Verdict, StoreError> {
    let hash = KeyHash::of(key);
    let Some(master) = settings::load(pool).await?.master_key_hash else {
        return Ok(Verdict::Rejected(
            "no master key is configured (general_settings.master_key): the admin API is disabled"
                .into(),
        ));
    };
    if master.ct_eq(&hash) {
        return Ok(Verdict::Accepted(Principal {
            master: true,
            ..Principal::default()
        }));
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
    .await?;
    let Some(row) = row else {
        return Ok(Verdict::Rejected("invalid API key".into()));
    };
    if row.try_get::<bool, _>("blocked")? {
        return Ok(Verdict::Rejected("this key is blocked".into()));
    }
    if row.try_get::<bool, _>("expired")? {
        return Ok(Verdict::Rejected("this key has expired".into()));
    }
    Ok(Verdict::Accepted(Principal {
        master: false,
        key_hash: hash.to_hex(),
        user_id: row.try_get("user_id")?,
        user_role: row.try_get("user_role")?,
        team_id: row.try_get("team_id")?,
        member_team_ids: row.try_get("member_teams")?,
        admin_team_ids: row.try_get("admin_teams")?,
    }))
}
