//! The OpenAPI document: every route registered through [`router`] is in it, with the
//! roles it needs and every error it can answer.

use std::sync::Arc;

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{Operation, Parameter};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Spec, Ref, RefOr, Response};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::SCHEME;
use crate::error::ErrorBody;
use crate::routes::{
    agents, audit, budgets, cache, credentials, feedback, health, keys, mcp, models, orgs,
    routing_models, skills, spend, teams, users,
};
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RouteIQ admin API",
        description = "LiteLLM-compatible management API of the RouteIQ gateway: virtual keys, \
teams, users, organizations, models, credentials, MCP servers, budgets, spend and the audit \
log.\n\n\
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
        (name = "mcp", description = "MCP servers the gateway fronts"),
        (name = "agents", description = "A2A agents the gateway fronts"),
        (name = "skills", description = "Skills (Anthropic's Skills API), copied to Anthropic deployments"),
        (name = "budgets", description = "Reusable budgets"),
        (name = "cache", description = "The response cache"),
        (name = "spend", description = "Spend logs and reports"),
        (name = "audit", description = "Who changed what"),
        (name = "routing models", description = "Versions of the learned routers' models: \
registration, activation, shadow and A/B evaluation, and the per-version report"),
        (name = "feedback", description = "Scores of answers, by request id, for the routing-model report"),
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
        .routes(routes!(mcp::list, mcp::create, mcp::update))
        .routes(routes!(mcp::get, mcp::delete))
        .routes(routes!(mcp::access_groups))
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(
            agents::get,
            agents::replace,
            agents::patch,
            agents::delete
        ))
        .routes(routes!(agents::daily_activity))
        .routes(routes!(skills::list, skills::create).layer(skills::upload_limit()))
        .routes(routes!(skills::get, skills::delete))
        .routes(
            routes!(skills::list_versions, skills::create_version).layer(skills::upload_limit()),
        )
        .routes(routes!(skills::get_version, skills::delete_version))
        .routes(routes!(skills::content))
        .routes(routes!(cache::ping))
        .routes(routes!(cache::delete))
        .routes(routes!(cache::flushall))
        .routes(routes!(cache::redis_info))
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
        .routes(routes!(routing_models::shadow))
        .routes(routes!(routing_models::ab))
        .routes(routes!(routing_models::stop))
        .routes(routes!(routing_models::report))
        .routes(routes!(feedback::feedback))
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

/// No text in this API may hold U+0000 (PostgreSQL cannot store it; the server refuses it
/// with a 400 naming the field): the pattern of string schemas that have none of their own.
const NO_NUL: &str = "^[^\\u0000]*$";

/// The component free-form objects (`metadata`, ...) hold: any JSON without U+0000 in a
/// text or a key.
const JSON: &str = "Json";

fn text_without_nul() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NO_NUL))
        .into()
}

/// The [`JSON`] component. It has no `type`, so each keyword constrains only the values it
/// applies to: `pattern` texts, `items` arrays, `propertyNames` and `additionalProperties`
/// objects. (A union of typed schemas would say the same, but client generators reject
/// recursive unions.)
fn json_without_nul() -> Schema {
    let json = || RefOr::Ref(Ref::from_schema_name(JSON));
    let mut items = Extensions::default();
    // utoipa's `Object` has no `items`; its extensions are written as they are given.
    items.insert(
        "items".into(),
        serde_json::json!({ "$ref": format!("#/components/schemas/{JSON}") }),
    );
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("Any JSON value without U+0000 in a text or a key."))
        .pattern(Some(NO_NUL))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .pattern(Some(NO_NUL)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(json())))
        .extensions(Some(items))
        .into()
}

fn has_type(t: &SchemaType, wanted: Type) -> bool {
    match t {
        SchemaType::Type(t) => *t == wanted,
        SchemaType::Array(ts) => ts.contains(&wanted),
        SchemaType::AnyValue => false,
    }
}

/// Applies [`NO_NUL`] to `schema` and everything inside it: texts without a pattern get it;
/// free-form objects hold [`JSON`] values under keys without U+0000. The components it
/// refers to are pushed on `refs`.
fn forbid_nul(schema: &mut RefOr<Schema>, refs: &mut Vec<String>) {
    match schema {
        RefOr::T(schema) => forbid_nul_in(schema, refs),
        RefOr::Ref(r) => refs.extend(
            r.ref_location
                .strip_prefix("#/components/schemas/")
                .map(str::to_owned),
        ),
    }
}

fn forbid_nul_in(schema: &mut Schema, refs: &mut Vec<String>) {
    let mut each = |items: &mut Vec<RefOr<Schema>>| {
        items.iter_mut().for_each(|s| forbid_nul(s, refs));
    };
    match schema {
        Schema::Object(o) => {
            let (text, object) = (
                has_type(&o.schema_type, Type::String),
                has_type(&o.schema_type, Type::Object),
            );
            if text && o.pattern.is_none() && o.enum_values.is_none() {
                o.pattern = Some(NO_NUL.into());
            }
            for p in o.properties.values_mut() {
                forbid_nul(p, refs);
            }
            let free_form = match o.additional_properties.as_deref_mut() {
                Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(v))))
                    if v.schema_type == SchemaType::AnyValue =>
                {
                    true
                }
                Some(AdditionalProperties::RefOr(v)) => {
                    forbid_nul(v, refs);
                    false
                }
                Some(AdditionalProperties::FreeForm(allowed)) => *allowed,
                None => o.properties.is_empty(),
            };
            if object && free_form {
                o.additional_properties = Some(Box::new(AdditionalProperties::RefOr(RefOr::Ref(
                    Ref::from_schema_name(JSON),
                ))));
            }
            match &mut o.property_names {
                Some(names) => forbid_nul_in(names, refs),
                None if object && o.additional_properties.is_some() => {
                    o.property_names = Some(Box::new(text_without_nul()));
                }
                None => {}
            }
        }
        Schema::Array(a) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                forbid_nul(items, refs);
            }
        }
        Schema::OneOf(x) => each(&mut x.items),
        Schema::AllOf(x) => each(&mut x.items),
        Schema::AnyOf(x) => each(&mut x.items),
        _ => {}
    }
}

/// Applies [`forbid_nul`] to what the API takes: every operation's parameters and request
/// body, and the components they use. (Answers are left alone: an error may quote input.)
fn forbid_nul_in_input(spec: &mut Spec) {
    let mut refs = Vec::new();
    for op in operations(spec) {
        for p in op.parameters.iter_mut().flatten() {
            if let RefOr::T(Parameter {
                schema: Some(schema),
                ..
            }) = p
            {
                forbid_nul(schema, &mut refs);
            }
        }
        if let Some(RefOr::T(body)) = &mut op.request_body {
            for c in body.content.values_mut() {
                if let RefOr::T(Content {
                    schema: Some(schema),
                    ..
                }) = c
                {
                    forbid_nul(schema, &mut refs);
                }
            }
        }
    }
    let components = spec.components.get_or_insert_with(Default::default);
    let mut done = std::collections::HashSet::new();
    while let Some(name) = refs.pop() {
        if done.insert(name.clone()) {
            if let Some(schema) = components.schemas.get_mut(&name) {
                forbid_nul(schema, &mut refs);
            }
        }
    }
    components
        .schemas
        .insert(JSON.into(), RefOr::T(json_without_nul()));
}

/// Every operation of `spec`.
fn operations(spec: &mut Spec) -> impl Iterator<Item = &mut Operation> {
    spec.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
    })
}

/// The finished document, without serving it.
pub fn spec() -> Spec {
    finish(router().split_for_parts().1)
}

/// Adds the security scheme, the documented errors of every operation, and the input's
/// [`NO_NUL`] rule.
pub fn finish(mut spec: Spec) -> Spec {
    operations(&mut spec).for_each(document_errors);
    forbid_nul_in_input(&mut spec);
    let components = spec.components.get_or_insert_with(Default::default);
    if let Some(RefOr::T(Schema::Object(params))) = components
        .schemas
        .get_mut(&*<models::LitellmParams as utoipa::ToSchema>::name())
    {
        params.extensions = Some(models::litellm_conditions());
    }
    if let Some(RefOr::T(Schema::Object(settings))) = components
        .schemas
        .get_mut(&*<mcp::McpServerSettings as utoipa::ToSchema>::name())
    {
        settings.extensions = Some(mcp::auth_conditions());
    }
    if let Some(RefOr::T(Schema::Object(body))) = components
        .schemas
        .get_mut(&*<feedback::FeedbackRequest as utoipa::ToSchema>::name())
    {
        body.extensions = Some(feedback::score_or_rating());
    }
    // Flattened settings make it an `allOf`: the condition sits beside it.
    if let Some(RefOr::T(Schema::AllOf(new))) = components
        .schemas
        .get_mut(&*<mcp::NewMcpServerRequest as utoipa::ToSchema>::name())
    {
        new.extensions = Some(mcp::new_conditions());
    }
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
