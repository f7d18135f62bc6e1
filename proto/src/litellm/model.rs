//! LiteLLM's `model: <provider>/<id>` strings.

use crate::ProviderKind;

/// An OpenAI-compatible provider LiteLLM knows by prefix.
pub struct Compatible {
    pub prefix: &'static str,
    /// Default base URL (`None`: `api_base` is required).
    pub api_base: Option<&'static str>,
    /// Environment variables LiteLLM reads the API key from, in order.
    pub key_vars: &'static [&'static str],
    /// Environment variables LiteLLM reads `api_base` from, in order.
    pub base_vars: &'static [&'static str],
    /// Which of OpenAI's chat parameters ([`OPENAI_CHAT_PARAMS`]) the provider takes.
    pub params: ChatParams,
    /// OpenAI parameters the provider names differently: `(openai, provider's)`.
    pub renames: &'static [(&'static str, &'static str)],
}

/// OpenAI's chat-completion parameters besides `model`, `messages` and `stream`: the ones a
/// provider of the OpenAI-compatible family may refuse. Fields outside this list are the
/// provider's own extensions (`top_k`, `safe_prompt`, ...) and are always passed on.
pub const OPENAI_CHAT_PARAMS: &[&str] = &[
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

/// The OpenAI chat parameters a provider takes (its documented limits, as LiteLLM's
/// provider configs record them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatParams {
    All,
    AllBut(&'static [&'static str]),
    Only(&'static [&'static str]),
}

impl ChatParams {
    /// Whether the provider takes the top-level request field `field`.
    pub fn takes(self, field: &str) -> bool {
        if !OPENAI_CHAT_PARAMS.contains(&field) {
            return true;
        }
        match self {
            Self::All => true,
            Self::AllBut(refused) => !refused.contains(&field),
            Self::Only(taken) => taken.contains(&field),
        }
    }
}

const fn compatible(
    prefix: &'static str,
    api_base: Option<&'static str>,
    key_vars: &'static [&'static str],
    base_vars: &'static [&'static str],
) -> Compatible {
    Compatible {
        prefix,
        api_base,
        key_vars,
        base_vars,
        params: ChatParams::All,
        renames: &[],
    }
}

impl Compatible {
    const fn quirks(
        self,
        params: ChatParams,
        renames: &'static [(&'static str, &'static str)],
    ) -> Self {
        Self {
            params,
            renames,
            ..self
        }
    }
}

/// The OpenAI-compatible family, one row per prefix.
pub const OPENAI_COMPATIBLE: &[Compatible] = &[
    compatible(
        "openai",
        Some("https://api.openai.com/v1"),
        &["OPENAI_API_KEY"],
        &["OPENAI_API_BASE", "OPENAI_BASE_URL"],
    ),
    compatible(
        "text-completion-openai",
        Some("https://api.openai.com/v1"),
        &["OPENAI_API_KEY"],
        &["OPENAI_API_BASE"],
    ),
    compatible(
        "hosted_vllm",
        None,
        &["HOSTED_VLLM_API_KEY"],
        &["HOSTED_VLLM_API_BASE"],
    ),
    compatible(
        "vllm",
        None,
        &["HOSTED_VLLM_API_KEY"],
        &["HOSTED_VLLM_API_BASE"],
    ),
    compatible("openai_compatible", None, &[], &[]),
    compatible("custom_openai", None, &[], &[]),
    compatible(
        "lm_studio",
        Some("http://localhost:1234/v1"),
        &["LM_STUDIO_API_KEY"],
        &["LM_STUDIO_API_BASE"],
    ),
    compatible(
        "ollama_chat",
        Some("http://localhost:11434/v1"),
        &["OLLAMA_API_KEY"],
        &["OLLAMA_API_BASE"],
    ),
    compatible(
        "groq",
        Some("https://api.groq.com/openai/v1"),
        &["GROQ_API_KEY"],
        &["GROQ_API_BASE"],
    )
    // Groq answers 400 to these (its OpenAI-compatibility notes).
    .quirks(
        ChatParams::AllBut(&["logprobs", "top_logprobs", "logit_bias"]),
        &[],
    ),
    compatible(
        "deepseek",
        Some("https://api.deepseek.com/v1"),
        &["DEEPSEEK_API_KEY"],
        &["DEEPSEEK_API_BASE"],
    ),
    compatible(
        "together_ai",
        Some("https://api.together.xyz/v1"),
        &[
            "TOGETHERAI_API_KEY",
            "TOGETHER_AI_API_KEY",
            "TOGETHER_API_KEY",
        ],
        &["TOGETHERAI_API_BASE"],
    ),
    compatible(
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
        &[
            "FIREWORKS_AI_API_KEY",
            "FIREWORKS_API_KEY",
            "FIREWORKSAI_API_KEY",
        ],
        &["FIREWORKS_AI_API_BASE", "FIREWORKS_API_BASE"],
    ),
    compatible(
        "mistral",
        Some("https://api.mistral.ai/v1"),
        &["MISTRAL_API_KEY"],
        &["MISTRAL_API_BASE"],
    )
    // Mistral refuses fields it does not know ("extra_forbidden").
    .quirks(
        ChatParams::Only(&[
            "temperature",
            "top_p",
            "max_tokens",
            "max_completion_tokens",
            "tools",
            "tool_choice",
            "seed",
            "stop",
            "response_format",
            "parallel_tool_calls",
            "reasoning_effort",
        ]),
        &[
            ("max_completion_tokens", "max_tokens"),
            ("seed", "random_seed"),
        ],
    ),
    compatible(
        "perplexity",
        Some("https://api.perplexity.ai"),
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"],
        &["PERPLEXITY_API_BASE"],
    )
    // No tools, no stop, no n, no seed.
    .quirks(
        ChatParams::Only(&[
            "frequency_penalty",
            "max_tokens",
            "max_completion_tokens",
            "presence_penalty",
            "response_format",
            "temperature",
            "top_p",
            "reasoning_effort",
            "web_search_options",
        ]),
        &[],
    ),
    compatible(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_KEY", "OR_API_KEY"],
        &["OPENROUTER_API_BASE"],
    ),
    compatible(
        "xai",
        Some("https://api.x.ai/v1"),
        &["XAI_API_KEY"],
        &["XAI_API_BASE"],
    ),
    compatible(
        "deepinfra",
        Some("https://api.deepinfra.com/v1/openai"),
        &["DEEPINFRA_API_KEY"],
        &["DEEPINFRA_API_BASE"],
    ),
    compatible(
        "cerebras",
        Some("https://api.cerebras.ai/v1"),
        &["CEREBRAS_API_KEY"],
        &["CEREBRAS_API_BASE"],
    )
    .quirks(
        ChatParams::Only(&[
            "max_tokens",
            "max_completion_tokens",
            "response_format",
            "seed",
            "stop",
            "stream_options",
            "temperature",
            "top_p",
            "tool_choice",
            "tools",
            "user",
            "reasoning_effort",
        ]),
        &[("max_completion_tokens", "max_tokens")],
    ),
    compatible(
        "nvidia_nim",
        Some("https://integrate.api.nvidia.com/v1"),
        &["NVIDIA_NIM_API_KEY"],
        &["NVIDIA_NIM_API_BASE"],
    ),
    compatible(
        "sambanova",
        Some("https://api.sambanova.ai/v1"),
        &["SAMBANOVA_API_KEY"],
        &["SAMBANOVA_API_BASE"],
    ),
];

/// Whether a deployment of the OpenAI wire format answers legacy `/completions` itself,
/// as LiteLLM decides: the `text-completion-openai/` prefix, or one of OpenAI's
/// completion models. Others take `/v1/completions` through chat, unless their
/// `model_info.mode` is `completion`.
pub fn text_completion_model(prefix: &str, upstream_model: &str) -> bool {
    prefix == "text-completion-openai"
        || upstream_model.starts_with("gpt-3.5-turbo-instruct")
        || matches!(upstream_model, "davinci-002" | "babbage-002")
}

/// The row of the OpenAI-compatible family for `prefix`.
pub fn compatible_row(prefix: &str) -> Option<&'static Compatible> {
    OPENAI_COMPATIBLE.iter().find(|c| c.prefix == prefix)
}

/// Google's Gemini API base (v1beta: tools, system instructions and JSON schema).
pub const GEMINI_API_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

/// Vertex AI's regional base URL for `location` (`global` has no region in its host).
pub fn vertex_api_base(location: &str) -> String {
    if location == "global" {
        "https://aiplatform.googleapis.com".to_owned()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

/// Bedrock Runtime's regional endpoint.
pub fn bedrock_api_base(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// Bedrock's region when none is configured, as LiteLLM's.
pub const BEDROCK_DEFAULT_REGION: &str = "us-west-2";

/// Cohere's API base.
pub const COHERE_API_BASE: &str = "https://api.cohere.com";

/// Vertex AI's default location, as LiteLLM's.
pub const VERTEX_DEFAULT_LOCATION: &str = "us-central1";

/// A parsed `model` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedModel {
    pub provider: ProviderKind,
    /// The provider prefix as written (`hosted_vllm`, `groq`, ...), or the inferred one.
    pub prefix: String,
    pub upstream_model: String,
    pub default_api_base: Option<&'static str>,
}

/// A `model` whose `<provider>/` prefix this gateway does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown provider `{prefix}` in `{model}`; known providers: {known}",
    known = known_prefixes().join(", ")
)]
pub struct UnknownProvider {
    pub prefix: String,
    pub model: String,
}

/// Every provider prefix [`parse_model`] accepts.
pub fn known_prefixes() -> Vec<&'static str> {
    [
        "anthropic",
        "azure",
        "gemini",
        "vertex_ai",
        "bedrock",
        "cohere",
        "mock",
    ]
    .into_iter()
    .chain(OPENAI_COMPATIBLE.iter().map(|c| c.prefix))
    .collect()
}

/// Splits `<provider>/<id>`. A string without a `/` is inferred the way LiteLLM does for
/// bare names: `claude-*` is Anthropic, anything else OpenAI. A prefix this gateway does
/// not know is refused, as LiteLLM refuses it: never guessed to be OpenAI.
pub fn parse_model(model: &str) -> Result<ParsedModel, UnknownProvider> {
    let Some((prefix, rest)) = model.split_once('/') else {
        let (provider, prefix, base) = if model.starts_with("claude") {
            (
                ProviderKind::Anthropic,
                "anthropic",
                "https://api.anthropic.com",
            )
        } else {
            (ProviderKind::OpenAi, "openai", "https://api.openai.com/v1")
        };
        return Ok(ParsedModel {
            provider,
            prefix: prefix.to_owned(),
            upstream_model: model.to_owned(),
            default_api_base: Some(base),
        });
    };
    let (provider, default_api_base) = match prefix {
        "anthropic" => (ProviderKind::Anthropic, Some("https://api.anthropic.com")),
        "azure" => (ProviderKind::Azure, None),
        "gemini" => (ProviderKind::Gemini, Some(GEMINI_API_BASE)),
        // The base depends on `vertex_location`: set when the deployment is compiled.
        "vertex_ai" => (ProviderKind::VertexAi, None),
        // The base depends on `aws_region_name`: set when the deployment is compiled.
        "bedrock" => (ProviderKind::Bedrock, None),
        "cohere" | "cohere_chat" => (ProviderKind::Cohere, Some(COHERE_API_BASE)),
        "mock" => (ProviderKind::Mock, None),
        _ => compatible_row(prefix)
            .map(|c| (ProviderKind::OpenAi, c.api_base))
            .ok_or_else(|| UnknownProvider {
                prefix: prefix.to_owned(),
                model: model.to_owned(),
            })?,
    };
    Ok(ParsedModel {
        provider,
        prefix: prefix.to_owned(),
        upstream_model: rest.to_owned(),
        default_api_base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_prefixes_split_once() {
        let p = parse_model("hosted_vllm/meta-llama/Llama-3.1-8B").unwrap();
        assert_eq!(p.provider, ProviderKind::OpenAi);
        assert_eq!(p.upstream_model, "meta-llama/Llama-3.1-8B");
        assert_eq!(p.default_api_base, None);
        let p = parse_model("anthropic/claude-sonnet-4").unwrap();
        assert_eq!(p.provider, ProviderKind::Anthropic);
        assert_eq!(p.upstream_model, "claude-sonnet-4");
        assert_eq!(
            parse_model("azure/my-gpt").unwrap().provider,
            ProviderKind::Azure
        );
        assert_eq!(
            parse_model("mock/echo").unwrap().provider,
            ProviderKind::Mock
        );
        assert_eq!(
            parse_model("groq/llama3").unwrap().default_api_base,
            Some("https://api.groq.com/openai/v1")
        );
    }

    #[test]
    fn cloud_providers_are_known() {
        let p = parse_model("bedrock/invoke/us.anthropic.claude-sonnet-4-5-v1:0").unwrap();
        assert_eq!(p.provider, ProviderKind::Bedrock);
        assert_eq!(
            p.upstream_model,
            "invoke/us.anthropic.claude-sonnet-4-5-v1:0"
        );
        assert_eq!(
            parse_model("gemini/gemini-2.0-flash")
                .unwrap()
                .default_api_base,
            Some(GEMINI_API_BASE)
        );
        assert_eq!(
            parse_model("vertex_ai/claude-sonnet-4-5@20250929")
                .unwrap()
                .provider,
            ProviderKind::VertexAi
        );
        assert_eq!(
            parse_model("cohere_chat/command-r").unwrap().provider,
            ProviderKind::Cohere
        );
        assert_eq!(
            vertex_api_base("global"),
            "https://aiplatform.googleapis.com"
        );
        assert_eq!(
            vertex_api_base("europe-west4"),
            "https://europe-west4-aiplatform.googleapis.com"
        );
    }

    #[test]
    fn provider_quirks_name_only_openai_parameters() {
        for row in OPENAI_COMPATIBLE {
            let listed: &[&str] = match row.params {
                ChatParams::All => &[],
                ChatParams::AllBut(l) | ChatParams::Only(l) => l,
            };
            for p in listed
                .iter()
                .chain(row.renames.iter().map(|(from, _)| from))
            {
                assert!(OPENAI_CHAT_PARAMS.contains(p), "{}: {p}", row.prefix);
            }
        }
        let groq = compatible_row("groq").unwrap().params;
        assert!(!groq.takes("logprobs") && groq.takes("temperature") && groq.takes("top_k"));
        let mistral = compatible_row("mistral").unwrap().params;
        assert!(!mistral.takes("user") && mistral.takes("safe_prompt") && mistral.takes("tools"));
        assert!(compatible_row("openai").unwrap().params.takes("logprobs"));
    }

    #[test]
    fn bare_names_are_inferred() {
        assert_eq!(
            parse_model("gpt-4o").unwrap().provider,
            ProviderKind::OpenAi
        );
        assert_eq!(
            parse_model("claude-3-5-haiku").unwrap().provider,
            ProviderKind::Anthropic
        );
    }

    #[test]
    fn unknown_prefixes_are_refused_not_sent_to_openai() {
        for model in ["sagemaker/my-endpoint", "opneai/gpt-4o"] {
            let e = parse_model(model).unwrap_err();
            assert_eq!(e.model, model);
            let message = e.to_string();
            assert!(
                message.contains(&format!("unknown provider `{}`", e.prefix)),
                "{message}"
            );
            assert!(message.contains("groq"), "{message}");
        }
    }
}
