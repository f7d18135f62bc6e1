#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test failing
//! Control-plane integration tests against a real PostgreSQL server. `scripts/test.sh`
//! starts one and sets `ROUTEIQ_TEST_DATABASE_URL` (an admin URL); each test creates its
//! own database.

use std::path::Path;

use routeiq_controlplane::audit::Actor;
use routeiq_controlplane::budget::Limits;
use routeiq_controlplane::crypto::SecretBox;
use routeiq_controlplane::keys::{self, KeyFields};
use routeiq_controlplane::{db, import, ingest, resets, snapshot};
use routeiq_proto::{litellm, DeltaOp, KeyHash, Snapshot, UsageEvent};
use sqlx::{Connection, PgConnection, PgPool, Row};

async fn fresh_db() -> PgPool {
    let admin = std::env::var("ROUTEIQ_TEST_DATABASE_URL").expect(
        "ROUTEIQ_TEST_DATABASE_URL is not set: run the tests through scripts/test.sh, which starts PostgreSQL",
    );
    let name = format!("it_{:016x}", fastrand_u64());
    let mut conn = PgConnection::connect(&admin).await.unwrap();
    // `name` is generated hex, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    db::connect(&format!("{base}/{name}")).await.unwrap()
}

fn fastrand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn config(text: &str) -> Snapshot {
    loaded(text).snapshot
}

fn loaded(text: &str) -> litellm::Loaded {
    litellm::compile(text, Path::new("test.yaml"), &|_| None).unwrap()
}

const CONFIG: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-upstream-secret-1234
      rpm: 100
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: sk-ant-secret-5678
    model_info:
      access_groups: [beta]
      custom_field: 7
  - model_name: fake
    litellm_params:
      model: mock/fake
general_settings:
  master_key: sk-master-1
  allowed_egress: ["*.openai.azure.com", "api.anthropic.com", "10.0.0.0/8"]
router_settings:
  routing_strategy: simple-shuffle
credential_list:
  - credential_name: azure-east
    credential_values:
      api_key: az-cred-secret-42
      api_base: https://east.example.com
    credential_info:
      description: east region
"#;

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let tables: i64 = sqlx::query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'
           AND table_name IN ('virtual_keys','teams','users','organizations','team_memberships',
             'budgets','spend_logs','daily_spend','model_deployments','credentials','agents',
             'mcp_servers','skills','routing_model_versions','config_versions','audit_log',
             'snapshot_deltas','settings')",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(tables, 18);
    let applied: i64 = sqlx::query("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn config_import_is_idempotent_and_the_snapshot_matches_the_config() {
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let secrets = SecretBox::new("test-salt");
    let cfg = config(CONFIG);

    let file = loaded(CONFIG);
    assert_eq!(file.credentials.len(), 1);
    let first = import::import(&pool, &secrets, &file, "test.yaml")
        .await
        .unwrap();
    assert_eq!(
        (first.upserted, first.removed, first.version),
        (3, 0, Some(1))
    );
    assert!(first.settings_changed);
    assert_eq!(first.credentials, 1);
    let again = import::import(&pool, &secrets, &file, "test.yaml")
        .await
        .unwrap();
    assert_eq!(
        again,
        import::Imported {
            upserted: 0,
            credentials: 0,
            removed: 0,
            settings_changed: false,
            version: None
        }
    );

    let snap = snapshot::build(&pool, &secrets).await.unwrap();
    assert_eq!(snap.version, 1);
    assert_eq!(snap.master_key_hash, Some(KeyHash::of("sk-master-1")));
    // The egress allow-list survives the database and the wire.
    assert!(cfg.allowed_egress.is_some());
    assert_eq!(snap.allowed_egress, cfg.allowed_egress);
    let wire = routeiq_proto::wire::pb::Snapshot::from(&snap);
    let back = routeiq_proto::Snapshot::try_from(wire).unwrap();
    assert_eq!(back.allowed_egress, cfg.allowed_egress);
    let mut got = snap.deployments.clone();
    let mut want = cfg.deployments.clone();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, want);

    // Provider keys are encrypted at rest.
    let stored: Vec<Vec<u8>> =
        sqlx::query("SELECT api_key FROM model_deployments WHERE api_key IS NOT NULL")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(stored.len(), 2);
    for s in &stored {
        assert!(!s.windows(9).any(|w| w == b"sk-upstre" || w == b"sk-ant-se"));
    }
    let (sealed, info): (Vec<u8>, serde_json::Value) =
        sqlx::query_as("SELECT credential_values, credential_info FROM credentials")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!sealed.windows(9).any(|w| w == b"az-cred-s"));
    assert_eq!(info["description"], "east region");
    assert!(snapshot::build(&pool, &SecretBox::new("wrong-salt"))
        .await
        .is_err());

    // Dropping a deployment from the file removes it, in a new version.
    let smaller = loaded(&CONFIG.replace(
        "  - model_name: fake\n    litellm_params:\n      model: mock/fake\n",
        "",
    ));
    let r = import::import(&pool, &secrets, &smaller, "test.yaml")
        .await
        .unwrap();
    assert_eq!((r.upserted, r.removed, r.version), (0, 1, Some(2)));
    let snap = snapshot::build(&pool, &secrets).await.unwrap();
    assert_eq!((snap.version, snap.deployments.len()), (2, 2));
    let audits: i64 = sqlx::query("SELECT count(*) FROM audit_log WHERE action = 'config.import'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(audits, 3);
    let versions: i64 = sqlx::query("SELECT count(*) FROM config_versions")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 2, "two distinct files imported");
}

/// The deltas stored after version `after`, decoded.
async fn deltas_after(pool: &PgPool, after: u64) -> Vec<routeiq_proto::Delta> {
    use prost::Message;
    sqlx::query("SELECT ops FROM snapshot_deltas WHERE version > $1 ORDER BY version")
        .bind(after as i64)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let b: Vec<u8> = r.get(0);
            routeiq_proto::Delta::try_from(
                routeiq_proto::wire::pb::SnapshotDelta::decode(b.as_slice()).unwrap(),
            )
            .unwrap()
        })
        .collect()
}

fn event(id: &str, key: KeyHash, cost: f64) -> UsageEvent {
    UsageEvent {
        request_id: id.into(),
        key_hash: Some(key),
        model_group: "gpt".into(),
        prompt_tokens: 3,
        completion_tokens: 4,
        cost,
        status: 200,
        started_at_ms: 1_795_000_000_123,
        ..UsageEvent::default()
    }
}

#[tokio::test]
async fn usage_ingestion_is_idempotent_and_budgeted_spend_becomes_deltas() {
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    let fields = KeyFields {
        limits: Limits {
            max_budget: Some(1.0),
            ..Limits::default()
        },
        ..KeyFields::default()
    };
    let (key, _, v0) = keys::generate(&pool, &actor, None, &fields).await.unwrap();
    let h = KeyHash::of(&key);

    let batch: Vec<_> = (0..4).map(|i| event(&format!("r{i}"), h, 0.2)).collect();
    assert_eq!(ingest::write(&pool, &batch).await.unwrap(), 4);
    // Redelivered, and mixed with new events: only the new ones count.
    let mut again = batch.clone();
    again.push(event("r4", h, 0.3));
    again.push(event("r4", h, 0.3)); // the same event twice in one batch
    assert_eq!(ingest::write(&pool, &again).await.unwrap(), 1);

    let rec = keys::get(&pool, &h).await.unwrap();
    assert!((rec.spend - 1.1).abs() < 1e-9, "spend {}", rec.spend);
    let (rows, requests): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM spend_logs), (SELECT sum(requests)::bigint FROM daily_spend)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, requests), (5, 5));
    // A key with a budget: each batch that added to its spend sent the new spend (the
    // redelivered events of the second batch counted nothing, its new one 0.3).
    let spends: Vec<f64> = deltas_after(&pool, v0)
        .await
        .iter()
        .map(|d| match d.ops.as_slice() {
            [DeltaOp::KeySpend { hash, spend }] if *hash == h => *spend,
            other => panic!("unexpected ops {other:?}"),
        })
        .collect();
    assert_eq!(spends.len(), 2, "{spends:?}");
    assert!((spends[0] - 0.8).abs() < 1e-9 && (spends[1] - 1.1).abs() < 1e-9);
    // A batch that adds nothing (all redelivered) sends nothing.
    assert_eq!(ingest::write(&pool, &again).await.unwrap(), 0);
    assert_eq!(deltas_after(&pool, v0).await.len(), 2);
}

#[tokio::test]
async fn due_budgets_reset_once_and_go_out_as_deltas() {
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    let fields = KeyFields {
        limits: Limits {
            max_budget: Some(1.0),
            budget_duration: Some("1h".into()),
            ..Limits::default()
        },
        ..KeyFields::default()
    };
    let (key, rec, v0) = keys::generate(&pool, &actor, None, &fields).await.unwrap();
    assert!(rec.budget_reset_at.is_some());
    let h = KeyHash::of(&key);
    ingest::write(&pool, &[event("r1", h, 0.5)]).await.unwrap();
    // Not due yet.
    assert_eq!(resets::reset_due(&pool).await.unwrap().total(), 0);
    sqlx::query("UPDATE virtual_keys SET budget_reset_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        resets::reset_due(&pool).await.unwrap(),
        resets::Resets {
            keys: 1,
            ..Default::default()
        }
    );
    assert_eq!(resets::reset_due(&pool).await.unwrap().total(), 0);
    let rec = keys::get(&pool, &h).await.unwrap();
    assert_eq!(rec.spend, 0.0);
    let next = rec.budget_reset_at.unwrap() - rec.updated_at;
    assert!((3590..=3610).contains(&next), "next reset in {next}s");
    let ds = deltas_after(&pool, v0).await;
    assert_eq!(
        ds.last().unwrap().ops,
        vec![DeltaOp::KeySpend {
            hash: h,
            spend: 0.0
        }]
    );
}

#[tokio::test]
async fn per_model_key_spend_is_counted_in_windows_and_resets_go_out_as_deltas() {
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    let fields = KeyFields {
        model_max_budget: Some(
            serde_json::json!({"gpt": {"budget_limit": 1, "time_period": "1h"}}),
        ),
        ..KeyFields::default()
    };
    let (key, rec, v0) = keys::generate(&pool, &actor, None, &fields).await.unwrap();
    assert_eq!(
        rec.model_max_budget,
        serde_json::json!({"gpt": {"budget_limit": 1.0, "time_period": "1h"}})
    );
    let h = KeyHash::of(&key);
    ingest::write(&pool, &[event("m1", h, 0.25), event("m2", h, 0.25)])
        .await
        .unwrap();
    let spend = |ops: &[DeltaOp]| {
        ops.iter().find_map(|op| match op {
            DeltaOp::KeyModelSpend { hash, model, spend } if *hash == h && model == "gpt" => {
                Some(*spend)
            }
            _ => None,
        })
    };
    let ds = deltas_after(&pool, v0).await;
    assert_eq!(spend(&ds.last().unwrap().ops), Some(0.5));
    let (window,): (f64,) =
        sqlx::query_as("SELECT EXTRACT(EPOCH FROM reset_at - now())::float8 FROM key_model_spend")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        (3590.0..=3610.0).contains(&window),
        "window ends in {window}s"
    );
    // The window ends: the reset sends 0, and the next spend opens a new window.
    sqlx::query("UPDATE key_model_spend SET reset_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let v1 = routeiq_controlplane::changes::current(&pool).await.unwrap();
    assert_eq!(
        resets::reset_due(&pool).await.unwrap(),
        resets::Resets {
            key_models: 1,
            ..Default::default()
        }
    );
    let ds = deltas_after(&pool, v1).await;
    assert_eq!(spend(&ds.last().unwrap().ops), Some(0.0));
    ingest::write(&pool, &[event("m3", h, 0.125)])
        .await
        .unwrap();
    let ds = deltas_after(&pool, v1).await;
    assert_eq!(spend(&ds.last().unwrap().ops), Some(0.125));
    // The data plane's view carries the budget and the window's spend.
    let view = keys::view_of(&pool, &h).await.unwrap();
    assert_eq!(
        view.model_budgets.to_vec(),
        vec![routeiq_proto::ModelBudget {
            model: "gpt".into(),
            max_budget: 1.0,
            spend: 0.125
        }]
    );
}

#[tokio::test]
async fn team_budgets_reach_data_planes_as_scopes_with_their_spend_and_resets() {
    use routeiq_controlplane::teams::{self, TeamFields};
    use routeiq_proto::{Scope, ScopeKind};

    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    let v0 = routeiq_controlplane::changes::current(&pool).await.unwrap();
    // A team without limits is not sent; one with a budget is.
    teams::create(
        &pool,
        &actor,
        Some("plain".into()),
        &TeamFields::default(),
        &[],
    )
    .await
    .unwrap();
    assert!(deltas_after(&pool, v0).await.is_empty());
    let limits = Limits {
        max_budget: Some(2.0),
        budget_duration: Some("1h".into()),
        rpm_limit: Some(10),
        ..Limits::default()
    };
    let f = TeamFields {
        limits,
        ..TeamFields::default()
    };
    teams::create(&pool, &actor, Some("t1".into()), &f, &[])
        .await
        .unwrap();
    let team = Scope {
        kind: ScopeKind::Team,
        id: "t1".into(),
        max_budget: Some(2.0),
        soft_budget: None,
        spend: 0.0,
        rpm_limit: Some(10),
        tpm_limit: None,
        max_parallel_requests: None,
        permission: None,
    };
    assert_eq!(
        deltas_after(&pool, v0).await.last().unwrap().ops,
        vec![DeltaOp::UpsertScope(team.clone())]
    );
    assert_eq!(
        snapshot::build(&pool, &SecretBox::new("test-salt"))
            .await
            .unwrap()
            .scopes,
        vec![team]
    );
    // Ingested spend goes out; a reset sends 0.
    let v1 = routeiq_controlplane::changes::current(&pool).await.unwrap();
    let mut e = event("t-1", KeyHash::of("sk-unknown"), 0.5);
    e.team_id = "t1".into();
    ingest::write(&pool, &[e]).await.unwrap();
    let scope_spend = |ops: &[DeltaOp]| {
        ops.iter().find_map(|op| match op {
            DeltaOp::ScopeSpend {
                kind: ScopeKind::Team,
                id,
                spend,
            } if id == "t1" => Some(*spend),
            _ => None,
        })
    };
    assert_eq!(
        scope_spend(&deltas_after(&pool, v1).await.last().unwrap().ops),
        Some(0.5)
    );
    sqlx::query("UPDATE teams SET budget_reset_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        resets::reset_due(&pool).await.unwrap(),
        resets::Resets {
            teams: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        scope_spend(&deltas_after(&pool, v1).await.last().unwrap().ops),
        Some(0.0)
    );
}

#[tokio::test]
async fn object_permissions_of_keys_teams_and_organizations_reach_data_planes_merged_field_by_field(
) {
    use routeiq_controlplane::orgs::{self, OrgFields};
    use routeiq_controlplane::teams::{self, TeamFields};
    use routeiq_proto::{ObjectPermission, ScopeKind};
    use serde_json::json;

    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    let grant = |servers: &[&str], groups: &[&str], tools: &[(&str, &[&str])]| {
        Some(std::sync::Arc::new(ObjectPermission {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            access_groups: groups.iter().map(|s| s.to_string()).collect(),
            tools: tools
                .iter()
                .map(|(s, t)| (s.to_string(), t.iter().map(|t| t.to_string()).collect()))
                .collect(),
            ..ObjectPermission::default()
        }))
    };
    let org = orgs::upsert(
        &pool,
        &actor,
        Some("o1".into()),
        &OrgFields {
            object_permission: Some(json!({"mcp_servers": ["a", "b"], "vector_stores": ["v"]})),
            ..OrgFields::default()
        },
        true,
    )
    .await
    .unwrap();
    assert_eq!(org.object_permission, json!({"mcp_servers": ["a", "b"]}));
    let team_fields = TeamFields {
        organization_id: Some("o1".into()),
        object_permission: Some(json!({"mcp_access_groups": ["dev"]})),
        ..TeamFields::default()
    };
    teams::create(&pool, &actor, Some("t1".into()), &team_fields, &[])
        .await
        .unwrap();
    let scope_grant = |ops: &[DeltaOp], kind: ScopeKind| {
        ops.iter().find_map(|op| match op {
            DeltaOp::UpsertScope(s) if s.kind == kind => Some(s.permission.clone()),
            _ => None,
        })
    };
    let v0 = routeiq_controlplane::changes::current(&pool).await.unwrap();
    // An update sets the fields it names and keeps the others.
    let merged = teams::update(
        &pool,
        &actor,
        "t1",
        &TeamFields {
            object_permission: Some(json!({"mcp_tool_permissions": {"a": ["search"]}})),
            ..TeamFields::default()
        },
        &[],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        merged.object_permission,
        json!({"mcp_access_groups": ["dev"], "mcp_tool_permissions": {"a": ["search"]}})
    );
    assert_eq!(
        scope_grant(
            &deltas_after(&pool, v0).await.last().unwrap().ops,
            ScopeKind::Team
        ),
        Some(grant(&[], &["dev"], &[("a", &["search"])]))
    );
    // A key's own grant goes out with the key.
    let (_, rec, _) = keys::generate(
        &pool,
        &actor,
        None,
        &KeyFields {
            team_id: Some("t1".into()),
            object_permission: Some(
                json!({"mcp_servers": ["a"], "agent_access_groups": ["support"]}),
            ),
            ..KeyFields::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        rec.object_permission,
        json!({"mcp_servers": ["a"], "agent_access_groups": ["support"]})
    );
    let ops = deltas_after(&pool, v0).await.last().unwrap().ops.clone();
    let with_agents = grant(&["a"], &[], &[]).map(|g| {
        std::sync::Arc::new(ObjectPermission {
            agent_access_groups: vec!["support".into()],
            ..(*g).clone()
        })
    });
    assert!(
        matches!(&ops[0], DeltaOp::UpsertKey(k) if k.permission == with_agents && k.organization_id == "o1"),
        "{ops:?}"
    );
    // Emptied, a grant is none (the key then inherits its team's).
    let h = KeyHash::from_hex(&rec.hash).unwrap();
    keys::update(
        &pool,
        &actor,
        &h,
        &KeyFields {
            object_permission: Some(json!({"mcp_servers": [], "agent_access_groups": []})),
            ..KeyFields::default()
        },
    )
    .await
    .unwrap();
    let ops = deltas_after(&pool, v0).await.last().unwrap().ops.clone();
    assert!(
        matches!(&ops[0], DeltaOp::UpsertKey(k) if k.permission.is_none()),
        "{ops:?}"
    );
    // A malformed grant is refused, naming the field.
    let bad = keys::update(
        &pool,
        &actor,
        &h,
        &KeyFields {
            object_permission: Some(json!({"mcp_tool_permissions": ["a"]})),
            ..KeyFields::default()
        },
    )
    .await;
    assert!(
        matches!(&bad, Err(routeiq_controlplane::error::StoreError::Invalid(m)) if m.contains("mcp_tool_permissions")),
        "{bad:?}"
    );
    // The full snapshot carries the same grants.
    let snap = snapshot::build(&pool, &SecretBox::new("test-salt"))
        .await
        .unwrap();
    let of = |kind| {
        snap.scopes
            .iter()
            .find(|s| s.kind == kind)
            .unwrap()
            .permission
            .clone()
    };
    assert_eq!(of(ScopeKind::Organization), grant(&["a", "b"], &[], &[]));
    assert_eq!(
        of(ScopeKind::Team),
        grant(&[], &["dev"], &[("a", &["search"])])
    );
}

#[tokio::test]
async fn key_mutations_are_versioned_and_audited() {
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor {
        id: "alice".into(),
        source_ip: "10.0.0.1".into(),
    };
    let (key, rec, v1) = keys::generate(
        &pool,
        &actor,
        Some("sk-chosen-key-1".into()),
        &KeyFields {
            alias: Some("a".into()),
            models: Some(vec!["gpt".into()]),
            user_id: Some("u1".into()),
            ..KeyFields::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (key.as_str(), rec.key_name.as_str()),
        ("sk-chosen-key-1", "sk-...ey-1")
    );
    let h = KeyHash::of(&key);
    let (rec, v2) = keys::update(
        &pool,
        &actor,
        &h,
        &KeyFields {
            limits: Limits {
                rpm_limit: Some(10),
                ..Limits::default()
            },
            ..KeyFields::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (rec.rpm_limit, rec.models.clone(), v2),
        (Some(10), vec!["gpt".to_string()], v1 + 1)
    );
    let (_, v3) = keys::delete(&pool, &actor, &[h]).await.unwrap();
    assert_eq!(v3, v2 + 1);
    assert!(matches!(
        keys::get(&pool, &h).await,
        Err(routeiq_controlplane::error::StoreError::NotFound(_))
    ));
    let ds = deltas_after(&pool, 0).await;
    assert!(matches!(ds[0].ops[0], DeltaOp::UpsertKey(ref k) if k.hash == h && k.user_id == "u1"));
    assert!(matches!(ds[1].ops[0], DeltaOp::UpsertKey(ref k) if k.rpm_limit == Some(10)));
    assert_eq!(ds[2].ops, vec![DeltaOp::DeleteKey(h)]);
    let audit = routeiq_controlplane::audit::list(
        &pool,
        &routeiq_controlplane::audit::Filter {
            actor: Some("alice".into()),
            ..Default::default()
        },
        routeiq_controlplane::Page::new(1, 10),
    )
    .await
    .unwrap();
    let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["key.delete", "key.update", "key.generate"]);
    assert!(audit.iter().all(|a| a.source_ip == "10.0.0.1"));
}

/// A key made while its team or organization is being changed waits for that change and
/// carries it: otherwise its delta, sent after the team's re-send of its keys, would undo
/// the change on the data planes (a blocked team's new key let through).
#[tokio::test]
async fn a_key_made_while_its_team_or_organization_changes_carries_the_change() {
    use routeiq_controlplane::orgs::{self, OrgFields};
    use routeiq_controlplane::teams::{self, TeamFields};

    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    let org = OrgFields {
        alias: Some("org-old".into()),
        ..OrgFields::default()
    };
    orgs::upsert(&pool, &actor, Some("o1".into()), &org, true)
        .await
        .unwrap();
    let team = TeamFields {
        alias: Some("old".into()),
        organization_id: Some("o1".into()),
        ..TeamFields::default()
    };
    teams::create(&pool, &actor, Some("t1".into()), &team, &[])
        .await
        .unwrap();
    let in_team = KeyFields {
        team_id: Some("t1".into()),
        ..KeyFields::default()
    };
    for (change, check) in [
        (
            "UPDATE teams SET team_alias = 'new', blocked = true WHERE team_id = 't1'",
            (|k: &routeiq_proto::VirtualKey| k.team_alias == "new" && k.blocked)
                as fn(&routeiq_proto::VirtualKey) -> bool,
        ),
        (
            "UPDATE organizations SET organization_alias = 'org-new' WHERE organization_id = 'o1'",
            |k| k.organization_alias == "org-new",
        ),
    ] {
        // The change in progress: its row written, not committed.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(change).execute(&mut *tx).await.unwrap();
        let (p, a, f) = (pool.clone(), actor.clone(), in_team.clone());
        let made = tokio::spawn(async move { keys::generate(&p, &a, None, &f).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!made.is_finished(), "{change}: the key did not wait");
        tx.commit().await.unwrap();
        let (_, _, version) = made.await.unwrap().unwrap();
        let ds = deltas_after(&pool, version - 1).await;
        assert!(
            matches!(ds[0].ops[..], [DeltaOp::UpsertKey(ref k)] if check(k)),
            "{change}: {:?}",
            ds[0].ops
        );
    }
}

#[tokio::test]
async fn a_key_moved_out_of_a_team_while_the_team_changes_ends_in_its_new_team() {
    use routeiq_controlplane::teams::{self, TeamFields};

    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    for team in ["t1", "t2"] {
        teams::create(
            &pool,
            &actor,
            Some(team.into()),
            &TeamFields::default(),
            &[],
        )
        .await
        .unwrap();
    }
    let in_t1 = KeyFields {
        team_id: Some("t1".into()),
        ..KeyFields::default()
    };
    let (key, _, _) = keys::generate(&pool, &actor, None, &in_t1).await.unwrap();
    let hash = KeyHash::of(&key);

    // t1 is being blocked: its row written and its keys re-sent, not committed.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE teams SET blocked = true WHERE team_id = 't1'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let to_t2 = KeyFields {
        team_id: Some("t2".into()),
        ..KeyFields::default()
    };
    let (p, a) = (pool.clone(), actor.clone());
    let moved = tokio::spawn(async move { keys::update(&p, &a, &hash, &to_t2).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !moved.is_finished(),
        "the move did not wait for its old team"
    );
    // The re-send reads the key as last committed: still in t1, so blocked with it.
    let resent = keys::resend_team(&mut tx, "t1").await.unwrap().unwrap();
    tx.commit().await.unwrap();
    let (rec, version) = moved.await.unwrap().unwrap();
    assert_eq!(rec.team_id.as_deref(), Some("t2"));
    assert!(
        version > resent,
        "the move's delta comes after the team's re-send"
    );
    // The last word on the key, as data planes apply deltas in order: in t2, not blocked.
    let last = deltas_after(&pool, resent - 1)
        .await
        .into_iter()
        .flat_map(|d| d.ops)
        .filter_map(|op| match op {
            DeltaOp::UpsertKey(k) if k.hash == hash => Some(k),
            _ => None,
        })
        .last()
        .unwrap();
    assert_eq!(last.team_id, "t2");
    assert!(!last.blocked);
}

#[tokio::test]
async fn provider_keys_stay_out_of_the_change_log_and_are_added_when_published() {
    use prost::Message;
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let secrets = SecretBox::new("test-salt");
    import::import(&pool, &secrets, &loaded(CONFIG), "test.yaml")
        .await
        .unwrap();
    let (ops,): (Vec<u8>,) = sqlx::query_as("SELECT ops FROM snapshot_deltas WHERE version = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!ops.windows(9).any(|w| w == b"sk-upstre"));
    let sent = routeiq_controlplane::changes::with_secrets(&pool, &secrets, ops)
        .await
        .unwrap();
    let delta = routeiq_proto::wire::pb::SnapshotDelta::decode(sent.as_slice()).unwrap();
    let keys: Vec<_> = delta
        .ops
        .iter()
        .filter_map(|op| match &op.op {
            Some(routeiq_proto::wire::pb::delta_op::Op::UpsertDeployment(d)) => d.api_key.clone(),
            _ => None,
        })
        .collect();
    assert!(
        keys.contains(&"sk-upstream-secret-1234".to_string()),
        "{keys:?}"
    );
}

#[tokio::test]
async fn spend_log_partitions_are_made_ahead_and_old_ones_detached() {
    use routeiq_controlplane::partitions::{maintain_at, Month, Pass, Policy};
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let log = |id: &'static str, at: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO spend_logs (request_id, started_at) VALUES ($1, $2::timestamptz)",
            )
            .bind(id)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let home = |id: &'static str| {
        let pool = pool.clone();
        async move {
            let (t,): (String,) = sqlx::query_as(
                "SELECT tableoid::regclass::text FROM spend_logs WHERE request_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            t
        }
    };
    // Rows of the current month are in the default partition already: that month stays
    // there, the next ones get partitions of their own.
    log("dec", "2026-12-05 10:00:00+00").await;
    let dec = Month::new(2026, 12);
    let policy = Policy {
        ahead: 2,
        retention: None,
    };
    let pass = maintain_at(&pool, dec, policy).await.unwrap();
    assert_eq!(pass.created, ["spend_logs_y2027m01", "spend_logs_y2027m02"]);
    assert!(pass.detached.is_empty());
    assert_eq!(
        maintain_at(&pool, dec, policy).await.unwrap(),
        Pass::default(),
        "idempotent"
    );
    log("jan", "2027-01-31 23:59:59+00").await;
    log("feb", "2027-02-01 00:00:00+00").await;
    assert_eq!(home("dec").await, "spend_logs_default");
    assert_eq!(home("jan").await, "spend_logs_y2027m01");
    assert_eq!(home("feb").await, "spend_logs_y2027m02");

    // A year on, keeping two months: the current month (empty in the default partition)
    // is created, the old months are detached: out of spend_logs, kept as tables.
    let pass = maintain_at(
        &pool,
        Month::new(2028, 1),
        Policy {
            ahead: 1,
            retention: Some(2),
        },
    )
    .await
    .unwrap();
    assert_eq!(pass.created, ["spend_logs_y2028m01", "spend_logs_y2028m02"]);
    assert_eq!(
        pass.detached,
        ["spend_logs_y2027m01", "spend_logs_y2027m02"]
    );
    let (visible,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM spend_logs WHERE request_id IN ('jan', 'feb')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(visible, 0);
    let (kept,): (i64,) = sqlx::query_as("SELECT count(*) FROM spend_logs_y2027m01")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 1);
    assert_eq!(
        home("dec").await,
        "spend_logs_default",
        "the default partition is never detached"
    );
}

#[tokio::test]
async fn agents_are_imported_managed_sealed_and_sent_as_deltas() {
    use routeiq_controlplane::agents::{self, Change};
    use serde_json::json;

    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let secrets = SecretBox::new("test-salt");
    let actor = Actor::system("test");
    let file = r#"
model_list: []
general_settings: {agent_access_default_deny: true}
agents:
  - agent_name: cfg
    agent_card_params: {url: "https://agents.example/cfg/"}
    litellm_params: {api_key: cfg-secret-token-1}
    agent_access_groups: [ops]
"#;
    let first = import::import(&pool, &secrets, &loaded(file), "t.yaml")
        .await
        .unwrap();
    assert_eq!(first.upserted, 1);
    let snap = snapshot::build(&pool, &secrets).await.unwrap();
    assert_eq!(snap.agents, config(file).agents);
    assert!(snap.agent_access_default_deny);
    assert_eq!(snap.agents[0].id, "cfg");

    // Through the API: a new id; the credential sealed at rest and out of the outbox, back in
    // the publisher's copy.
    let (made, warnings, v1) = agents::save(
        &pool,
        &secrets,
        &actor,
        "",
        &json!({"agent_name": "reg", "agent_card_params": {"url": "https://agents.example/reg/"},
                "litellm_params": {"api_key": "reg-secret-token-2"}, "extra": 1}),
        Change::Create,
    )
    .await
    .unwrap();
    let id = made.agent.id.clone();
    assert_eq!((id.len(), made.source.as_str()), (32, "api"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let sealed: Vec<Option<Vec<u8>>> = sqlx::query("SELECT auth FROM agents")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get("auth"))
        .collect();
    for b in sealed.iter().flatten() {
        let text = String::from_utf8_lossy(b);
        assert!(!text.contains("secret-token"), "sealed");
    }
    let row: Vec<u8> = sqlx::query("SELECT ops FROM snapshot_deltas WHERE version = $1")
        .bind(v1 as i64)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert!(!String::from_utf8_lossy(&row).contains("reg-secret-token-2"));
    let published = routeiq_controlplane::changes::with_secrets(&pool, &secrets, row)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&published).contains("Bearer reg-secret-token-2"));

    // PATCH keeps what it does not name; PUT replaces the whole entry.
    let (patched, _, _) = agents::save(
        &pool,
        &secrets,
        &actor,
        &id,
        &json!({"agent_access_groups": ["support"]}),
        Change::Patch,
    )
    .await
    .unwrap();
    assert_eq!(patched.agent.access_groups, ["support"]);
    assert_eq!(patched.agent.headers, made.agent.headers);
    let (replaced, _, _) = agents::save(
        &pool,
        &secrets,
        &actor,
        &id,
        &json!({"agent_name": "reg", "agent_card_params": {"url": "https://agents.example/v2/"}}),
        Change::Replace,
    )
    .await
    .unwrap();
    assert!(replaced.agent.headers.is_empty() && replaced.agent.access_groups.is_empty());

    // Refused: a taken name, bad input naming the field, a config agent, an unknown id.
    let save = |id: &str, entry: serde_json::Value, change| {
        let (pool, secrets, actor) = (pool.clone(), &secrets, &actor);
        let id = id.to_owned();
        async move { agents::save(&pool, secrets, actor, &id, &entry, change).await }
    };
    use routeiq_controlplane::error::StoreError;
    let taken = save(
        "",
        json!({"agent_name": "cfg", "agent_card_params": {"url": "https://a/"}}),
        Change::Create,
    )
    .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let bad = save(
        "",
        json!({"agent_name": "x", "agent_card_params": {}}),
        Change::Create,
    )
    .await;
    assert!(
        matches!(&bad, Err(StoreError::Invalid(m)) if m.contains("agent_card_params.url")),
        "{bad:?}"
    );
    let config_owned = save("cfg", json!({"agent_access_groups": []}), Change::Patch).await;
    assert!(matches!(config_owned, Err(StoreError::Conflict(_))));
    let unknown = save("nope", json!({}), Change::Patch).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))));
    // A card may hold any text, U+0000 too (jsonb could not).
    let (nul, _, _) = save(
        "",
        json!({"agent_name": "nul", "agent_card_params": {"url": "https://a/", "name": "N\u{0}L"}}),
        Change::Create,
    )
    .await
    .unwrap();
    let stored = agents::load_all(&pool, &secrets).await.unwrap();
    let back = stored.iter().find(|s| s.agent.id == nul.agent.id).unwrap();
    assert_eq!(back.agent.card.as_ref().unwrap()["name"], "N\u{0}L");
    agents::remove(&pool, &secrets, &actor, &nul.agent.id)
        .await
        .unwrap();

    // A config agent named like an API agent is skipped; the API's stays. A config agent
    // gone from the file is deleted.
    let clash = "model_list: []\nagents:\n  - agent_name: reg\n    agent_card_params: {url: \"https://other/\"}\n";
    let r = import::import(&pool, &secrets, &loaded(clash), "t.yaml")
        .await
        .unwrap();
    assert_eq!((r.upserted, r.removed), (0, 1));
    let snap = snapshot::build(&pool, &secrets).await.unwrap();
    assert_eq!(snap.agents.len(), 1);
    assert_eq!(snap.agents[0].url, "https://agents.example/v2/");
    assert!(deltas_after(&pool, 0)
        .await
        .iter()
        .flat_map(|d| &d.ops)
        .any(|op| matches!(op, DeltaOp::DeleteAgent(n) if n == "cfg")));

    // Deleted through the API: one delta, and gone from the snapshot.
    let v = agents::remove(&pool, &secrets, &actor, &id).await.unwrap();
    let last = deltas_after(&pool, v - 1).await;
    assert_eq!(last[0].ops, [DeltaOp::DeleteAgent(id.clone())]);
    assert!(snapshot::build(&pool, &secrets)
        .await
        .unwrap()
        .agents
        .is_empty());
}

#[tokio::test]
async fn mcp_servers_are_imported_sealed_and_follow_the_config() {
    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let secrets = SecretBox::new("test-salt");
    let two = r#"
model_list: []
mcp_servers:
  github:
    url: https://mcp.github.example/mcp
    auth_type: bearer_token
    auth_value: ghp-secret-token-1234
    static_headers: {X-Org: acme-secret-org}
    allowed_tools: [search]
  docs:
    url: http://docs.internal/mcp
"#;
    let first = import::import(&pool, &secrets, &loaded(two), "t.yaml")
        .await
        .unwrap();
    assert_eq!((first.upserted, first.removed), (2, 0));
    let snap = snapshot::build(&pool, &secrets).await.unwrap();
    let mut want = config(two).mcp_servers;
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(snap.mcp_servers, want);

    // The credential and the static headers are sealed at rest.
    let raw: Vec<Vec<u8>> = sqlx::query("SELECT auth FROM mcp_servers")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get("auth"))
        .collect();
    for needle in ["ghp-secret-token-1234", "acme-secret-org"] {
        assert!(raw
            .iter()
            .all(|b| !String::from_utf8_lossy(b).contains(needle)));
    }

    // The outbox holds no MCP secret; the publisher's copy has them back.
    let rows: Vec<Vec<u8>> = sqlx::query("SELECT ops FROM snapshot_deltas ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert!(rows
        .iter()
        .all(|b| !String::from_utf8_lossy(b).contains("ghp-secret-token-1234")));
    let published = routeiq_controlplane::changes::with_secrets(&pool, &secrets, rows[0].clone())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&published).contains("ghp-secret-token-1234"));

    // The same file changes nothing; one server fewer is one delete, published as a delta.
    let again = import::import(&pool, &secrets, &loaded(two), "t.yaml")
        .await
        .unwrap();
    assert_eq!((again.upserted, again.removed, again.version), (0, 0, None));
    let one = "model_list: []\nmcp_servers:\n  docs:\n    url: http://docs.internal/mcp\n";
    let third = import::import(&pool, &secrets, &loaded(one), "t.yaml")
        .await
        .unwrap();
    assert_eq!((third.upserted, third.removed), (0, 1));
    let ds = deltas_after(&pool, 0).await;
    assert!(ds
        .iter()
        .flat_map(|d| &d.ops)
        .any(|op| matches!(op, DeltaOp::DeleteMcpServer(n) if n == "github")));

    let snap = snapshot::build(&pool, &secrets).await.unwrap();
    assert_eq!(
        snap.mcp_servers
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["docs"]
    );
}

#[tokio::test]
async fn routing_models_are_shadowed_ab_tested_scored_and_reported() {
    use routeiq_controlplane::error::StoreError;
    use routeiq_controlplane::routing_models::{self as rm, Interval, Kind, Mode, Sticky};
    use routeiq_controlplane::{feedback, settings};
    use serde_json::json;

    let pool = fresh_db().await;
    db::migrate(&pool).await.unwrap();
    let actor = Actor::system("test");
    let (sha_a, sha_b, sha_c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let register = |strategy: &'static str, uri: &'static str, sha: String| {
        let (pool, actor) = (pool.clone(), actor.clone());
        async move {
            rm::register(&pool, &actor, strategy, uri, &sha, json!({}))
                .await
                .unwrap()
        }
    };
    let serving = register("knn", "/srv/knn-a", sha_a.clone()).await;
    let challenger = register("llmrouter-knn", "file:///srv/knn-b", sha_b.clone()).await;
    let third = register("mlp", "s3://models/routers/mlp/", sha_c.clone()).await;
    let idle = register("knn", "/srv/knn-d", "d".repeat(64)).await;
    let args = || {
        let pool = pool.clone();
        async move {
            settings::load(&pool)
                .await
                .unwrap()
                .router
                .routing_strategy_args
        }
    };

    // Nothing learned serves yet: there is nothing to evaluate against.
    let early = rm::start_experiment(&pool, &actor, challenger.id, Mode::Shadow).await;
    assert!(
        matches!(&early, Err(StoreError::Precondition(m)) if m.contains("llmrouter")),
        "{early:?}"
    );
    rm::activate(&pool, &actor, serving.id).await.unwrap();

    // Shadow: the version's artifact goes into `shadow`, sent as a settings delta; the
    // serving version stays.
    let (shadowed, v) = rm::start_experiment(&pool, &actor, challenger.id, Mode::Shadow)
        .await
        .unwrap();
    assert_eq!(
        (shadowed.mode.as_deref(), shadowed.share, shadowed.sticky),
        (Some("shadow"), None, None)
    );
    let want_shadow =
        json!({"strategy": "llmrouter-knn", "model_path": "/srv/knn-b", "model_sha256": sha_b});
    let now = args().await;
    assert_eq!(now.get("shadow"), Some(&want_shadow));
    assert_eq!(now.get("model_sha256"), Some(&json!(sha_a)));
    let deltas = deltas_after(&pool, v - 1).await;
    assert_eq!(deltas.len(), 1);
    assert!(
        matches!(&deltas[0].ops[..], [DeltaOp::Settings(g)]
            if g.router.routing_strategy_args.get("shadow") == Some(&want_shadow)),
        "{:?}",
        deltas[0].ops
    );

    // Refused: the serving version, an unknown one, a share outside (0, 1).
    let of_serving = rm::start_experiment(&pool, &actor, serving.id, Mode::Shadow).await;
    assert!(
        matches!(of_serving, Err(StoreError::Conflict(_))),
        "{of_serving:?}"
    );
    let unknown = rm::start_experiment(&pool, &actor, 999, Mode::Shadow).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
    for share in [0.0, 1.0, f64::NAN] {
        let sticky = Sticky::User;
        let r = rm::start_experiment(&pool, &actor, third.id, Mode::Ab { share, sticky }).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{share}: {r:?}");
    }

    // A/B, beside the shadow, with another strategy.
    let ab = Mode::Ab {
        share: 0.25,
        sticky: Sticky::Key,
    };
    let (tested, _) = rm::start_experiment(&pool, &actor, third.id, ab)
        .await
        .unwrap();
    assert_eq!(
        (
            tested.mode.as_deref(),
            tested.share,
            tested.sticky.as_deref()
        ),
        (Some("ab"), Some(0.25), Some("key"))
    );
    let now = args().await;
    assert_eq!(
        now.get("ab"),
        Some(
            &json!({"strategy": "llmrouter-mlp", "model_s3_bucket": "models",
                     "model_s3_key": "routers/mlp", "model_sha256": sha_c,
                     "share": 0.25, "sticky": "key"})
        )
    );
    assert_eq!(now.get("shadow"), Some(&want_shadow));
    let listed: Vec<_> = rm::list(&pool, "")
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.id, v.active, v.mode))
        .collect();
    assert_eq!(
        listed,
        [
            (serving.id, true, None),
            (challenger.id, false, Some("shadow".to_owned())),
            (third.id, false, Some("ab".to_owned())),
            (idle.id, false, None),
        ]
    );

    // Stopped: the version leaves the mode and its arguments go; again, nothing is in it.
    let (stopped, _) = rm::stop_experiment(&pool, &actor, Kind::Ab).await.unwrap();
    assert_eq!(
        (stopped.id, stopped.mode, stopped.share),
        (third.id, None, None)
    );
    let now = args().await;
    assert!(now.get("ab").is_none() && now.get("shadow").is_some());
    let again = rm::stop_experiment(&pool, &actor, Kind::Ab).await;
    assert!(matches!(again, Err(StoreError::NotFound(_))), "{again:?}");

    // A version moved from A/B to shadow leaves A/B; the shadow before it leaves shadow.
    let ab = Mode::Ab {
        share: 0.5,
        sticky: Sticky::parse("").unwrap(),
    };
    rm::start_experiment(&pool, &actor, third.id, ab)
        .await
        .unwrap();
    assert_eq!(args().await["ab"]["sticky"], "user");
    rm::start_experiment(&pool, &actor, third.id, Mode::Shadow)
        .await
        .unwrap();
    let now = args().await;
    assert!(now.get("ab").is_none());
    assert_eq!(now["shadow"]["model_sha256"], json!(sha_c));
    assert!(now["shadow"].get("share").is_none());
    rm::start_experiment(&pool, &actor, challenger.id, Mode::Shadow)
        .await
        .unwrap();
    assert_eq!(args().await.get("shadow"), Some(&want_shadow));

    // Promoting the shadow version ends its experiment.
    let (promoted, _) = rm::activate(&pool, &actor, challenger.id).await.unwrap();
    assert!(promoted.active && promoted.mode.is_none());
    let now = args().await;
    assert!(now.get("shadow").is_none() && now.get("ab").is_none());
    assert_eq!(now.get("model_sha256"), Some(&json!(sha_b)));
    assert!(rm::list(&pool, "")
        .await
        .unwrap()
        .iter()
        .all(|v| v.mode.is_none() && v.active == (v.id == challenger.id)));
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE object_type = 'routing_model' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let want: Vec<String> = [
        "register", "register", "register", "register", "activate", "shadow", "ab", "stop", "ab",
        "shadow", "shadow", "activate",
    ]
    .iter()
    .map(|a| format!("routing_model.{a}"))
    .collect();
    assert_eq!(actions, want);

    // Requests as data planes log them: the serving version decided r1 to r3 with the
    // challenger in shadow (agreeing on r1 and r3); the A/B version decided r4, whose shadow
    // decision came too late; r5 is older than the report's default 7 days.
    let (mine, theirs) = (KeyHash::of("sk-mine"), KeyHash::of("sk-theirs"));
    let logged = [
        ("r1", 0, &sha_a, "serving", "gpt", Some("gpt"), 1.0),
        ("r2", 0, &sha_a, "serving", "gpt", Some("claude"), 2.0),
        ("r3", 0, &sha_a, "serving", "claude", Some("claude"), 3.0),
        ("r4", 0, &sha_c, "ab", "gpt", None, 4.0),
        ("r5", 30, &sha_a, "serving", "gpt", Some("gpt"), 5.0),
    ];
    for (id, days_ago, router, arm, chose, shadow_chose, cost) in logged {
        sqlx::query(
            "INSERT INTO spend_logs (request_id, started_at, key_hash, cost, router_sha256,
                    router_arm, router_candidate, shadow_sha256, shadow_candidate)
             VALUES ($1, now() - make_interval(days => $2), $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(days_ago)
        .bind(mine.0.to_vec())
        .bind(cost)
        .bind(router)
        .bind(arm)
        .bind(chose)
        .bind(&sha_b)
        .bind(shadow_chose)
        .execute(&pool)
        .await
        .unwrap();
    }

    // Feedback: a later score replaces the earlier; bad input is refused; a key scores only
    // its own requests.
    feedback::record(&pool, "r1", 0.0, None, None)
        .await
        .unwrap();
    feedback::record(&pool, "r1", 1.0, Some("right model"), None)
        .await
        .unwrap();
    let (score, comment): (f64, Option<String>) =
        sqlx::query_as("SELECT score, comment FROM routing_feedback WHERE request_id = 'r1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((score, comment.as_deref()), (1.0, Some("right model")));
    let long = "x".repeat(257);
    for (id, score) in [
        ("r2", 1.5),
        ("r2", -0.1),
        ("r2", f64::NAN),
        ("", 0.5),
        (long.as_str(), 0.5),
    ] {
        let r = feedback::record(&pool, id, score, None, None).await;
        assert!(
            matches!(r, Err(StoreError::Invalid(_))),
            "{id} {score}: {r:?}"
        );
    }
    let foreign = feedback::record(&pool, "r2", 0.0, None, Some(theirs)).await;
    assert!(
        matches!(&foreign, Err(StoreError::NotFound(m)) if m.contains("r2")),
        "{foreign:?}"
    );
    feedback::record(&pool, "r2", 0.0, None, Some(mine))
        .await
        .unwrap();
    feedback::record(&pool, "r3", 0.5, None, None)
        .await
        .unwrap();
    feedback::record(&pool, "r4", 1.0, None, None)
        .await
        .unwrap();

    // The report: every version serving, evaluated or deciding since; not `idle`.
    let report = rm::report(&pool, "", rm::default_since_ms()).await.unwrap();
    let ids: Vec<i64> = report.iter().map(|r| r.version.id).collect();
    assert_eq!(ids, [serving.id, challenger.id, third.id]);
    let a = &report[0];
    assert_eq!(
        (
            a.served.requests,
            a.served.ab_requests,
            a.served.cost,
            a.served.cost_per_request
        ),
        (3, 0, 6.0, Some(2.0))
    );
    // Scores 1, 0 and 0.5: mean 0.5 ± 0.566, clamped.
    assert_eq!(
        (
            a.served.feedback.n,
            a.served.feedback.mean,
            a.served.feedback.interval
        ),
        (
            3,
            Some(0.5),
            Some(Interval {
                low: 0.0,
                high: 1.0
            })
        )
    );
    assert_eq!(a.shadow.requests, 0);
    let b = &report[1];
    assert_eq!(
        (
            b.served.requests,
            b.shadow.requests,
            b.shadow.compared,
            b.shadow.agreed
        ),
        (0, 4, 3, 2)
    );
    assert_eq!(b.shadow.agreement, Some(2.0 / 3.0));
    let wilson = b.shadow.agreement_interval.unwrap();
    assert!((wilson.low - 0.2077).abs() < 1e-3 && (wilson.high - 0.9385).abs() < 1e-3);
    assert_eq!(
        (b.shadow.feedback_agreed.n, b.shadow.feedback_agreed.mean),
        (2, Some(0.75))
    );
    assert_eq!(
        (
            b.shadow.feedback_disagreed.n,
            b.shadow.feedback_disagreed.mean,
            b.shadow.feedback_disagreed.interval
        ),
        (1, Some(0.0), None)
    );
    let c = &report[2];
    assert_eq!(
        (
            c.served.requests,
            c.served.ab_requests,
            c.served.cost,
            c.served.feedback.n,
            c.served.feedback.mean
        ),
        (1, 1, 4.0, 1, Some(1.0))
    );
    assert_eq!((c.shadow.requests, c.shadow.agreement), (0, None));

    // By strategy; and from long ago, r5 counts too.
    let mlp = rm::report(&pool, "llmrouter-mlp", rm::default_since_ms())
        .await
        .unwrap();
    assert_eq!(
        mlp.iter().map(|r| r.version.id).collect::<Vec<_>>(),
        [third.id]
    );
    let knn = rm::report(&pool, "knn", 0).await.unwrap();
    assert_eq!(
        knn.iter()
            .map(|r| (r.version.id, r.served.requests))
            .collect::<Vec<_>>(),
        [(serving.id, 4), (challenger.id, 0)]
    );
}
