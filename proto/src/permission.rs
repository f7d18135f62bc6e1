//! LiteLLM's `object_permission` on keys, teams and organizations: which MCP servers (and
//! tools) and which A2A agents they may use. Servers are named by name (RouteIQ's
//! `server_id`); agents by id or name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{A2aAgent, McpServer};

/// The fields of `object_permission` RouteIQ enforces; the others (`vector_stores`, ...)
/// are ignored.
const FIELDS: [&str; 5] = [
    "mcp_servers",
    "mcp_access_groups",
    "mcp_tool_permissions",
    "agents",
    "agent_access_groups",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectPermission {
    /// `mcp_servers`.
    #[serde(default, rename = "mcp_servers")]
    pub servers: Vec<String>,
    /// `mcp_access_groups`: every server in one of these groups.
    #[serde(default, rename = "mcp_access_groups")]
    pub access_groups: Vec<String>,
    /// `mcp_tool_permissions`: per server, the only tools that may be called. A server named
    /// here is granted too.
    #[serde(default, rename = "mcp_tool_permissions")]
    pub tools: BTreeMap<String, Vec<String>>,
    /// `agents`: agents by id or name.
    #[serde(default)]
    pub agents: Vec<String>,
    /// `agent_access_groups`: every agent in one of these groups.
    #[serde(default)]
    pub agent_access_groups: Vec<String>,
}

impl ObjectPermission {
    /// The enforced part of an `object_permission` object. `Err` names what is wrong.
    pub fn from_object_permission(v: &serde_json::Value) -> Result<Self, String> {
        Self::read(v).map(|(permission, _)| permission)
    }

    /// The enforced fields an `object_permission` object sets (present and not null),
    /// checked, as an object: what an update merges over the stored ones.
    pub fn fields_of(v: &serde_json::Value) -> Result<serde_json::Value, String> {
        Self::read(v).map(|(_, fields)| fields)
    }

    /// The permission and the object of the fields it was read from.
    fn read(v: &serde_json::Value) -> Result<(Self, serde_json::Value), String> {
        let serde_json::Value::Object(o) = v else {
            return Err("object_permission must be a JSON object".into());
        };
        let fields: serde_json::Map<_, _> = o
            .iter()
            .filter(|(k, v)| FIELDS.contains(&k.as_str()) && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let fields = serde_json::Value::Object(fields);
        let permission = serde_path_to_error::deserialize(&fields)
            .map_err(|e| format!("object_permission.{}: {}", e.path(), e.inner()))?;
        Ok((permission, fields))
    }

    /// Grants nothing, so it restricts nothing either.
    pub fn is_empty(&self) -> bool {
        !self.restricts_mcp() && !self.restricts_agents()
    }

    /// Whether it has an MCP part (a key without one inherits its team's).
    pub fn restricts_mcp(&self) -> bool {
        !(self.servers.is_empty() && self.access_groups.is_empty() && self.tools.is_empty())
    }

    /// Whether it has an agent part (a key without one inherits its team's).
    pub fn restricts_agents(&self) -> bool {
        !(self.agents.is_empty() && self.agent_access_groups.is_empty())
    }

    /// Whether it names `server` (by id), directly, through a group or through its tools.
    pub fn names_server(&self, server: &McpServer) -> bool {
        let id = server.name.as_str();
        self.servers.iter().any(|s| s == id)
            || self.tools.contains_key(id)
            || server
                .access_groups
                .iter()
                .any(|g| self.access_groups.contains(g))
    }

    /// The tools it lets be called on `server` (`None`: all the server exposes).
    pub fn tools_of(&self, server: &str) -> Option<&[String]> {
        self.tools.get(server).map(Vec::as_slice)
    }

    /// Whether it names `agent`, by id, by name or through one of its groups.
    pub fn names_agent(&self, agent: &A2aAgent) -> bool {
        self.agents
            .iter()
            .any(|a| *a == agent.id || *a == agent.name)
            || agent
                .access_groups
                .iter()
                .any(|g| self.agent_access_groups.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_object_permission() {
        let p = ObjectPermission::from_object_permission(&serde_json::json!({
            "mcp_servers": ["github"],
            "mcp_access_groups": null,
            "mcp_tool_permissions": {"docs": ["search"]},
            "vector_stores": ["vs-1"],
            "agent_access_groups": ["support"],
        }))
        .unwrap();
        assert_eq!(p.servers, ["github"]);
        assert!(p.access_groups.is_empty());
        assert_eq!(p.tools_of("docs"), Some(&["search".to_owned()][..]));
        assert!(p.restricts_mcp() && p.restricts_agents());
        let docs = McpServer {
            name: "docs".into(),
            ..McpServer::default()
        };
        assert!(
            p.names_server(&docs),
            "a server with tool permissions is granted"
        );
        let dev = McpServer {
            name: "dev".into(),
            access_groups: vec!["dev".into()],
            ..McpServer::default()
        };
        assert!(!p.names_server(&dev));
        assert!(ObjectPermission::from_object_permission(
            &serde_json::json!({"mcp_access_groups": ["dev"]})
        )
        .unwrap()
        .names_server(&dev));
        let only_vectors =
            ObjectPermission::from_object_permission(&serde_json::json!({"vector_stores": []}))
                .unwrap();
        assert!(only_vectors.is_empty());
        let bad =
            ObjectPermission::from_object_permission(&serde_json::json!({"mcp_servers": "github"}));
        assert!(bad.unwrap_err().contains("mcp_servers"), "names the field");
        let bad = ObjectPermission::from_object_permission(&serde_json::json!({"agents": [1]}));
        assert!(bad.unwrap_err().contains("agents"), "names the field");
        assert!(ObjectPermission::from_object_permission(&serde_json::json!([])).is_err());
    }

    #[test]
    fn agents_by_id_name_or_group() {
        let agent = A2aAgent {
            id: "a-1".into(),
            name: "planner".into(),
            access_groups: vec!["support".into()],
            ..A2aAgent::default()
        };
        let by = |v: serde_json::Value| {
            ObjectPermission::from_object_permission(&v)
                .unwrap()
                .names_agent(&agent)
        };
        assert!(by(serde_json::json!({"agents": ["a-1"]})));
        assert!(by(serde_json::json!({"agents": ["planner"]})));
        assert!(by(serde_json::json!({"agent_access_groups": ["support"]})));
        assert!(!by(
            serde_json::json!({"agents": ["other"], "agent_access_groups": ["sales"]})
        ));
        let mcp_only =
            ObjectPermission::from_object_permission(&serde_json::json!({"mcp_servers": ["x"]}))
                .unwrap();
        assert!(!mcp_only.restricts_agents() && mcp_only.restricts_mcp());
    }
}
