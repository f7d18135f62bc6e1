//! Which MCP servers, tools and A2A agents a caller may use (LiteLLM's `object_permission`
//! on keys, teams and organizations).
//!
//! The master key (and an open gateway) may use everything. For a virtual key, MCP servers
//! and agents are decided alike, each by its own part of the permissions (a permission
//! without an MCP part does not restrict servers, one without an agent part not agents):
//! - what its own permission names, if it has one, within its team's if the team has one
//!   too (their intersection); else its team's;
//! - within its organization's, if the organization has one (or, when neither key nor team
//!   has one, the organization's).
//!
//! Where nothing restricts a key:
//! - it may use no MCP server but those marked `allow_all_keys` (which every key may use,
//!   whatever its permissions);
//! - it may call every agent, as in LiteLLM; with `general_settings.agent_access_default_deny`
//!   only the agents marked `make_public`.
//!
//! A permission names servers by name, by access group, or by listing tools for them
//! (`mcp_tool_permissions`), and agents by id, by name or by access group. On a server it
//! may use, a key calls the tools the server's configuration exposes and that every
//! permission listing tools for that server lists (key, team and organization).

use routeiq_proto::{A2aAgent, ObjectPermission, ScopeKind, VirtualKey};

use crate::mcp::client::Server;
use crate::state::LiveState;

/// What one caller may use, borrowed from the served state for one request.
#[derive(Clone, Copy)]
pub(crate) struct Access<'a> {
    /// `None`: the master key, everything.
    grants: Option<Grants<'a>>,
}

#[derive(Clone, Copy)]
struct Grants<'a> {
    key: Option<&'a ObjectPermission>,
    team: Option<&'a ObjectPermission>,
    org: Option<&'a ObjectPermission>,
}

impl Grants<'_> {
    /// What the permissions that restrict (`restricts`) say of one object (`names`): `None`
    /// when none restricts it.
    fn decide(
        &self,
        restricts: impl Fn(&ObjectPermission) -> bool,
        names: impl Fn(&ObjectPermission) -> bool,
    ) -> Option<bool> {
        let says = |p: Option<&ObjectPermission>| p.filter(|p| restricts(p)).map(&names);
        let below = match (says(self.key), says(self.team)) {
            (Some(k), Some(t)) => Some(k && t),
            (k, t) => k.or(t),
        };
        match (below, says(self.org)) {
            (Some(b), Some(o)) => Some(b && o),
            (b, o) => b.or(o),
        }
    }
}

impl<'a> Access<'a> {
    /// Everything: the master key, or a gateway without one.
    pub fn all() -> Self {
        Self { grants: None }
    }

    /// `key`'s (`None`: the master key's).
    pub fn of(live: &'a LiveState, key: Option<&'a VirtualKey>) -> Self {
        let Some(key) = key else {
            return Self::all();
        };
        let scope = |kind, id: &str| {
            if id.is_empty() {
                return None;
            }
            live.scopes()
                .get(kind, id)
                .and_then(|e| e.scope.permission.as_deref())
        };
        Self {
            grants: Some(Grants {
                key: key.permission.as_deref(),
                team: scope(ScopeKind::Team, &key.team_id),
                org: scope(ScopeKind::Organization, &key.organization_id),
            }),
        }
    }

    /// Whether the caller may use `server` at all.
    pub fn server(&self, server: &Server) -> bool {
        let Some(g) = &self.grants else {
            return true;
        };
        let s = &server.config;
        s.allow_all_keys
            || g.decide(ObjectPermission::restricts_mcp, |p| p.names_server(s))
                .unwrap_or(false)
    }

    /// Whether the caller may call `agent`; `default_deny`:
    /// `general_settings.agent_access_default_deny`.
    pub fn agent(&self, agent: &A2aAgent, default_deny: bool) -> bool {
        let Some(g) = &self.grants else {
            return true;
        };
        g.decide(ObjectPermission::restricts_agents, |p| p.names_agent(agent))
            .unwrap_or(agent.public || !default_deny)
    }

    /// Whether the caller may call `tool` on `server` (one it may use): the server exposes
    /// it and no grant's tool list for the server leaves it out.
    pub fn tool(&self, server: &Server, tool: &str) -> bool {
        if !server.config.exposes(tool) {
            return false;
        }
        let Some(g) = &self.grants else {
            return true;
        };
        [g.key, g.team, g.org].into_iter().flatten().all(|grant| {
            grant
                .tools_of(&server.config.name)
                .is_none_or(|tools| tools.iter().any(|t| t == tool))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::McpServer;
    use serde_json::json;

    fn server(name: &str, groups: &[&str], all_keys: bool) -> Server {
        Server::compile(McpServer {
            name: name.into(),
            url: "http://127.0.0.1:1/mcp".into(),
            disallowed_tools: vec!["rm".into()],
            access_groups: groups.iter().map(|g| g.to_string()).collect(),
            allow_all_keys: all_keys,
            ..McpServer::default()
        })
        .unwrap()
    }

    fn grant(servers: &[&str], groups: &[&str], tools: &[(&str, &[&str])]) -> ObjectPermission {
        ObjectPermission {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            access_groups: groups.iter().map(|s| s.to_string()).collect(),
            tools: tools
                .iter()
                .map(|(s, t)| (s.to_string(), t.iter().map(|t| t.to_string()).collect()))
                .collect(),
            ..ObjectPermission::default()
        }
    }

    fn permission(v: serde_json::Value) -> ObjectPermission {
        ObjectPermission::from_object_permission(&v).unwrap()
    }

    fn access<'a>(
        key: Option<&'a ObjectPermission>,
        team: Option<&'a ObjectPermission>,
        org: Option<&'a ObjectPermission>,
    ) -> Access<'a> {
        Access {
            grants: Some(Grants { key, team, org }),
        }
    }

    #[test]
    fn servers_key_within_team_within_org() {
        let (a, b, c) = (
            server("a", &[], false),
            server("b", &["dev"], false),
            server("c", &[], false),
        );
        let open = server("open", &[], true);
        let may = |acc: Access, s: &Server| acc.server(s);

        // No grant anywhere: nothing but the servers open to all keys.
        let none = access(None, None, None);
        assert!(!may(none, &a) && may(none, &open));
        assert!(may(Access::all(), &a), "the master key may use everything");

        let key = grant(&["a"], &["dev"], &[]);
        let team = grant(&["a", "c"], &[], &[]);
        // The key's alone; the team's alone (inherited); both: their intersection.
        assert!(may(access(Some(&key), None, None), &b));
        assert!(!may(access(Some(&key), None, None), &c));
        assert!(may(access(None, Some(&team), None), &c));
        let both = access(Some(&key), Some(&team), None);
        assert!(may(both, &a) && !may(both, &b) && !may(both, &c));

        // The organization caps what is below it, and stands in when nothing is.
        let org = grant(&["c"], &[], &[]);
        assert!(!may(access(Some(&key), Some(&team), Some(&org)), &a));
        assert!(may(access(None, Some(&team), Some(&org)), &c));
        assert!(may(access(None, None, Some(&org)), &c));
        assert!(!may(access(None, None, Some(&org)), &a));

        // Tool permissions name their server.
        let by_tools = grant(&[], &[], &[("c", &["search"])]);
        assert!(may(access(Some(&by_tools), None, None), &c));
    }

    #[test]
    fn tools_every_list_and_the_server_filter() {
        let s = server("a", &[], false);
        let key = grant(&["a"], &[], &[("a", &["search", "fetch", "rm"])]);
        let team = grant(&[], &[], &[("a", &["search", "rm"])]);
        let acc = access(Some(&key), Some(&team), None);
        assert!(acc.tool(&s, "search"));
        assert!(!acc.tool(&s, "fetch"), "the team's list leaves it out");
        assert!(!acc.tool(&s, "rm"), "the server's configuration hides it");
        let only_server = access(Some(&key), None, None);
        assert!(only_server.tool(&s, "fetch"));
        let unlisted = grant(&["a"], &[], &[]);
        assert!(access(Some(&unlisted), None, None).tool(&s, "anything"));
        assert!(!Access::all().tool(&s, "rm"));
    }

    #[test]
    fn agents_key_within_team_within_org_else_the_default() {
        let agent = |id: &str, groups: &[&str], public: bool| A2aAgent {
            id: id.into(),
            name: format!("{id}-name"),
            access_groups: groups.iter().map(|g| g.to_string()).collect(),
            public,
            ..A2aAgent::default()
        };
        let (a, b, open) = (
            agent("a", &[], false),
            agent("b", &["support"], false),
            agent("open", &[], true),
        );
        // Nothing restricts agents: every agent (LiteLLM), or only public ones by default deny.
        let mcp_only = permission(json!({"mcp_servers": ["s"]}));
        for acc in [
            access(None, None, None),
            access(Some(&mcp_only), None, None),
        ] {
            assert!(acc.agent(&a, false) && acc.agent(&open, false));
            assert!(!acc.agent(&a, true) && acc.agent(&open, true));
        }
        assert!(
            Access::all().agent(&a, true),
            "the master key may call every agent"
        );
        // By id, by name, by group; a restricted key reaches no other, public or not.
        let key = permission(json!({"agents": ["a"], "agent_access_groups": ["support"]}));
        let by_name = permission(json!({"agents": ["a-name"]}));
        assert!(access(Some(&by_name), None, None).agent(&a, true));
        let k = access(Some(&key), None, None);
        assert!(k.agent(&a, true) && k.agent(&b, true) && !k.agent(&open, false));
        // Key within team: the intersection; a key without an agent part takes the team's.
        let team = permission(json!({"agents": ["b"]}));
        let kt = access(Some(&key), Some(&team), None);
        assert!(!kt.agent(&a, false) && kt.agent(&b, false));
        let t = access(Some(&mcp_only), Some(&team), None);
        assert!(!t.agent(&a, false) && t.agent(&b, false));
        // Disjoint key and team: nothing (not everything).
        let only_a = permission(json!({"agents": ["a"]}));
        let disjoint = access(Some(&only_a), Some(&team), None);
        assert!(
            !disjoint.agent(&a, false)
                && !disjoint.agent(&b, false)
                && !disjoint.agent(&open, false)
        );
        // The organization bounds both; alone, it decides.
        let org = permission(json!({"agents": ["a"]}));
        assert!(!access(Some(&key), None, Some(&org)).agent(&b, false));
        assert!(access(None, None, Some(&org)).agent(&a, true));
        assert!(!access(None, None, Some(&org)).agent(&b, false));
    }
}
