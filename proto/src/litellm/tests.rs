use std::path::Path;

use crate::ProviderKind;

use super::*;

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn load(text: &str, vars: &'static [(&'static str, &'static str)]) -> Result<Loaded, ConfigError> {
    compile(text, Path::new("test.yaml"), &env(vars))
}

const FULL: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_KEY
      timeout: 30
      rpm: 100
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4
      litellm_credential_name: anthropic-cred
    model_info:
      id: claude-1
      max_output_tokens: 2048
      access_groups: [beta]
      custom_field: kept
  - model_name: azure-gpt
    litellm_params:
      model: azure/my-deployment
      api_base: https://example.openai.azure.com/
      api_key: az-key
      api_version: "2024-10-21"
  - model_name: local
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B
      api_base: http://127.0.0.1:8000/v1
  - model_name: fake
    litellm_params:
      model: mock/fake
credential_list:
  - credential_name: anthropic-cred
    credential_values:
      api_key: os.environ/ANTHROPIC_KEY
    credential_info:
      description: prod
general_settings:
  master_key: sk-master
  max_request_size_mb: 1
  some_future_setting: true
router_settings:
  routing_strategy: simple-shuffle
  timeout: 60
litellm_settings:
  drop_params: true
"#;

#[test]
fn compiles_a_full_litellm_config() {
    let l = load(
        FULL,
        &[("OPENAI_KEY", "sk-openai"), ("ANTHROPIC_KEY", "sk-ant")],
    )
    .unwrap();
    let s = &l.snapshot;
    assert_eq!(s.deployments.len(), 5);
    let gpt = &s.deployments[0];
    assert_eq!(gpt.provider, ProviderKind::OpenAi);
    assert_eq!(gpt.api_base, "https://api.openai.com/v1");
    assert_eq!(gpt.api_key.as_ref().unwrap().expose(), "sk-openai");
    assert_eq!(gpt.timeout, Some(std::time::Duration::from_secs(30)));
    assert_eq!(gpt.rpm, Some(100));
    let claude = &s.deployments[1];
    assert_eq!(claude.id.0, "claude-1");
    assert_eq!(claude.api_key.as_ref().unwrap().expose(), "sk-ant");
    assert_eq!(claude.api_base, "https://api.anthropic.com");
    assert_eq!(claude.model_info.max_output_tokens, Some(2048));
    assert_eq!(claude.model_info.access_groups, ["beta"]);
    assert_eq!(claude.model_info.extra["custom_field"], "kept");
    let azure = &s.deployments[2];
    assert_eq!(azure.api_base, "https://example.openai.azure.com");
    assert_eq!(azure.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(s.deployments[3].upstream_model, "meta-llama/Llama-3.1-8B");
    assert_eq!(s.deployments[4].provider, ProviderKind::Mock);
    assert_eq!(s.master_key_hash, Some(crate::KeyHash::of("sk-master")));
    assert_eq!(s.max_request_body_bytes, 1024 * 1024);
    assert_eq!(
        s.router.request_timeout,
        Some(std::time::Duration::from_secs(60))
    );
    // Unknown LiteLLM keys are warnings, named by path.
    assert!(l
        .warnings
        .iter()
        .any(|w| w.contains("general_settings.some_future_setting")));
    // `litellm_settings.drop_params` is known: every deployment's default.
    assert!(!l
        .warnings
        .iter()
        .any(|w| w.contains("litellm_settings.drop_params")));
    assert!(s
        .deployments
        .iter()
        .all(|d| d.settings.param("drop_params") == Some("true")));
}

#[test]
fn request_parameter_settings_are_kept_per_deployment() {
    let yaml = r#"
model_list:
  - model_name: g
    litellm_params:
      model: groq/llama-3.1-8b-instant
      api_key: k
      drop_params: false
      additional_drop_params: ["user", "metadata"]
  - model_name: o
    litellm_params:
      model: openai/gpt-4o
      api_key: k
  - model_name: bad
    litellm_params:
      model: openai/gpt-4o
      api_key: k
      additional_drop_params: ["messages.0.name"]
"#;
    let e = load(yaml, &[]).unwrap_err().to_string();
    assert!(
        e.contains("model_list[2].litellm_params.additional_drop_params"),
        "{e}"
    );
    let yaml = yaml.split("  - model_name: bad").next().unwrap();
    let s = load(yaml, &[]).unwrap().snapshot;
    let g = &s.deployments[0].settings;
    assert_eq!(g.param("drop_params"), Some("false"));
    assert_eq!(g.param("additional_drop_params"), Some("user,metadata"));
    assert_eq!(g.param("custom_llm_provider"), Some("groq"));
    let o = &s.deployments[1].settings;
    assert_eq!(o.param("drop_params"), None);
    assert_eq!(o.param("custom_llm_provider"), None);
}

#[test]
fn generated_ids_are_stable() {
    let vars = &[("OPENAI_KEY", "k"), ("ANTHROPIC_KEY", "k")];
    let a = load(FULL, vars).unwrap().snapshot;
    let b = load(FULL, vars).unwrap().snapshot;
    assert_eq!(a.deployments[0].id, b.deployments[0].id);
    assert_ne!(a.deployments[0].id, a.deployments[2].id);
}

#[test]
fn missing_env_var_names_the_variable_and_path() {
    let err = load(FULL, &[("ANTHROPIC_KEY", "k")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("OPENAI_KEY"), "{err}");
    assert!(
        err.contains("model_list[0].litellm_params.api_key"),
        "{err}"
    );
    assert!(err.contains("test.yaml"), "{err}");
}

#[test]
fn environment_variables_section_counts_as_env() {
    let text = "environment_variables:\n  K: from-section\nmodel_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_key: os.environ/K\n";
    let l = load(text, &[]).unwrap();
    assert_eq!(
        l.snapshot.deployments[0].api_key.as_ref().unwrap().expose(),
        "from-section"
    );
}

#[test]
fn malformed_configs_name_the_yaml_path() {
    let cases: &[(&str, &str)] = &[
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      rpm: lots\n", "model_list[0].litellm_params.rpm"),
        ("model_list:\n  - model_name: m\n", "model_list[0]"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: azure/x\n      api_base: https://a\n", "model_list[0].litellm_params.api_version"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: hosted_vllm/x\n", "model_list[0].litellm_params.api_base"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_base: not a url\n", "model_list[0].litellm_params.api_base"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      litellm_credential_name: nope\n", "litellm_credential_name"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      timeout: -1\n", "model_list[0].litellm_params.timeout"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      weight: -1\n", "model_list[0].litellm_params.weight"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n    model_info:\n      output_cost_per_token: -0.5\n", "model_list[0].model_info.output_cost_per_token"),
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n    model_info:\n      max_output_tokens: 9223372036854775808\n", "model_list[0].model_info.max_output_tokens"),
        ("general_settings:\n  master_key: ''\n", "general_settings.master_key"),
        // An unknown provider prefix is refused (never sent to OpenAI), even with keys
        // that provider would read.
        ("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n  - model_name: b\n    litellm_params:\n      model: sagemaker/my-endpoint\n      aws_region_name: us-east-1\n", "model_list[1].litellm_params.model`: unknown provider `sagemaker`"),
    ];
    for (text, path) in cases {
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(err.contains(path), "expected `{path}` in: {err}");
    }
    assert!(matches!(
        load("model_list: [", &[]),
        Err(ConfigError::Yaml { .. })
    ));
}

#[test]
fn cloud_provider_settings_come_from_params_credentials_and_litellms_variables() {
    let text = r#"
model_list:
  - model_name: g
    litellm_params: {model: gemini/gemini-2.0-flash}
  - model_name: v
    litellm_params:
      model: vertex_ai/gemini-2.5-pro
      vertex_project: p1
      vertex_credentials: '{"type": "service_account"}'
  - model_name: b
    litellm_params:
      model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
      litellm_credential_name: aws
      aws_role_name: arn:aws:iam::1:role/r
  - model_name: b2
    litellm_params:
      model: bedrock/amazon.nova-pro-v1:0
      aws_bedrock_runtime_endpoint: https://vpce-1.bedrock-runtime.eu-west-1.vpce.amazonaws.com
  - model_name: c
    litellm_params: {model: cohere/command-r-plus}
  - model_name: m
    litellm_params: {model: mistral/mistral-large-latest}
credential_list:
  - credential_name: aws
    credential_values: {aws_access_key_id: AKIA1, aws_secret_access_key: s3cr3t, aws_region_name: eu-central-1}
"#;
    let env: &'static [(&str, &str)] = &[
        ("GEMINI_API_KEY", "gk"),
        ("VERTEXAI_LOCATION", "europe-west4"),
        ("COHERE_API_KEY", "ck"),
        ("MISTRAL_API_KEY", "mk"),
        ("AWS_REGION_NAME", "ap-south-1"),
    ];
    let s = load(text, env).unwrap().snapshot;
    let d = |name: &str| s.deployments.iter().find(|d| d.model_name == name).unwrap();
    assert_eq!(d("g").api_key.as_ref().unwrap().expose(), "gk");
    assert_eq!(
        d("g").api_base,
        "https://generativelanguage.googleapis.com/v1beta"
    );
    let v = d("v");
    assert_eq!(v.provider, ProviderKind::VertexAi);
    assert_eq!(v.settings.param("vertex_project"), Some("p1"));
    assert_eq!(v.settings.param("vertex_location"), Some("europe-west4"));
    assert_eq!(v.api_base, "https://europe-west4-aiplatform.googleapis.com");
    assert!(v.settings.secret("vertex_credentials").is_some());
    assert!(
        !v.settings.params.contains_key("vertex_credentials"),
        "secrets stay secret"
    );
    let b = d("b");
    assert_eq!(b.settings.param("aws_region_name"), Some("eu-central-1"));
    assert_eq!(
        b.api_base,
        "https://bedrock-runtime.eu-central-1.amazonaws.com"
    );
    assert_eq!(
        b.settings.secret("aws_secret_access_key").unwrap().expose(),
        "s3cr3t"
    );
    assert_eq!(
        b.settings.param("aws_role_name"),
        Some("arn:aws:iam::1:role/r")
    );
    let b2 = d("b2");
    assert_eq!(b2.settings.param("aws_region_name"), Some("ap-south-1"));
    assert_eq!(
        b2.api_base,
        "https://vpce-1.bedrock-runtime.eu-west-1.vpce.amazonaws.com"
    );
    assert_eq!(d("c").api_key.as_ref().unwrap().expose(), "ck");
    assert_eq!(d("c").api_base, "https://api.cohere.com");
    assert_eq!(d("m").api_key.as_ref().unwrap().expose(), "mk");
    // Provider settings survive the wire.
    let pb = crate::wire::pb::Deployment::from(b);
    let back = crate::Deployment::try_from(pb).unwrap();
    assert_eq!(&back, b);
}

#[test]
fn an_empty_credential_name_names_no_credential() {
    let text = "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\n      litellm_credential_name: ''\n";
    assert_eq!(load(text, &[]).unwrap().snapshot.deployments.len(), 1);
    let entry = serde_json::json!({"litellm_params": {"litellm_credential_name": ""}});
    assert_eq!(credential_name(&entry), None);
}

#[test]
fn duplicate_ids_are_rejected() {
    let text = "model_list:\n  - model_name: a\n    litellm_params: {model: mock/a}\n    model_info: {id: x}\n  - model_name: b\n    litellm_params: {model: mock/b}\n    model_info: {id: x}\n";
    let err = load(text, &[]).unwrap_err().to_string();
    assert!(err.contains("duplicate deployment id"), "{err}");
}

#[test]
fn empty_file_is_an_empty_gateway() {
    let l = load("", &[]).unwrap();
    assert!(l.snapshot.deployments.is_empty());
    assert!(l.warnings.iter().any(|w| w.contains("master_key")));
}

#[test]
fn example_config_compiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/example.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let l = compile(&text, &path, &|_| None).unwrap();
    assert!(!l.snapshot.deployments.is_empty());
    assert!(l
        .snapshot
        .deployments
        .iter()
        .all(|d| d.provider == ProviderKind::Mock));
}

#[test]
fn redis_settings_become_a_url_and_router_keys_do_not_warn() {
    let l = load(
        "router_settings:\n  redis_host: os.environ/REDIS_HOST\n  redis_port: 6380\n  redis_password: 'p@ss:w/rd'\n  num_retries: 1\n  fallbacks: [{a: [b]}]\nlitellm_settings:\n  num_retries: 5\n  request_timeout: 9\n",
        &[("REDIS_HOST", "cache.internal")],
    )
    .unwrap();
    assert_eq!(
        l.redis_url.unwrap().expose(),
        "redis://:p%40ss%3Aw%2Frd@cache.internal:6380"
    );
    let r = &l.snapshot.router;
    // router_settings wins over litellm_settings; litellm_settings fills the rest.
    assert_eq!(r.num_retries, Some(1));
    assert_eq!(r.request_timeout, Some(std::time::Duration::from_secs(9)));
    assert_eq!(r.fallbacks.len(), 1);
    assert!(
        l.warnings.iter().all(|w| !w.contains("router_settings")),
        "{:?}",
        l.warnings
    );
    assert!(load("router_settings: {}\n", &[])
        .unwrap()
        .redis_url
        .is_none());
    let e = load(
        "router_settings:\n  redis_host: h\n  redis_port: nope\n",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("router_settings.redis_port"), "{e}");
    let e = load("litellm_settings:\n  num_retries: -2\n", &[]).unwrap_err();
    assert!(
        e.to_string().contains("litellm_settings.num_retries"),
        "{e}"
    );
}

#[test]
fn turn_off_message_logging_is_read_into_the_snapshot() {
    let on = load("litellm_settings:\n  turn_off_message_logging: true\n", &[]).unwrap();
    assert!(on.snapshot.turn_off_message_logging);
    assert!(on.snapshot.settings().turn_off_message_logging);
    assert!(!on
        .warnings
        .iter()
        .any(|w| w.contains("turn_off_message_logging")));
    assert!(!load("{}", &[]).unwrap().snapshot.turn_off_message_logging);
    let e = load(
        "litellm_settings:\n  turn_off_message_logging: yes please\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("litellm_settings.turn_off_message_logging"),
        "{e}"
    );
}

#[test]
fn absurd_timeouts_are_errors_not_panics() {
    let e = load(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/m\n      timeout: 1.2e308\n",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("litellm_params.timeout"), "{e}");
}

#[test]
fn deployments_the_egress_allow_list_refuses_are_warned_about() {
    let l = load(
        r#"
model_list:
  - model_name: local
    litellm_params:
      model: openai/llama
      api_base: http://vllm.internal:8000/v1
  - model_name: cloud
    litellm_params:
      model: openai/gpt-4o
      api_key: k
    model_info:
      id: cloud-1
  - model_name: unlisted-address
    litellm_params:
      model: openai/llama
      api_base: http://10.1.2.3:8000/v1
general_settings:
  master_key: sk-test
  allowed_egress: [vllm.internal, "*.corp.example"]
"#,
        &[],
    )
    .unwrap();
    let egress: Vec<&String> = l
        .warnings
        .iter()
        .filter(|w| w.contains("allowed_egress"))
        .collect();
    assert_eq!(egress.len(), 2, "{:?}", l.warnings);
    assert!(
        egress[0].contains("cloud-1") && egress[0].contains("api.openai.com"),
        "{}",
        egress[0]
    );
    assert!(egress[1].contains("10.1.2.3"), "{}", egress[1]);
}

#[test]
fn names_the_allow_list_may_admit_by_address_are_not_warned_about() {
    let l = load(
        r#"
model_list:
  - model_name: cloud
    litellm_params:
      model: openai/gpt-4o
      api_key: k
general_settings:
  master_key: sk-test
  allowed_egress: [10.0.0.0/8]
"#,
        &[],
    )
    .unwrap();
    assert!(
        l.warnings.iter().all(|w| !w.contains("allowed_egress")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn mcp_servers_are_compiled_and_checked() {
    let l = load(
        r#"
model_list: []
mcp_servers:
  github:
    url: https://mcp.example/mcp
    auth_type: bearer_token
    authentication_token: os.environ/GH
    static_headers: {X-Org: acme}
    allowed_tools: [search]
  local:
    transport: stdio
    command: python
    args: [server.py]
    env: {TOKEN: os.environ/GH}
  legacy:
    transport: sse
    url: http://127.0.0.1:9000/sse
"#,
        &[("GH", "gh-token")],
    )
    .unwrap();
    let s = &l.snapshot.mcp_servers;
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].name, "github");
    let local = s.iter().find(|m| m.name == "local").unwrap();
    assert_eq!(
        (local.command.as_str(), local.args.as_slice()),
        ("python", &["server.py".to_owned()][..])
    );
    assert_eq!(local.env[0].1.expose(), "gh-token");
    assert_eq!(
        s.iter().find(|m| m.name == "legacy").unwrap().transport,
        crate::McpTransport::Sse
    );
    assert_eq!(
        s[0].auth.header(),
        Some(("authorization", "Bearer gh-token".into()))
    );
    assert_eq!(s[0].static_headers[0].0, "x-org");
    assert!(s[0].exposes("search") && !s[0].exposes("delete"));
    assert!(
        !l.warnings.iter().any(|w| w.contains("mcp_servers")),
        "{:?}",
        l.warnings
    );

    for (entry, at) in [
        ("bad/name: {url: http://x/mcp}", "mcp_servers.bad/name"),
        ("s: {url: ftp://x/mcp}", "mcp_servers.s.url"),
        (
            "s: {url: http://x/mcp, auth_type: oauth9}",
            "mcp_servers.s.auth_type",
        ),
        (
            "s: {url: http://x/mcp, auth_type: api_key}",
            "mcp_servers.s.auth_type",
        ),
        (
            "s: {url: http://x/mcp, transport: grpc}",
            "mcp_servers.s.transport",
        ),
        ("s: {transport: stdio}", "mcp_servers.s.command"),
        (
            "s: {transport: stdio, command: x, env: {T: '${Authorization}'}}",
            "mcp_servers.s.env.T",
        ),
        (
            "s: {url: http://x/mcp, mcp_info: {mcp_server_cost_info: {default_cost_per_query: -1}}}",
            "mcp_servers.s.mcp_info.mcp_server_cost_info.default_cost_per_query",
        ),
        (
            "s: {url: http://x/mcp, mcp_info: {mcp_server_cost_info: {tool_name_to_cost_per_query: {t: .nan}}}}",
            "mcp_servers.s.mcp_info.mcp_server_cost_info.tool_name_to_cost_per_query.t",
        ),
    ] {
        let text = format!("model_list: []\nmcp_servers:\n  {entry}\n");
        match load(&text, &[]) {
            Err(ConfigError::Invalid { at: got, .. }) => assert_eq!(got, at, "{entry}"),
            other => panic!("{entry}: {other:?}"),
        }
    }
}

#[test]
fn agents_are_compiled_and_checked() {
    let l = load(
        r#"
model_list: []
agent_list:
  - agent_name: planner
    agent_card_params: {url: "https://agents.example/planner/"}
    litellm_params:
      api_key: os.environ/PLANNER
      headers: {X-Org: acme}
      make_public: true
      custom_llm_provider: a2a
  - agent_name: support
    agent_card_params: {name: Support, url: "http://10.0.0.9:8000/", skills: []}
    agent_access_groups: [ops]
general_settings: {agent_access_default_deny: true}
"#,
        &[("PLANNER", "planner-token")],
    )
    .unwrap();
    let a = &l.snapshot.agents;
    assert_eq!(a.len(), 2);
    assert_eq!(
        (a[0].name.as_str(), a[0].url.as_str(), a[0].public),
        ("planner", "https://agents.example/planner/", true)
    );
    assert!(a[0].card.is_none(), "a url alone is not a card");
    let headers: Vec<(&str, &str)> = a[0]
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [("authorization", "Bearer planner-token"), ("x-org", "acme")]
    );
    assert_eq!(a[1].card.as_ref().unwrap()["name"], "Support");
    assert!(!a[1].public);
    assert_eq!(
        (a[1].id.as_str(), &a[1].access_groups[..]),
        ("support", &["ops".to_owned()][..])
    );
    assert!(l.snapshot.agent_access_default_deny);
    // LiteLLM's own agent parameters are not used here: said, not an error.
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("agents[0].litellm_params") && w.contains("custom_llm_provider")),
        "{:?}",
        l.warnings
    );

    for (entry, at) in [
        (
            "{agent_name: a/b, agent_card_params: {url: http://x/}}",
            "agents[0].agent_name",
        ),
        (
            "{agent_name: a, agent_card_params: {name: A}}",
            "agents[0].agent_card_params.url",
        ),
        (
            "{agent_name: a, agent_card_params: {url: ftp://x/}}",
            "agents[0].agent_card_params.url",
        ),
        (
            "{agent_name: a, agent_card_params: {url: 'http://a*b/'}}",
            "agents[0].agent_card_params.url",
        ),
        (
            "{agent_name: a, agent_card_params: {url: 'http://u:p@h/'}}",
            "agents[0].agent_card_params.url",
        ),
        (
            "{agent_name: a, agent_card_params: {url: 'http://h:70000/'}}",
            "agents[0].agent_card_params.url",
        ),
        (
            "{agent_name: a, agent_card_params: {url: http://x/}, litellm_params: {headers: {'bad header': v}}}",
            "agents[0].litellm_params.headers",
        ),
        (
            "{agent_name: a, agent_card_params: {url: http://x/}, litellm_params: {cost_per_query: -1}}",
            "agents[0].litellm_params.cost_per_query",
        ),
    ] {
        let text = format!("model_list: []\nagents:\n  - {entry}\n");
        match load(&text, &[]) {
            Err(ConfigError::Invalid { at: got, .. }) => assert_eq!(got, at, "{entry}"),
            other => panic!("{entry}: {other:?}"),
        }
    }
    let twice = "model_list: []\nagents:\n  - {agent_name: a, agent_card_params: {url: http://x/}}\n  - {agent_name: a, agent_card_params: {url: http://y/}}\n";
    match load(twice, &[]) {
        Err(ConfigError::Invalid { at, message, .. }) => {
            assert_eq!(at, "agents[1].agent_name");
            assert!(message.contains("twice"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_agent_entry_compiles_back_to_its_agent() {
    let entry = serde_json::json!({
        "agent_name": "planner",
        "agent_card_params": {"url": "https://agents.example/p/", "name": "Planner", "skills": []},
        "litellm_params": {"api_key": "os.environ/PLANNER", "headers": {"X-Org": "acme"},
                           "cost_per_query": 0.25},
        "agent_access_groups": ["support"],
        "colour": "blue",
    });
    let lookup = |v: &str| (v == "PLANNER").then(|| "t0k".to_owned());
    let (agent, warnings) = super::compile_agent("id-1", &entry, &lookup).unwrap();
    assert_eq!(
        (agent.id.as_str(), agent.name.as_str()),
        ("id-1", "planner")
    );
    assert_eq!(agent.headers[0].1.expose(), "Bearer t0k");
    assert_eq!(agent.cost_per_query, 0.25);
    assert!(
        warnings.iter().any(|w| w.contains("colour")),
        "{warnings:?}"
    );
    // With its secrets, the entry compiles back to the same agent; without, values are hidden.
    let back = super::compile_agent("id-1", &super::agent_entry(&agent, true), &|_| None)
        .unwrap()
        .0;
    assert_eq!(back, agent);
    let shown = super::agent_entry(&agent, false);
    assert_eq!(shown["litellm_params"]["headers"]["authorization"], "***");
    assert!(!shown.to_string().contains("t0k"));
    let err = super::compile_agent("x", &serde_json::json!({"agent_name": "x"}), &|_| None);
    let (at, message) = err.unwrap_err();
    assert!(
        format!("{at} {message}").contains("agent_card_params"),
        "{at}: {message}"
    );
}

#[test]
fn an_mcp_server_entry_compiles_back_to_its_server() {
    let entry = serde_json::json!({
        "url": "https://mcp.example/mcp",
        "auth_type": "bearer_token",
        "auth_value": "os.environ/MCP_TOKEN",
        "static_headers": {"X-Org": "acme"},
        "allowed_tools": ["search"],
        "access_groups": ["dev"],
        "allow_all_keys": true,
        "colour": "blue",
        "mcp_info": {"server_name": "Docs", "logo_url": "https://x/logo.png",
                     "mcp_server_cost_info": {"default_cost_per_query": 0.01,
                         "tool_name_to_cost_per_query": {"search": 0.05, "list": null}}},
    });
    let lookup = |v: &str| (v == "MCP_TOKEN").then(|| "t0k".to_owned());
    let (server, warnings) = super::compile_mcp_server("docs", &entry, &lookup).unwrap();
    assert_eq!(server.auth.value(), "t0k");
    assert_eq!(server.cost.of("search"), 0.05);
    assert_eq!(
        server.cost.of("list"),
        0.01,
        "a tool priced null costs the default"
    );
    assert_eq!(server.cost.of("other"), 0.01);
    assert_eq!(server.static_headers[0].0, "x-org");
    assert!(server.allow_all_keys && warnings.len() == 1 && warnings[0].contains("colour"));
    let (again, _) =
        super::compile_mcp_server("docs", &super::mcp_server_entry(&server), &|_| None).unwrap();
    assert_eq!(again, server);
    let m2m = serde_json::json!({
        "url": "https://mcp.example/mcp", "auth_type": "oauth2", "oauth2_flow": "client_credentials",
        "client_id": "cid", "client_secret": "shh", "token_url": "https://auth.example/token",
        "scopes": ["a", "b"],
    });
    let (server, _) = super::compile_mcp_server("m2m", &m2m, &|_| None).unwrap();
    assert_eq!(server.auth.value(), "shh");
    assert_eq!(server.oauth2.as_ref().unwrap().scopes, ["a", "b"]);
    let (again, _) =
        super::compile_mcp_server("m2m", &super::mcp_server_entry(&server), &|_| None).unwrap();
    assert_eq!(again, server);
    for (entry, at) in [
        (
            serde_json::json!({"url": "http://x/mcp", "auth_type": "oauth2", "client_secret": "s", "token_url": "http://t/token"}),
            "client_id",
        ),
        (
            serde_json::json!({"url": "http://x/mcp", "auth_type": "oauth2", "client_id": "c", "client_secret": "s"}),
            "token_url",
        ),
        (
            serde_json::json!({"url": "http://x/mcp", "auth_type": "oauth2", "client_id": "c", "token_url": "http://t/token"}),
            "auth_type",
        ),
        (
            serde_json::json!({"url": "http://x/mcp", "auth_type": "oauth2", "oauth2_flow": "authorization_code", "client_id": "c", "client_secret": "s", "token_url": "http://t/token"}),
            "oauth2_flow",
        ),
    ] {
        assert_eq!(
            super::compile_mcp_server("m", &entry, &|_| None)
                .unwrap_err()
                .0,
            at,
            "{entry}"
        );
    }
    let bad = serde_json::json!({"url": "ftp://x"});
    assert_eq!(
        super::compile_mcp_server("docs", &bad, &|_| None)
            .unwrap_err()
            .0,
        "url"
    );
    let bad = serde_json::json!({"url": "http://x/mcp", "allowed_tools": "search"});
    assert_eq!(
        super::compile_mcp_server("docs", &bad, &|_| None)
            .unwrap_err()
            .0,
        "allowed_tools"
    );
}

#[test]
fn the_semantic_cache_embedding_model_must_be_a_group_of_one_model() {
    let config = |second: &str, group: &str| {
        format!(
            r#"
model_list:
  - model_name: embedder
    litellm_params: {{model: azure/emb-eu, api_base: https://eu.example.com, api_key: k, api_version: "2024-10-21"}}
    model_info: {{base_model: text-embedding-3-small}}
  - model_name: embedder
    litellm_params: {second}
litellm_settings:
  cache: true
  cache_params: {{type: redis-semantic, redis_semantic_cache_embedding_model: {group}}}
"#
        )
    };
    let warned = |l: &Loaded| {
        l.warnings
            .iter()
            .any(|w| w.contains("redis_semantic_cache_embedding_model"))
    };
    let same = "{model: openai/text-embedding-3-small, api_key: k}";
    let l = load(&config(same, "embedder"), &[]).unwrap();
    assert!(!warned(&l), "{:?}", l.warnings);
    // An Azure deployment without base_model is not compared.
    let unknown =
        "{model: azure/emb-us, api_base: https://us.example.com, api_key: k, api_version: v1}";
    assert!(!warned(&load(&config(unknown, "embedder"), &[]).unwrap()));
    let other = "{model: openai/text-embedding-3-large, api_key: k}";
    assert!(warned(&load(&config(other, "embedder"), &[]).unwrap()));
    let err = load(&config(same, "nope"), &[]).unwrap_err().to_string();
    assert!(
        err.contains("redis_semantic_cache_embedding_model") && err.contains("`nope`"),
        "{err}"
    );
}
