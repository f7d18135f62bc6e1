//! What a request cost: tokens times the deployment's prices per token.
//!
//! Prices come from the deployment (`input_cost_per_token` / `output_cost_per_token` in
//! `model_info` or `litellm_params`), else from the operator's price file (LiteLLM's
//! `model_prices_and_context_window.json`, `--model-prices`; read from disk at startup,
//! never fetched), else from the built-in table below, looked up by
//! `model_info.base_model` or the upstream model name (dated versions such as
//! `gpt-4o-2024-08-06` match `gpt-4o`). A model in none costs 0. Resolved once per
//! deployment when a snapshot is compiled.

use std::collections::HashMap;
use std::path::Path;

use routeiq_proto::Deployment;
use serde::Deserialize;

use crate::usage::Usage;

/// USD per token.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub input: f64,
    pub output: f64,
    /// A prompt token read from the provider's cache.
    pub cached_input: f64,
    /// A prompt token written to the provider's cache (LiteLLM's
    /// `cache_creation_input_token_cost`).
    pub cache_write_input: f64,
    /// A search (Cohere's rerank `search_units`), USD.
    pub per_query: f64,
    /// A generated image (`output_cost_per_image`), USD.
    pub per_image: f64,
    /// A second of audio transcribed or translated (`input_cost_per_second`), USD.
    pub per_second: f64,
    /// A character of text spoken (`input_cost_per_character`), USD.
    pub per_character: f64,
}

impl Prices {
    pub fn of(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage
            .cache_write_input_tokens
            .min(usage.input_tokens - cached);
        (usage.input_tokens - cached - written) as f64 * self.input
            + cached as f64 * self.cached_input
            + written as f64 * self.cache_write_input
            + usage.output_tokens as f64 * self.output
    }
}

const M: f64 = 1e-6;

/// Public list prices in USD per million tokens (input, output, cached input: a prompt
/// token read from the provider's prompt cache), for the common models. A prompt token
/// written to the cache costs the input price, except on Claude models ([`builtin`]).
const TABLE: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("gpt-4-turbo", 10.00, 30.00, 10.00),
    ("gpt-4", 30.00, 60.00, 30.00),
    ("gpt-3.5-turbo", 0.50, 1.50, 0.50),
    ("o1", 15.00, 60.00, 7.50),
    ("o1-mini", 1.10, 4.40, 0.55),
    ("o3", 2.00, 8.00, 0.50),
    ("o3-mini", 1.10, 4.40, 0.55),
    ("o4-mini", 1.10, 4.40, 0.275),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("text-embedding-ada-002", 0.10, 0.0, 0.10),
    ("claude-opus-4-1", 15.00, 75.00, 1.50),
    ("claude-opus-4", 15.00, 75.00, 1.50),
    ("claude-sonnet-4-5", 3.00, 15.00, 0.30),
    ("claude-sonnet-4", 3.00, 15.00, 0.30),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10),
    ("claude-3-7-sonnet", 3.00, 15.00, 0.30),
    ("claude-3-5-sonnet", 3.00, 15.00, 0.30),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08),
    ("claude-3-opus", 15.00, 75.00, 1.50),
    ("claude-3-haiku", 0.25, 1.25, 0.03),
    // Gemini: the prices of prompts up to 200k tokens.
    ("gemini-2.5-pro", 1.25, 10.00, 0.31),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 0.025),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025),
    ("gemini-2.0-flash-lite", 0.075, 0.30, 0.075),
    ("gemini-1.5-pro", 1.25, 5.00, 0.3125),
    ("gemini-1.5-flash", 0.075, 0.30, 0.01875),
    ("text-embedding-004", 0.0, 0.0, 0.0),
    ("gemini-embedding-001", 0.15, 0.0, 0.15),
    // Bedrock's own models (by their id without the vendor: `amazon.nova-pro-v1:0`).
    ("nova-premier", 2.50, 12.50, 0.625),
    ("nova-pro", 0.80, 3.20, 0.20),
    ("nova-lite", 0.06, 0.24, 0.015),
    ("nova-micro", 0.035, 0.14, 0.00875),
    ("titan-embed-text-v2", 0.02, 0.0, 0.02),
    ("titan-embed-text-v1", 0.10, 0.0, 0.10),
    // Cohere.
    ("command-a", 2.50, 10.00, 2.50),
    ("command-r-plus", 2.50, 10.00, 2.50),
    ("command-r", 0.15, 0.60, 0.15),
    ("command-r7b", 0.0375, 0.15, 0.0375),
    ("embed-v4.0", 0.12, 0.0, 0.12),
    ("embed-english-v3.0", 0.10, 0.0, 0.10),
    ("embed-multilingual-v3.0", 0.10, 0.0, 0.10),
    ("embed-english-v3", 0.10, 0.0, 0.10),
    ("embed-multilingual-v3", 0.10, 0.0, 0.10),
];

/// What a model priced per unit (not per token) charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A search (Cohere's rerank).
    Query,
    /// An image, standard 1024x1024 (other sizes and qualities: `output_cost_per_image`).
    Image,
    /// A second of audio.
    Second,
    /// A character spoken.
    Character,
}

/// Models priced per unit, USD (list prices: Cohere's $2.00 per 1,000 searches, on
/// Bedrock too, and Amazon Rerank's $1.00; OpenAI's
/// images, $0.006 a minute of whisper-1, $15 and $30 per million characters of speech).
const PER_UNIT: &[(&str, Unit, f64)] = &[
    ("rerank-v3.5", Unit::Query, 0.002),
    ("rerank-english-v3.0", Unit::Query, 0.002),
    ("rerank-multilingual-v3.0", Unit::Query, 0.002),
    ("cohere.rerank-v3-5:0", Unit::Query, 0.002),
    ("amazon.rerank-v1:0", Unit::Query, 0.001),
    ("dall-e-3", Unit::Image, 0.04),
    ("dall-e-2", Unit::Image, 0.02),
    ("whisper-1", Unit::Second, 0.0001),
    ("tts-1", Unit::Character, 0.000_015),
    ("tts-1-hd", Unit::Character, 0.000_03),
];

impl Prices {
    fn per(unit: Unit, price: f64) -> Self {
        let mut p = Self::default();
        *match unit {
            Unit::Query => &mut p.per_query,
            Unit::Image => &mut p.per_image,
            Unit::Second => &mut p.per_second,
            Unit::Character => &mut p.per_character,
        } = price;
        p
    }
}

/// The built-in prices of `model`: the longest table entry that is the whole name or the
/// name up to a `-`, `@` or `:` (a dated or tagged version: `gpt-4o-2024-08-06`, Vertex
/// AI's `claude-3-5-sonnet@20240620`, Bedrock's `...-v1:0`). Bedrock ids are looked up
/// without their route, region profile and vendor (`invoke/us.anthropic.claude-...`).
pub fn builtin(model: &str) -> Option<Prices> {
    let model = bedrock_base(model);
    TABLE
        .iter()
        .filter(|(name, ..)| {
            model
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '@', ':']))
        })
        .max_by_key(|(name, ..)| name.len())
        .map(|&(name, input, output, cached)| Prices {
            input: input * M,
            output: output * M,
            cached_input: cached * M,
            // Anthropic's price for a write to its 5-minute cache: 1.25 times the input's.
            cache_write_input: input
                * M
                * if name.starts_with("claude") {
                    1.25
                } else {
                    1.0
                },
            ..Prices::default()
        })
}

/// The operator's price file: LiteLLM's `model_prices_and_context_window.json` format, a
/// map from model name (`gpt-4o`, `gemini/gemini-2.0-flash`,
/// `anthropic.claude-3-5-sonnet-20240620-v1:0`, ...) to its prices per token.
#[derive(Debug, Default)]
pub struct PriceFile(HashMap<String, Prices>);

#[derive(Debug, thiserror::Error)]
pub enum PriceFileError {
    #[error("cannot read the price file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the price file {path} is not LiteLLM's model price JSON: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

impl PriceFile {
    pub fn load(path: &Path) -> Result<Self, PriceFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|source| PriceFileError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Entries with an input or output price; others (`sample_spec`, image models priced
    /// per image) are skipped.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Entry {
            input_cost_per_token: Option<f64>,
            output_cost_per_token: Option<f64>,
            cache_read_input_token_cost: Option<f64>,
            cache_creation_input_token_cost: Option<f64>,
            input_cost_per_query: Option<f64>,
            output_cost_per_image: Option<f64>,
            input_cost_per_second: Option<f64>,
            input_cost_per_character: Option<f64>,
        }
        let raw: HashMap<String, serde_json::Value> = serde_json::from_str(text)?;
        let valid = |p: Option<f64>| p.filter(|p| p.is_finite() && *p >= 0.0);
        Ok(Self(
            raw.into_iter()
                .filter_map(|(name, v)| {
                    let e: Entry = serde_json::from_value(v).ok()?;
                    let (input, output, per_query, per_image, per_second, per_character) = (
                        valid(e.input_cost_per_token),
                        valid(e.output_cost_per_token),
                        valid(e.input_cost_per_query),
                        valid(e.output_cost_per_image),
                        valid(e.input_cost_per_second),
                        valid(e.input_cost_per_character),
                    );
                    if [
                        input,
                        output,
                        per_query,
                        per_image,
                        per_second,
                        per_character,
                    ]
                    .iter()
                    .all(Option::is_none)
                    {
                        return None;
                    }
                    let input = input.unwrap_or(0.0);
                    Some((
                        name,
                        Prices {
                            input,
                            output: output.unwrap_or(0.0),
                            cached_input: valid(e.cache_read_input_token_cost).unwrap_or(input),
                            cache_write_input: valid(e.cache_creation_input_token_cost)
                                .unwrap_or(input),
                            per_query: per_query.unwrap_or(0.0),
                            per_image: per_image.unwrap_or(0.0),
                            per_second: per_second.unwrap_or(0.0),
                            per_character: per_character.unwrap_or(0.0),
                        },
                    ))
                })
                .collect(),
        ))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `<provider>/<model>` (LiteLLM's key for most non-OpenAI models), else `<model>`.
    fn get(&self, provider: &str, model: &str) -> Option<Prices> {
        self.0
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.0.get(model))
            .copied()
    }
}

/// `anthropic.claude-3-5-sonnet-20240620-v1:0` of `invoke/us.anthropic.claude-...`, and
/// `claude-...` of that; other names unchanged.
fn bedrock_base(model: &str) -> &str {
    let model = model.rsplit('/').next().unwrap_or(model);
    let model = ["us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au."]
        .iter()
        .find_map(|p| model.strip_prefix(p))
        .unwrap_or(model);
    [
        "anthropic.",
        "amazon.",
        "meta.",
        "mistral.",
        "cohere.",
        "ai21.",
        "deepseek.",
        "openai.",
        "qwen.",
        "writer.",
    ]
    .iter()
    .find_map(|p| model.strip_prefix(p))
    .unwrap_or(model)
}

/// The prices of a deployment (see the module docs).
pub fn prices(d: &Deployment, file: &PriceFile) -> Prices {
    let info = &d.model_info;
    let name = info
        .extra
        .get("base_model")
        .and_then(|v| v.as_str())
        .unwrap_or(&d.upstream_model);
    let table = file
        .get(d.provider.as_str(), name)
        .or_else(|| builtin(name))
        .or_else(|| {
            PER_UNIT
                .iter()
                .find(|(m, ..)| *m == name)
                .map(|&(_, unit, price)| Prices::per(unit, price))
        })
        .unwrap_or_default();
    let input = info.input_cost_per_token.unwrap_or(table.input);
    // A deployment's own input price without a cached price of its own: no discount
    // assumed (the table's cached price belongs to the table's input price).
    let cached_input = info
        .extra
        .get("cache_read_input_token_cost")
        .and_then(serde_json::Value::as_f64)
        .filter(|p| p.is_finite() && *p >= 0.0)
        .unwrap_or(if info.input_cost_per_token.is_some() {
            input
        } else {
            table.cached_input
        });
    let own = |name: &str| {
        info.extra
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .filter(|p| p.is_finite() && *p >= 0.0)
    };
    // As the cached price: a deployment's own input price brings no markup of the table's.
    let cache_write_input =
        own("cache_creation_input_token_cost").unwrap_or(if info.input_cost_per_token.is_some() {
            input
        } else {
            table.cache_write_input
        });
    let per_query = own("input_cost_per_query").unwrap_or(table.per_query);
    let per_image = own("output_cost_per_image").unwrap_or(table.per_image);
    Prices {
        input,
        output: info.output_cost_per_token.unwrap_or(table.output),
        cached_input,
        cache_write_input,
        per_query,
        per_image,
        per_second: own("input_cost_per_second").unwrap_or(table.per_second),
        per_character: own("input_cost_per_character").unwrap_or(table.per_character),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_price_file_comes_before_the_built_in_table() {
        let file = PriceFile::parse(
            r#"{
              "sample_spec": {"max_tokens": "set to max_output_tokens if provider specifies it"},
              "gemini/gemini-2.0-flash": {"input_cost_per_token": 2e-7, "output_cost_per_token": 8e-7, "litellm_provider": "gemini"},
              "gpt-4o": {"input_cost_per_token": 5e-6, "output_cost_per_token": 2e-5, "cache_read_input_token_cost": 1e-6},
              "dall-e-3": {"output_cost_per_image": 0.04}
            }"#,
        )
        .unwrap();
        // dall-e-3 is priced per image only; sample_spec has no price.
        assert_eq!(file.len(), 3);
        let dep = |provider, model: &str| Deployment {
            provider,
            upstream_model: model.into(),
            ..Deployment::mock("d", "d")
        };
        use routeiq_proto::ProviderKind;
        let p = prices(&dep(ProviderKind::Gemini, "gemini-2.0-flash"), &file);
        assert_eq!((p.input, p.output, p.cached_input), (2e-7, 8e-7, 2e-7));
        let p = prices(&dep(ProviderKind::OpenAi, "gpt-4o"), &file);
        assert_eq!((p.input, p.output, p.cached_input), (5e-6, 2e-5, 1e-6));
        // Not in the file: the built-in table.
        let p = prices(&dep(ProviderKind::OpenAi, "gpt-4o-mini"), &file);
        assert_eq!(p.input, 0.15 * M);
        assert!(PriceFile::parse("[1, 2]").is_err());
    }

    #[test]
    fn table_lookup_prefers_the_longest_name() {
        let p = |m: &str| builtin(m).map(|p| (p.input / M, p.output / M));
        assert_eq!(p("gpt-4o"), Some((2.5, 10.0)));
        assert_eq!(p("gpt-4o-2024-08-06"), Some((2.5, 10.0)));
        assert_eq!(p("gpt-4o-mini-2024-07-18"), Some((0.15, 0.6)));
        assert_eq!(p("claude-sonnet-4-5-20250929"), Some((3.0, 15.0)));
        assert_eq!(p("claude-3-5-haiku-latest"), Some((0.8, 4.0)));
        assert_eq!(p("gpt-4o2"), None);
        assert_eq!(p("claude-3-5-sonnet@20240620"), Some((3.0, 15.0)));
        assert_eq!(p("gemini-2.5-flash-preview-09-2025"), Some((0.3, 2.5)));
        assert_eq!(p("gemini-2.5-flash-lite"), Some((0.1, 0.4)));
        assert_eq!(
            p("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            Some((3.0, 15.0))
        );
        assert_eq!(
            p("invoke/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Some((3.0, 15.0))
        );
        assert_eq!(p("amazon.nova-pro-v1:0"), Some((0.8, 3.2)));
        assert_eq!(p("command-r-plus-08-2024"), Some((2.5, 10.0)));
        assert_eq!(p("my-finetune"), None);
        let cost = builtin("gpt-4o-mini").unwrap_or_default().of(&Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cached_input_tokens: 0,
            ..Usage::default()
        });
        assert!((cost - 0.75).abs() < 1e-9, "{cost}");
        // Half the prompt from the cache: 0.5M × 0.15 + 0.5M × 0.075 + 1M × 0.60 per 1M.
        let cost = builtin("gpt-4o-mini").unwrap_or_default().of(&Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cached_input_tokens: 500_000,
            ..Usage::default()
        });
        assert!((cost - 0.7125).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn cache_writes_cost_what_the_provider_charges_for_them() {
        // Claude: 2M prompt tokens, 1M read from the cache, 0.5M written to it, 0.5M plain:
        // 0.5 × 3 + 1 × 0.30 + 0.5 × 3.75, and 1M out × 15.
        let usage = Usage {
            input_tokens: 2_000_000,
            output_tokens: 1_000_000,
            cached_input_tokens: 1_000_000,
            cache_write_input_tokens: 500_000,
            reasoning_tokens: 0,
        };
        let cost = builtin("claude-sonnet-4-5").unwrap_or_default().of(&usage);
        assert!((cost - (1.5 + 0.3 + 1.875 + 15.0)).abs() < 1e-9, "{cost}");
        // Elsewhere a write costs the input price.
        let p = builtin("gpt-4o").unwrap_or_default();
        assert_eq!(p.cache_write_input, p.input);
        // The price file's own, else its input price; a deployment's own, else its input.
        let file = PriceFile::parse(
            r#"{"claude-x": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                             "cache_creation_input_token_cost": 1.5e-6},
                "other": {"input_cost_per_token": 1e-6}}"#,
        )
        .unwrap();
        assert_eq!(
            file.get("anthropic", "claude-x").unwrap().cache_write_input,
            1.5e-6
        );
        assert_eq!(file.get("openai", "other").unwrap().cache_write_input, 1e-6);
        let mut d = Deployment {
            provider: routeiq_proto::ProviderKind::Anthropic,
            upstream_model: "claude-sonnet-4-5".into(),
            ..Deployment::mock("d", "d")
        };
        assert!((prices(&d, &PriceFile::default()).cache_write_input - 3.75 * M).abs() < 1e-15);
        d.model_info.input_cost_per_token = Some(2e-6);
        assert_eq!(prices(&d, &PriceFile::default()).cache_write_input, 2e-6);
        d.model_info.extra.insert(
            "cache_creation_input_token_cost".into(),
            serde_json::json!(4e-6),
        );
        assert_eq!(prices(&d, &PriceFile::default()).cache_write_input, 4e-6);
    }
}
