//! `os.environ/NAME` references, LiteLLM's way of keeping secrets out of config files.

use std::collections::HashMap;

use serde_norway::Value;

const PREFIX: &str = "os.environ/";

pub struct MissingEnv {
    pub at: String,
    pub var: String,
}

/// LiteLLM's `environment_variables:` section: values that act as if they were set in the
/// environment.
pub fn environment_variables_section(root: &Value) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(Value::Mapping(vars)) = root.get("environment_variables") {
        for (k, v) in vars {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            if let Value::String(k) = k {
                out.insert(k.clone(), value);
            }
        }
    }
    out
}

/// Replaces every `os.environ/NAME` string in the tree with the variable's value.
pub fn resolve(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), MissingEnv> {
    walk(value, &mut String::new(), lookup)
}

fn walk(
    value: &mut Value,
    at: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), MissingEnv> {
    match value {
        Value::String(s) => {
            if let Some(var) = s.strip_prefix(PREFIX) {
                let var = var.trim();
                match lookup(var) {
                    Some(v) => *s = v,
                    None => {
                        return Err(MissingEnv {
                            at: at.clone(),
                            var: var.to_owned(),
                        })
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                walk(item, at, lookup)?;
                at.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = at.len();
                if !at.is_empty() {
                    at.push('.');
                }
                match k {
                    Value::String(k) => at.push_str(k),
                    other => at.push_str(&format!("{other:?}")),
                }
                walk(v, at, lookup)?;
                at.truncate(len);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, at, lookup)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}
