//! Copies every skill version to every Anthropic deployment, in the background: on each
//! skill change (the API wakes it) and every `interval`, so deployments added later get
//! every skill too. A copy is recorded with a fingerprint of the deployment's address and
//! key; a deployment now pointing at another account gets new copies, and a removed
//! deployment's copies are forgotten. One control plane at a time copies (an advisory
//! lock); a failed upload is logged and tried again on the next round.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use routeiq_proto::{Deployment, ProviderKind, SkillCopy};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tracing::Instrument;

use super::bundle;
use super::Skills;
use crate::crypto::SecretBox;
use crate::error::StoreError;

/// Advisory lock id of a copying round ("RIQS").
const SYNC_LOCK: i64 = 0x5249_5153;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub copied: usize,
    pub failed: usize,
    pub dropped: usize,
    /// Another control plane was copying: nothing was done.
    pub busy: bool,
}

/// Rounds until the process ends. A round that found another control plane copying is
/// tried again a second later, so a change made here waits no longer than that.
pub async fn run(pool: PgPool, secrets: Arc<SecretBox>, skills: Arc<Skills>, interval: Duration) {
    loop {
        let wait = match once(&pool, &secrets, &skills).await {
            Ok(r) if r.busy => Duration::from_secs(1).min(interval),
            Ok(r) => {
                if r != Report::default() {
                    tracing::info!(?r, "skill copies updated");
                }
                interval
            }
            Err(e) => {
                tracing::warn!(error = %e, "skill copying failed; retrying");
                interval
            }
        };
        tokio::select! {
            _ = skills.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A fingerprint of where a deployment's calls go and whose key they carry.
fn account(d: &Deployment) -> String {
    let mut h = Sha256::new();
    h.update(d.api_base.as_bytes());
    h.update([0]);
    if let Some(k) = &d.api_key {
        h.update(k.expose().as_bytes());
    }
    routeiq_proto::hex(&h.finalize()[..12])
}

/// Whether `general_settings.allowed_egress` lets the control plane reach `d`.
async fn reachable(egress: Option<&routeiq_proto::AllowedEgress>, d: &Deployment) -> bool {
    let Some(egress) = egress else {
        return true;
    };
    let Ok(base) = routeiq_proto::ApiBase::parse(&d.api_base) else {
        return false;
    };
    match egress.by_name(&base.host) {
        routeiq_proto::EgressVerdict::Allowed => true,
        routeiq_proto::EgressVerdict::Refused => false,
        _ => match tokio::net::lookup_host((base.host.as_str(), base.port)).await {
            Ok(mut addrs) => addrs.all(|a| egress.allows(&base.host, a.ip())),
            Err(_) => false,
        },
    }
}

struct Stored {
    skill_id: String,
    version: String,
    object_key: String,
    display_name: String,
}

struct Copy {
    skill_id: String,
    version: String,
    deployment_id: String,
    account: String,
    upstream_skill_id: String,
}

/// One round: drops the copies of deployments that are gone or changed accounts, and
/// copies each version a deployment lacks, one version's bundle in memory at a time. A
/// deployment that fails an upload is left until the next round.
pub async fn once(
    pool: &PgPool,
    secrets: &SecretBox,
    skills: &Skills,
) -> Result<Report, StoreError> {
    let mut guard = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SYNC_LOCK)
        .fetch_one(&mut *guard)
        .await?;
    if !locked {
        return Ok(Report {
            busy: true,
            ..Report::default()
        });
    }
    let mut report = Report::default();
    let deployments: Vec<Deployment> = crate::deployments::load_all(pool, secrets)
        .await?
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| d.provider == ProviderKind::Anthropic)
        .collect();
    let accounts: HashMap<&str, String> = deployments
        .iter()
        .map(|d| (d.id.0.as_str(), account(d)))
        .collect();
    let versions: Vec<Stored> = sqlx::query(
        "SELECT v.skill_id, v.version, v.object_key, s.display_name
           FROM skill_versions v JOIN skills s USING (skill_id)
          ORDER BY v.skill_id, v.created_at, v.version",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok::<_, sqlx::Error>(Stored {
            skill_id: r.try_get("skill_id")?,
            version: r.try_get("version")?,
            object_key: r.try_get("object_key")?,
            display_name: r.try_get("display_name")?,
        })
    })
    .collect::<Result<_, _>>()?;
    let copies: Vec<Copy> = sqlx::query(
        "SELECT skill_id, version, deployment_id, account, upstream_skill_id FROM skill_copies",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok::<_, sqlx::Error>(Copy {
            skill_id: r.try_get("skill_id")?,
            version: r.try_get("version")?,
            deployment_id: r.try_get("deployment_id")?,
            account: r.try_get("account")?,
            upstream_skill_id: r.try_get("upstream_skill_id")?,
        })
    })
    .collect::<Result<_, _>>()?;

    // Copies of deployments that are gone, or that now reach another account.
    let mut stale: HashMap<&str, Vec<&Copy>> = HashMap::new();
    for c in &copies {
        if accounts.get(c.deployment_id.as_str()) != Some(&c.account) {
            stale.entry(c.skill_id.as_str()).or_default().push(c);
        }
    }
    for (skill_id, gone) in &stale {
        report.dropped += drop_copies(pool, skill_id, gone).await?;
    }
    let live: Vec<&Copy> = copies
        .iter()
        .filter(|c| accounts.get(c.deployment_id.as_str()) == Some(&c.account))
        .collect();

    let egress = crate::settings::load(pool).await?.allowed_egress;
    let mut targets: Vec<&Deployment> = Vec::new();
    for d in &deployments {
        if reachable(egress.as_ref(), d).await {
            targets.push(d);
        } else {
            tracing::warn!(deployment = %d.id.0, "general_settings.allowed_egress does not list this deployment's host: skills are not copied to it");
        }
    }
    // Upstream skill ids made this round, by (skill, deployment); deployments that failed.
    let mut made: HashMap<(&str, &str), String> = HashMap::new();
    let mut failing: HashSet<&str> = HashSet::new();
    for v in &versions {
        let lacking: Vec<&Deployment> = targets
            .iter()
            .copied()
            .filter(|d| !failing.contains(d.id.0.as_str()))
            .filter(|d| {
                !live.iter().any(|c| {
                    c.skill_id == v.skill_id && c.deployment_id == d.id.0 && c.version == v.version
                })
            })
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let files = match skills.objects.get(&v.object_key).await {
            Ok(zip) => bundle::unzip(&zip),
            Err(e) => Err(e),
        };
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(skill = %v.skill_id, version = %v.version, error = %e, "a skill version's bundle is unreadable: not copied");
                report.failed += lacking.len();
                continue;
            }
        };
        for d in lacking {
            let upstream = made
                .get(&(v.skill_id.as_str(), d.id.0.as_str()))
                .cloned()
                .or_else(|| {
                    live.iter()
                        .find(|c| c.skill_id == v.skill_id && c.deployment_id == d.id.0)
                        .map(|c| c.upstream_skill_id.clone())
                });
            let span = tracing::info_span!("skill.copy", skill = %v.skill_id, version = %v.version, deployment = %d.id.0);
            let copied = match &upstream {
                Some(up) => skills
                    .anthropic
                    .create_version(d, up, &files)
                    .instrument(span)
                    .await
                    .map(|ver| (up.clone(), ver)),
                None => {
                    skills
                        .anthropic
                        .create_skill(d, &v.display_name, &files)
                        .instrument(span)
                        .await
                }
            };
            let (up_id, up_version) = match copied {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(skill = %v.skill_id, version = %v.version, deployment = %d.id.0, error = %e, "copying a skill version failed; the deployment is tried again next round");
                    report.failed += 1;
                    failing.insert(d.id.0.as_str());
                    continue;
                }
            };
            made.insert((v.skill_id.as_str(), d.id.0.as_str()), up_id.clone());
            let copy = SkillCopy {
                version: v.version.clone(),
                deployment_id: d.id.0.clone(),
                upstream_skill_id: up_id,
                upstream_version: up_version,
            };
            if let Err(e) = record(pool, &v.skill_id, &copy, &accounts[d.id.0.as_str()]).await {
                // The skill or version went away meanwhile: take the copy back.
                tracing::info!(skill = %v.skill_id, error = %e, "skill changed while it was copied; removing the copy");
                let _ = skills
                    .anthropic
                    .delete_version(d, &copy.upstream_skill_id, &copy.upstream_version)
                    .await;
                if upstream.is_none() {
                    let _ = skills
                        .anthropic
                        .delete_skill(d, &copy.upstream_skill_id)
                        .await;
                }
                continue;
            }
            report.copied += 1;
        }
    }
    guard.rollback().await?;
    Ok(report)
}

/// Forgets copies of one skill (their deployment is gone or reaches another account) and
/// sends the skill to data planes; nothing when the skill itself is gone. Returns how many
/// were dropped.
async fn drop_copies(pool: &PgPool, skill_id: &str, gone: &[&Copy]) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await?;
    if !super::lock(&mut tx, skill_id).await? {
        return Ok(0);
    }
    for c in gone {
        sqlx::query(
            "DELETE FROM skill_copies WHERE skill_id = $1 AND version = $2 AND deployment_id = $3",
        )
        .bind(&c.skill_id)
        .bind(&c.version)
        .bind(&c.deployment_id)
        .execute(&mut *tx)
        .await?;
    }
    super::publish(&mut tx, skill_id).await?;
    tx.commit().await?;
    Ok(gone.len())
}

/// Records a copy and sends the skill to data planes.
async fn record(
    pool: &PgPool,
    skill_id: &str,
    c: &SkillCopy,
    account: &str,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if !super::lock(&mut tx, skill_id).await? {
        return Err(StoreError::NotFound(format!("skill `{skill_id}` is gone")));
    }
    sqlx::query(
        "INSERT INTO skill_copies (skill_id, version, deployment_id, account, upstream_skill_id, upstream_version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (skill_id, version, deployment_id) DO UPDATE SET
           account = EXCLUDED.account, upstream_skill_id = EXCLUDED.upstream_skill_id,
           upstream_version = EXCLUDED.upstream_version, created_at = now()",
    )
    .bind(skill_id)
    .bind(&c.version)
    .bind(&c.deployment_id)
    .bind(account)
    .bind(&c.upstream_skill_id)
    .bind(&c.upstream_version)
    .execute(&mut *tx)
    .await?;
    super::publish(&mut tx, skill_id).await?;
    tx.commit().await?;
    Ok(())
}

/// After a skill or version is deleted: removes its bundles, and its copies at the
/// providers (each version, then the skill itself when `whole`). Failures are logged: the
/// registry no longer names those copies, so no request loads them.
pub async fn forget(
    pool: PgPool,
    secrets: Arc<SecretBox>,
    skills: Arc<Skills>,
    keys: Vec<String>,
    copies: Vec<SkillCopy>,
    whole: bool,
) {
    for k in &keys {
        let _ = skills.objects.delete(k).await;
    }
    if copies.is_empty() {
        return;
    }
    let deployments: HashMap<String, Deployment> = match crate::deployments::load_all(
        &pool, &secrets,
    )
    .await
    {
        Ok(all) => all.into_iter().map(|(d, _)| (d.id.0.clone(), d)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot remove a deleted skill's copies at the providers");
            return;
        }
    };
    let egress = match crate::settings::load(&pool).await {
        Ok(s) => s.allowed_egress,
        Err(e) => {
            tracing::warn!(error = %e, "cannot remove a deleted skill's copies at the providers");
            return;
        }
    };
    let mut skills_at: HashSet<(&str, &str)> = HashSet::new();
    for c in &copies {
        let Some(d) = deployments.get(&c.deployment_id) else {
            continue;
        };
        if !reachable(egress.as_ref(), d).await {
            continue;
        }
        if let Err(e) = skills
            .anthropic
            .delete_version(d, &c.upstream_skill_id, &c.upstream_version)
            .await
        {
            tracing::warn!(deployment = %c.deployment_id, error = %e, "removing a skill version's copy failed");
        }
        skills_at.insert((c.deployment_id.as_str(), c.upstream_skill_id.as_str()));
    }
    if whole {
        for (deployment, upstream) in skills_at {
            if let Err(e) = skills
                .anthropic
                .delete_skill(&deployments[deployment], upstream)
                .await
            {
                tracing::warn!(deployment, error = %e, "removing a skill's copy failed");
            }
        }
    }
}
