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
    ["anthropic", "azure", "mock"]
        .into_iter()
        .chain(OPENAI_COMPATIBLE.iter().map(|(p, _)| *p))
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
        "mock" => (ProviderKind::Mock, None),
        _ => OPENAI_COMPATIBLE
            .iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, base)| (ProviderKind::OpenAi, *base))
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
        for model in [
            "bedrock/anthropic.claude-3-5-sonnet",
            "gemini/gemini-2.0-flash",
            "opneai/gpt-4o",
        ] {
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
