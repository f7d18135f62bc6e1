#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test failing
//! Control-plane integration tests against a real PostgreSQL server. `scripts/test.sh`
//! starts one and sets `ROUTEIQ_TEST_DATABASE_URL` (an admin URL); each test creates its
//! own database.

use std::path::Path;

use routeiq_controlplane::crypto::SecretBox;
use routeiq_controlplane::{db, import, snapshot};
use routeiq_proto::{litellm, KeyHash, Snapshot};
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
    litellm::compile(text, Path::new("test.yaml"), &|_| None)
        .unwrap()
        .snapshot
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
router_settings:
  routing_strategy: simple-shuffle
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

    let first = import::import(&pool, &secrets, &cfg, "test.yaml")
        .await
        .unwrap();
    assert_eq!(
        (first.upserted, first.removed, first.version),
        (3, 0, Some(1))
    );
    assert!(first.settings_changed);
    let again = import::import(&pool, &secrets, &cfg, "test.yaml")
        .await
        .unwrap();
    assert_eq!(
        again,
        import::Imported {
            upserted: 0,
            removed: 0,
            settings_changed: false,
            version: None
        }
    );

    let snap = snapshot::build(&pool, &secrets).await.unwrap();
    assert_eq!(snap.version, 1);
    assert_eq!(snap.master_key_hash, Some(KeyHash::of("sk-master-1")));
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
    assert!(snapshot::build(&pool, &SecretBox::new("wrong-salt"))
        .await
        .is_err());

    // Dropping a deployment from the file removes it, in a new version.
    let smaller = config(&CONFIG.replace(
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
}
