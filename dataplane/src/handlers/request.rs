//! A client's JSON request body, parsed one level deep.
//!
//! The top-level fields are kept as raw JSON text: the gateway reads the few it needs
//! (`model`, `stream`, ...) and, when the body goes upstream in the same wire format,
//! rewrites only those and writes the rest back byte for byte. Building a full
//! `serde_json::Value` tree of the messages and serialising it again cost more than all the
//! other request work together (see docs/benchmarks.md). Translation between wire formats
//! asks for the full tree with [`RawObject::into_map`].

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::params::Edit;

#[derive(Clone, Default)]
pub struct RawObject(BTreeMap<String, Box<RawValue>>);

impl RawObject {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "request body is empty; expected a JSON object",
            ));
        }
        match serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(body) {
            Ok(m) => Ok(Self(m)),
            Err(e) => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
                Err(_) => Err(ApiError::bad_request(format!(
                    "request body is not valid JSON: {e}"
                ))),
            },
        }
    }

    /// Every field's name and raw text, sorted by name.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.get()))
    }

    /// The raw text of a field; `None` when absent or `null`.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.json(key).map(RawValue::get)
    }

    /// A field's JSON as it came, to write out again as it is; `None` when absent or `null`.
    pub fn json(&self, key: &str) -> Option<&RawValue> {
        self.0
            .get(key)
            .map(Box::as_ref)
            .filter(|v| v.get() != "null")
    }

    /// The `model` field: present and a non-empty string.
    pub fn model(&self) -> Result<String, ApiError> {
        let Some(raw) = self.raw("model") else {
            return Err(ApiError::missing_field("model"));
        };
        match serde_json::from_str::<String>(raw) {
            Ok(m) if !m.is_empty() => Ok(m),
            _ => {
                Err(ApiError::bad_request("`model` must be a non-empty string").with_param("model"))
            }
        }
    }

    /// A boolean field; absent or `null` is `false`.
    pub fn flag(&self, key: &'static str) -> Result<bool, ApiError> {
        match self.raw(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => {
                Err(ApiError::bad_request(format!("`{key}` must be a boolean")).with_param(key))
            }
        }
    }

    /// Whether a field holds a JSON array (non-empty when `non_empty`).
    pub fn is_array(&self, key: &str, non_empty: bool) -> bool {
        self.raw(key)
            .is_some_and(|r| r.starts_with('[') && (!non_empty || r[1..].trim_start() != "]"))
    }

    /// Whether a field holds a JSON string.
    pub fn is_string(&self, key: &str) -> bool {
        self.raw(key).is_some_and(|r| r.starts_with('"'))
    }

    /// A field parsed in full.
    pub fn value(&self, key: &str) -> Option<Value> {
        self.raw(key).and_then(|r| serde_json::from_str(r).ok())
    }

    /// Replaces (or adds) a field.
    pub fn set(&mut self, key: &str, value: &impl Serialize) -> Result<(), ApiError> {
        let raw = serde_json::value::to_raw_value(value)
            .map_err(|e| ApiError::internal(format!("cannot encode `{key}`: {e}")))?;
        self.0.insert(key.to_owned(), raw);
        Ok(())
    }

    /// Removes a field, returning its raw text.
    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        self.0.remove(key)
    }

    /// The top-level field names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The body as JSON bytes with one field replaced (or added); `self` is unchanged, so
    /// each attempt of a retried request starts from the client's body.
    pub fn with(&self, key: &str, value: &impl Serialize) -> Result<Bytes, ApiError> {
        self.with_edit(key, value, &Edit::default())
    }

    /// [`Self::with`], leaving out and renaming the fields `edit` names (a deployment's
    /// parameter rules, see `params`). A rename does not replace a field the body has.
    pub fn with_edit(
        &self,
        key: &str,
        value: &impl Serialize,
        edit: &Edit<'_>,
    ) -> Result<Bytes, ApiError> {
        let raw = serde_json::value::to_raw_value(value)
            .map_err(|e| ApiError::internal(format!("cannot encode `{key}`: {e}")))?;
        let mut fields: BTreeMap<&str, &RawValue> = self
            .0
            .iter()
            .filter(|(k, _)| !edit.omit.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        for (from, to) in edit.renames {
            if !self.0.contains_key(*to) {
                if let Some(v) = fields.remove(from) {
                    fields.insert(to, v);
                }
            }
        }
        fields.insert(key, &raw);
        Ok(Bytes::from(serde_json::to_vec(&fields).unwrap_or_default()))
    }

    /// The full `serde_json` tree, for translation into another wire format.
    pub fn to_map(&self) -> Result<Map<String, Value>, ApiError> {
        self.0
            .iter()
            .map(|(k, v)| {
                serde_json::from_str(v.get())
                    .map(|v| (k.clone(), v))
                    .map_err(|e| ApiError::bad_request(format!("request body: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_round_trips_untouched_ones() {
        let body = br#"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"h\u00e9"}],"x":null}"#;
        let mut o = RawObject::parse(body).unwrap();
        assert_eq!(o.model().unwrap(), "gpt");
        assert!(o.flag("stream").unwrap());
        assert!(!o.flag("x").unwrap());
        assert!(o.is_array("messages", true));
        let out: Value = serde_json::from_slice(&o.with("model", &"upstream-1").unwrap()).unwrap();
        assert_eq!(out["model"], "upstream-1");
        assert_eq!(out["messages"][0]["content"], "hé");
        o.set("model", &"upstream-2").unwrap();
        assert_eq!(o.to_map().unwrap()["model"], "upstream-2");
    }

    #[test]
    fn bad_bodies_get_clear_errors() {
        let msg = |b: &[u8]| RawObject::parse(b).err().unwrap().message;
        assert!(msg(b"  ").contains("empty"));
        assert!(msg(b"[1,2]").contains("must be a JSON object"));
        assert!(msg(b"{\"model\":").contains("not valid JSON"));
        let o = RawObject::parse(br#"{"model":5,"stream":"yes","m":[ ]}"#).unwrap();
        assert_eq!(o.model().err().unwrap().param, Some("model"));
        assert_eq!(o.flag("stream").err().unwrap().param, Some("stream"));
        assert!(o.is_array("m", false) && !o.is_array("m", true));
    }
}
