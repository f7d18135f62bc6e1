//! Which of a request's top-level parameters reach a deployment (LiteLLM's `drop_params`).
//!
//! Providers of the OpenAI-compatible family refuse some of OpenAI's parameters (Groq
//! answers 400 to `logprobs`, Mistral to any field it does not know); their rows in
//! `routeiq_proto::litellm` say which. A request that sends one of them to such a
//! deployment gets a 400 naming the parameters, unless `drop_params` is on (in the request,
//! the deployment's `litellm_params`, or `litellm_settings`), in which case they are left
//! out. A deployment's `additional_drop_params` are always left out. Some parameters are
//! renamed on the way (`seed` is Mistral's `random_seed`). Providers reached through a
//! translation (Anthropic, Gemini, Bedrock, Cohere) read only the parameters they map, so
//! this applies to the OpenAI wire format only.

use routeiq_proto::litellm::{
    compatible_row, ChatParams, ADDITIONAL_DROP_PARAMS, CUSTOM_LLM_PROVIDER, DROP_PARAMS,
    OPENAI_CHAT_PARAMS,
};
use routeiq_proto::Deployment;

use crate::error::ApiError;

/// A deployment's rules, resolved when it is compiled.
#[derive(Debug, Default)]
pub struct ParamPolicy {
    /// The provider prefix and what it takes; `None`: every parameter.
    quirks: Option<(&'static str, ChatParams)>,
    renames: &'static [(&'static str, &'static str)],
    /// `drop_params` set on the deployment (or for every deployment).
    drop: bool,
    /// `additional_drop_params`.
    always: Box<[Box<str>]>,
}

/// What to change in one request for one deployment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edit<'a> {
    pub omit: Vec<&'a str>,
    pub renames: &'static [(&'static str, &'static str)],
}

impl Edit<'_> {
    pub fn is_empty(&self) -> bool {
        self.omit.is_empty() && self.renames.is_empty()
    }
}

impl ParamPolicy {
    pub fn of(d: &Deployment) -> Self {
        let row = d
            .settings
            .param(CUSTOM_LLM_PROVIDER)
            .and_then(compatible_row);
        Self {
            quirks: row
                .filter(|r| r.params != ChatParams::All)
                .map(|r| (r.prefix, r.params)),
            renames: row.map_or(&[], |r| r.renames),
            drop: d.settings.param(DROP_PARAMS) == Some("true"),
            always: d
                .settings
                .param(ADDITIONAL_DROP_PARAMS)
                .map(|names| names.split(',').map(Box::from).collect())
                .unwrap_or_default(),
        }
    }

    /// The fields of `fields` (a request's top-level names) to leave out, and the renames;
    /// a 400 for parameters the provider refuses unless they may be dropped
    /// (`drop_requested`: the request's own `drop_params`).
    pub fn edit<'a>(
        &self,
        fields: impl Iterator<Item = &'a str>,
        model_group: &str,
        drop_requested: bool,
    ) -> Result<Edit<'a>, ApiError> {
        let mut edit = Edit {
            omit: Vec::new(),
            renames: self.renames,
        };
        if self.quirks.is_none() && self.always.is_empty() {
            return Ok(edit);
        }
        let mut refused: Vec<&'static str> = Vec::new();
        for field in fields {
            if self.always.iter().any(|a| &**a == field) {
                edit.omit.push(field);
                continue;
            }
            let Some((_, params)) = self.quirks else {
                continue;
            };
            if params.takes(field) {
                continue;
            }
            edit.omit.push(field);
            // The gateway asks for streamed usage itself; a provider without the
            // parameter is simply not asked.
            if field != "stream_options" {
                refused.extend(OPENAI_CHAT_PARAMS.iter().find(|p| **p == field));
            }
        }
        if refused.is_empty() || self.drop || drop_requested {
            return Ok(edit);
        }
        let provider = self.quirks.map_or("", |(p, _)| p);
        let first = refused[0];
        Err(ApiError::bad_request(format!(
            "`{provider}` does not support the parameter{s} {list} (model group `{model_group}`). \
             To leave unsupported parameters out, set `drop_params: true` in the request, in the \
             deployment's `litellm_params`, or in `litellm_settings`",
            s = if refused.len() == 1 { "" } else { "s" },
            list = refused
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
        ))
        .with_param(first)
        .with_code("unsupported_params"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::ProviderKind;

    fn deployment(params: &[(&str, &str)]) -> Deployment {
        let mut d = Deployment::mock("d", "g");
        d.provider = ProviderKind::OpenAi;
        for (k, v) in params {
            d.settings.params.insert((*k).into(), (*v).into());
        }
        d
    }

    #[test]
    fn refused_parameters_fail_unless_dropped() {
        let groq = ParamPolicy::of(&deployment(&[("custom_llm_provider", "groq")]));
        let fields = ["model", "messages", "logprobs", "temperature", "top_k"];
        let e = groq.edit(fields.into_iter(), "g", false).unwrap_err();
        assert_eq!((e.status, e.param), (400, Some("logprobs")));
        assert!(e
            .message
            .contains("`groq` does not support the parameter `logprobs`"));
        assert!(e.message.contains("drop_params"));
        let edit = groq.edit(fields.into_iter(), "g", true).unwrap();
        assert_eq!(edit.omit, ["logprobs"]);

        let dropping = ParamPolicy::of(&deployment(&[
            ("custom_llm_provider", "groq"),
            ("drop_params", "true"),
        ]));
        assert_eq!(
            dropping.edit(fields.into_iter(), "g", false).unwrap().omit,
            ["logprobs"]
        );
    }

    #[test]
    fn renames_additional_drops_and_stream_options() {
        let mistral = ParamPolicy::of(&deployment(&[
            ("custom_llm_provider", "mistral"),
            ("additional_drop_params", "safe_prompt,temperature"),
        ]));
        let fields = [
            "model",
            "seed",
            "temperature",
            "safe_prompt",
            "stream_options",
        ];
        let edit = mistral.edit(fields.into_iter(), "g", false).unwrap();
        assert_eq!(edit.omit, ["temperature", "safe_prompt", "stream_options"]);
        assert!(edit.renames.contains(&("seed", "random_seed")));

        let openai = ParamPolicy::of(&deployment(&[]));
        let edit = openai
            .edit(["logprobs", "user"].into_iter(), "g", false)
            .unwrap();
        assert!(edit.is_empty());
    }
}
