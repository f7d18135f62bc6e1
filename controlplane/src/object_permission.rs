//! LiteLLM's `object_permission` on keys, teams and organizations. RouteIQ keeps the part it
//! enforces (`mcp_servers`, `mcp_access_groups`, `mcp_tool_permissions`, `agents`,
//! `agent_access_groups`) in the row's `object_permission` column; an update merges what it
//! sets over what is stored, field by field, as LiteLLM does. Data planes get it as an
//! [`ObjectPermission`].

use std::sync::Arc;

use routeiq_proto::ObjectPermission;
use serde_json::Value;

use crate::error::StoreError;

/// The fields `given` sets, checked: the patch an update merges over the stored value
/// (`COALESCE(object_permission, '{}') || patch`).
pub fn patch(given: &Value) -> Result<Value, StoreError> {
    ObjectPermission::fields_of(given).map_err(StoreError::Invalid)
}

/// The SQL that merges the patch in parameter `$n` into the column (NULL: unchanged).
pub fn set_clause(n: usize) -> String {
    format!(
        "object_permission = CASE WHEN ${n}::jsonb IS NULL THEN object_permission
             ELSE COALESCE(object_permission, '{{}}'::jsonb) || ${n}::jsonb END"
    )
}

/// The permission data planes enforce from a stored value (`None`: none, or one that grants
/// nothing).
pub fn grant(
    stored: Option<Value>,
    what: &str,
) -> Result<Option<Arc<ObjectPermission>>, StoreError> {
    let Some(v) = stored else {
        return Ok(None);
    };
    let g = ObjectPermission::from_object_permission(&v)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
    Ok((!g.is_empty()).then(|| Arc::new(g)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_keeps_the_enforced_fields_it_sets() {
        let p = patch(&json!({
            "mcp_servers": ["a"], "mcp_access_groups": null, "vector_stores": ["v"],
            "agents": ["planner"],
        }))
        .unwrap();
        assert_eq!(p, json!({"mcp_servers": ["a"], "agents": ["planner"]}));
        assert!(matches!(
            patch(&json!({"mcp_tool_permissions": {"a": "search"}})),
            Err(StoreError::Invalid(m)) if m.contains("mcp_tool_permissions")
        ));
        assert_eq!(grant(Some(json!({"mcp_servers": []})), "k").unwrap(), None);
        assert_eq!(
            grant(Some(json!({"mcp_access_groups": ["dev"]})), "k")
                .unwrap()
                .unwrap()
                .access_groups,
            ["dev"]
        );
    }
}
