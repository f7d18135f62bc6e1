//! LiteLLM's `model: <provider>/<id>` strings.

use crate::ProviderKind;

/// OpenAI-compatible providers LiteLLM knows by prefix, with their default base URL
/// (`None`: `api_base` is required).
const OPENAI_COMPATIBLE: &[(&str, Option<&str>)] = &[
    ("openai", Some("https://api.openai.com/v1")),
    ("text-completion-openai", Some("https://api.openai.com/v1")),
    ("hosted_vllm", None),
    ("vllm", None),
    ("openai_compatible", None),
    ("custom_openai", None),
    ("lm_studio", Some("http://localhost:1234/v1")),
    ("ollama_chat", Some("http://localhost:11434/v1")),
    ("groq", Some("https://api.groq.com/openai/v1")),
    ("deepseek", Some("https://api.deepseek.com/v1")),
    ("together_ai", Some("https://api.together.xyz/v1")),
    (
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
    ),
    ("mistral", Some("https://api.mistral.ai/v1")),
    ("perplexity", Some("https://api.perplexity.ai")),
    ("openrouter", Some("https://openrouter.ai/api/v1")),
    ("xai", Some("https://api.x.ai/v1")),
    ("deepinfra", Some("https://api.deepinfra.com/v1/openai")),
    ("cerebras", Some("https://api.cerebras.ai/v1")),
];

/// A parsed `model` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedModel {
    pub provider: ProviderKind,
    /// The provider prefix as written (`hosted_vllm`, `groq`, ...), or the inferred one.
    pub prefix: String,
    pub upstream_model: String,
    pub default_api_base: Option<&'static str>,
}

/// Splits `<provider>/<id>`. A string without a known provider prefix is inferred the way
/// LiteLLM does for bare names: `claude-*` is Anthropic, anything else OpenAI.
pub fn parse_model(model: &str) -> ParsedModel {
    if let Some((prefix, rest)) = model.split_once('/') {
        let known = match prefix {
            "anthropic" => Some((ProviderKind::Anthropic, Some("https://api.anthropic.com"))),
            "azure" => Some((ProviderKind::Azure, None)),
            "mock" => Some((ProviderKind::Mock, None)),
            _ => OPENAI_COMPATIBLE
                .iter()
                .find(|(p, _)| *p == prefix)
                .map(|(_, base)| (ProviderKind::OpenAi, *base)),
        };
        if let Some((provider, default_api_base)) = known {
            return ParsedModel {
                provider,
                prefix: prefix.to_owned(),
                upstream_model: rest.to_owned(),
                default_api_base,
            };
        }
    }
    let (provider, prefix, base) = if model.starts_with("claude") {
        (
            ProviderKind::Anthropic,
            "anthropic",
            "https://api.anthropic.com",
        )
    } else {
        (ProviderKind::OpenAi, "openai", "https://api.openai.com/v1")
    };
    ParsedModel {
        provider,
        prefix: prefix.to_owned(),
        upstream_model: model.to_owned(),
        default_api_base: Some(base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_prefixes_split_once() {
        let p = parse_model("hosted_vllm/meta-llama/Llama-3.1-8B");
        assert_eq!(p.provider, ProviderKind::OpenAi);
        assert_eq!(p.upstream_model, "meta-llama/Llama-3.1-8B");
        assert_eq!(p.default_api_base, None);
        let p = parse_model("anthropic/claude-sonnet-4");
        assert_eq!(p.provider, ProviderKind::Anthropic);
        assert_eq!(p.upstream_model, "claude-sonnet-4");
        assert_eq!(parse_model("azure/my-gpt").provider, ProviderKind::Azure);
        assert_eq!(parse_model("mock/echo").provider, ProviderKind::Mock);
        assert_eq!(
            parse_model("groq/llama3").default_api_base,
            Some("https://api.groq.com/openai/v1")
        );
    }

    #[test]
    fn bare_names_are_inferred() {
        assert_eq!(parse_model("gpt-4o").provider, ProviderKind::OpenAi);
        assert_eq!(
            parse_model("claude-3-5-haiku").provider,
            ProviderKind::Anthropic
        );
        let p = parse_model("unknownhost/model");
        assert_eq!(p.provider, ProviderKind::OpenAi);
        assert_eq!(p.upstream_model, "unknownhost/model");
    }
}
