//! Which MCP servers and tools a caller may use (LiteLLM's `object_permission`).
//!
//! The master key (and an open gateway) may use every server. A virtual key may use:
//! - the servers its own grant names, if it has one, within its team's grant if the team
//!   has one too (their intersection); else its team's;
//! - within its organization's grant, if the organization has one (or, when neither key nor
//!   team has a grant, the organization's servers);
//! - and every server marked `allow_all_keys`.
//!
//! A grant names servers by name, by access group, or by listing tools for them
//! (`mcp_tool_permissions`); with no grant anywhere a key may use no server. On a server it
//! may use, a key calls the tools the server's configuration exposes and that every
//! grant listing tools for that server lists (key, team and organization).

use routeiq_proto::{McpGrant, ScopeKind, VirtualKey};

use super::client::Server;
use crate::state::LiveState;

/// What one caller may use, borrowed from the served state for one request.
#[derive(Clone, Copy)]
pub(crate) struct Access<'a> {
    /// `None`: the master key, everything.
    grants: Option<Grants<'a>>,
}

#[derive(Clone, Copy)]
struct Grants<'a> {
    key: Option<&'a McpGrant>,
    team: Option<&'a McpGrant>,
    org: Option<&'a McpGrant>,
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
                .and_then(|e| e.scope.mcp.as_deref())
        };
        Self {
            grants: Some(Grants {
                key: key.mcp.as_deref(),
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
        if s.allow_all_keys {
            return true;
        }
        let names = |grant: Option<&McpGrant>| grant.map(|g| g.names(s));
        let below = match (names(g.key), names(g.team)) {
            (Some(k), Some(t)) => Some(k && t),
            (k, t) => k.or(t),
        };
        match (below, names(g.org)) {
            (Some(b), Some(o)) => b && o,
            (b, o) => b.or(o).unwrap_or(false),
        }
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

    fn grant(servers: &[&str], groups: &[&str], tools: &[(&str, &[&str])]) -> McpGrant {
        McpGrant {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            access_groups: groups.iter().map(|s| s.to_string()).collect(),
            tools: tools
                .iter()
                .map(|(s, t)| (s.to_string(), t.iter().map(|t| t.to_string()).collect()))
                .collect(),
        }
    }

    fn access<'a>(
        key: Option<&'a McpGrant>,
        team: Option<&'a McpGrant>,
        org: Option<&'a McpGrant>,
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
}
