//! The OpenAPI document: every route registered through [`router`] is in it, with the
//! roles it needs and every error it can answer.

use std::sync::Arc;

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Spec, RefOr, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::SCHEME;
use crate::error::ErrorBody;
use crate::routes::{
    audit, budgets, credentials, health, keys, models, orgs, routing_models, spend, teams, users,
};
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RouteIQ admin API",
        description = "LiteLLM-compatible management API of the RouteIQ gateway: virtual keys, \
teams, users, organizations, models, credentials, budgets, spend and the audit log.\n\n\
Authenticate with `Authorization: Bearer <key>`: the master key, or a virtual key whose user \
has a role. Each operation's security requirement lists the roles that may call it: \
`proxy_admin`, `proxy_admin_viewer`, `internal_user`, `internal_user_viewer`, and \
`team_admin` (an admin of at least one team). Errors are OpenAI-shaped: \
`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`."
    ),
    tags(
        (name = "keys", description = "Virtual keys"),
        (name = "teams", description = "Teams and their members"),
        (name = "users", description = "Internal users"),
        (name = "organizations", description = "Organizations"),
        (name = "models", description = "Model deployments"),
        (name = "credentials", description = "Provider credentials"),
        (name = "budgets", description = "Reusable budgets"),
        (name = "spend", description = "Spend logs and reports"),
        (name = "audit", description = "Who changed what"),
        (name = "routing models", description = "Versions of the learned routers' models"),
        (name = "health", description = "Liveness and readiness"),
    ),
    components(schemas(ErrorBody, spend::GroupBy, users::UserRole))
)]
struct ApiDoc;

/// Every route, with its spec.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(keys::generate))
        .routes(routes!(keys::info))
        .routes(routes!(keys::update))
        .routes(routes!(keys::delete))
        .routes(routes!(keys::list))
        .routes(routes!(keys::regenerate))
        .routes(routes!(keys::block))
        .routes(routes!(keys::unblock))
        .routes(routes!(teams::new))
        .routes(routes!(teams::info))
        .routes(routes!(teams::update))
        .routes(routes!(teams::delete))
        .routes(routes!(teams::list))
        .routes(routes!(teams::member_add))
        .routes(routes!(teams::member_delete))
        .routes(routes!(users::new))
        .routes(routes!(users::info))
        .routes(routes!(users::update))
        .routes(routes!(users::delete))
        .routes(routes!(users::list))
        .routes(routes!(orgs::new))
        .routes(routes!(orgs::info))
        .routes(routes!(orgs::list))
        .routes(routes!(orgs::update))
        .routes(routes!(orgs::delete))
        .routes(routes!(models::new))
        .routes(routes!(models::update))
        .routes(routes!(models::delete))
        .routes(routes!(models::info))
        .routes(routes!(models::info_v1))
        .routes(routes!(credentials::create, credentials::list))
        .routes(routes!(credentials::get))
        .routes(routes!(credentials::update, credentials::delete))
        .routes(routes!(budgets::new))
        .routes(routes!(budgets::update))
        .routes(routes!(budgets::info))
        .routes(routes!(budgets::list))
        .routes(routes!(budgets::delete))
        .routes(routes!(spend::logs))
        .routes(routes!(spend::global))
        .routes(routes!(spend::report))
        .routes(routes!(spend::keys))
        .routes(routes!(spend::teams))
        .routes(routes!(spend::models))
        .routes(routes!(audit::list))
        .routes(routes!(routing_models::new))
        .routes(routes!(routing_models::activate))
        .routes(routes!(routing_models::list))
        .routes(routes!(health::liveliness))
        .routes(routes!(health::readiness))
}

/// The errors each kind of route can answer, beyond its own responses.
fn errors(secured: bool, has_input: bool) -> Vec<(u16, &'static str)> {
    let mut out = Vec::new();
    if has_input {
        out.push((400, "Invalid input: unreadable, or a value out of range"));
        out.push((
            422,
            "The body or a query parameter has the wrong shape or type",
        ));
    }
    if secured {
        out.push((401, "No key, or an unknown, blocked or expired key"));
        out.push((403, "The key's role may not do this, or not to this object"));
        out.push((404, "The object does not exist"));
        out.push((
            409,
            "Conflicts with the current state (duplicate, still referenced)",
        ));
    }
    out.push((
        503,
        "The control plane is unreachable or its database is down",
    ));
    out
}

fn document_errors(op: &mut Operation) {
    let secured = op.security.is_some();
    let has_input =
        op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    for (status, description) in errors(secured, has_input) {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                let mut r = Response::new(description);
                r.content.insert(
                    "application/json".into(),
                    RefOr::T(Content::new(Some(RefOr::Ref(
                        utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                    )))),
                );
                RefOr::T(r)
            });
    }
}

/// The finished document, without serving it.
pub fn spec() -> Spec {
    finish(router().split_for_parts().1)
}

/// Adds the security scheme and the documented errors of every operation.
pub fn finish(mut spec: Spec) -> Spec {
    for item in spec.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            document_errors(op);
        }
    }
    let components = spec.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The master key or a virtual key (also accepted in `x-litellm-api-key` \
                     or `api-key`).",
                ))
                .build(),
        ),
    );
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{
        INTERNAL_USER, INTERNAL_USER_VIEWER, PROXY_ADMIN, PROXY_ADMIN_VIEWER, TEAM_ADMIN,
    };

    #[test]
    fn every_route_but_health_names_known_roles_and_documents_its_errors() {
        let spec = spec();
        let json = serde_json::to_value(&spec).unwrap_or_default();
        let known = [
            PROXY_ADMIN,
            PROXY_ADMIN_VIEWER,
            INTERNAL_USER,
            INTERNAL_USER_VIEWER,
            TEAM_ADMIN,
        ];
        let mut operations = 0;
        for (path, item) in json["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                operations += 1;
                let roles: Vec<&str> = op["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r[SCHEME].as_array().into_iter().flatten())
                    .filter_map(|r| r.as_str())
                    .collect();
                if path.starts_with("/health/") {
                    assert!(op.get("security").is_none(), "{method} {path}");
                    continue;
                }
                assert!(!roles.is_empty(), "{method} {path} names no role");
                assert!(roles.contains(&PROXY_ADMIN), "{method} {path}");
                assert!(roles.iter().all(|r| known.contains(r)), "{method} {path}");
                for status in ["401", "403", "503"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
        assert!(operations >= 49, "{operations}");
        // The access table enforced at runtime is the spec's.
        let access = crate::auth::Access::from_spec(&spec);
        use axum::http::Method;
        assert_eq!(
            access.roles(&Method::POST, "/team/new"),
            Ok(Some(&[PROXY_ADMIN.to_owned()][..]))
        );
        assert_eq!(access.roles(&Method::GET, "/health/liveliness"), Ok(None));
        // HEAD is a GET; a method the spec does not list is refused.
        assert_eq!(
            access.roles(&Method::HEAD, "/audit"),
            access.roles(&Method::GET, "/audit")
        );
        assert!(access.roles(&Method::PUT, "/audit").is_err());
    }
}
