//! The data plane's route table: for each endpoint, its method, its paths (LiteLLM's
//! aliases included), the client API whose error shape it answers in, and what it needs
//! before its handler runs. Paths are matched by `matchit` (the router axum uses); 404 and
//! 405 come from the table, so the list of known paths is kept once, here.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use http::Method;
use routeiq_proto::ProviderKind;

use crate::error::ClientApi;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Messages,
    Embeddings,
    /// Cohere's rerank shape.
    Rerank,
    Moderations,
    /// OpenAI's Responses API.
    Responses,
    /// OpenAI's legacy text completions.
    Completions,
    /// Multipart uploads, streamed to the deployment.
    AudioTranscriptions,
    AudioTranslations,
    /// The audio streams back.
    AudioSpeech,
    /// A multipart upload, streamed to the deployment.
    ImageEdits,
    /// A multipart upload, kept by the deployment.
    FileUpload,
    FileList,
    FileGet,
    FileDelete,
    FileContent,
    BatchCreate,
    BatchList,
    BatchGet,
    BatchCancel,
    /// `GET /v1/responses/{id}`.
    ResponseGet,
    /// `DELETE /v1/responses/{id}`.
    ResponseDelete,
    /// `GET /v1/responses/{id}/input_items`.
    ResponseInputItems,
    ImageGenerations,
    Models,
    Liveliness,
    Readiness,
    Metrics,
    HotReload,
    /// A provider's native API (`handlers::passthrough`).
    PassThrough(ProviderKind),
    /// The MCP gateway: every server (`/mcp`), or the path's one (`mcp`).
    Mcp,
    /// `GET /mcp-rest/tools/list`, `GET /v1/mcp/tools`.
    McpRestList,
    /// `GET /v1/mcp/server/health`.
    McpHealth,
    /// `POST /mcp-rest/tools/call`.
    McpRestCall,
    /// `GET /a2a/{agent}/.well-known/agent-card.json`.
    A2aCard,
    /// `POST /a2a/{agent}`: a JSON-RPC request for the agent.
    A2aCall,
}

/// What is checked and read before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// A key (master or virtual).
    Key,
    /// A key, then the body (never read for an unauthenticated client).
    KeyAndBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub endpoint: Endpoint,
    /// The error shape of its answers.
    pub api: ClientApi,
    pub needs: Needs,
    /// Its name in metrics and logs.
    pub name: &'static str,
}

/// One row of the table.
struct Spec {
    method: Method,
    paths: &'static [&'static str],
    endpoint: Endpoint,
    api: ClientApi,
    needs: Needs,
    name: &'static str,
}

const fn spec(
    method: Method,
    paths: &'static [&'static str],
    endpoint: Endpoint,
    api: ClientApi,
    needs: Needs,
    name: &'static str,
) -> Spec {
    Spec {
        method,
        paths,
        endpoint,
        api,
        needs,
        name,
    }
}

/// Pass-through paths end in `{*rest}`: the rest of the path, the provider's own. A path
/// has at most one parameter.
const TABLE: &[Spec] = &[
    spec(
        Method::POST,
        &[
            "/v1/chat/completions",
            "/chat/completions",
            "/openai/v1/chat/completions",
        ],
        Endpoint::Chat,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "chat",
    ),
    spec(
        Method::POST,
        &["/v1/completions", "/completions", "/openai/v1/completions"],
        Endpoint::Completions,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "completions",
    ),
    spec(
        Method::POST,
        &["/v1/messages", "/anthropic/v1/messages"],
        Endpoint::Messages,
        ClientApi::Anthropic,
        Needs::KeyAndBody,
        "messages",
    ),
    spec(
        Method::POST,
        &["/v1/embeddings", "/embeddings", "/openai/v1/embeddings"],
        Endpoint::Embeddings,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "embeddings",
    ),
    spec(
        Method::POST,
        &["/v1/rerank", "/rerank", "/v2/rerank"],
        Endpoint::Rerank,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "rerank",
    ),
    spec(
        Method::POST,
        &["/v1/moderations", "/moderations", "/openai/v1/moderations"],
        Endpoint::Moderations,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "moderations",
    ),
    spec(
        Method::POST,
        &["/v1/responses", "/responses", "/openai/v1/responses"],
        Endpoint::Responses,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "responses",
    ),
    spec(
        Method::POST,
        &[
            "/v1/audio/transcriptions",
            "/audio/transcriptions",
            "/openai/v1/audio/transcriptions",
        ],
        Endpoint::AudioTranscriptions,
        ClientApi::OpenAi,
        Needs::Key,
        "audio",
    ),
    spec(
        Method::POST,
        &[
            "/v1/audio/translations",
            "/audio/translations",
            "/openai/v1/audio/translations",
        ],
        Endpoint::AudioTranslations,
        ClientApi::OpenAi,
        Needs::Key,
        "audio",
    ),
    spec(
        Method::POST,
        &[
            "/v1/images/edits",
            "/images/edits",
            "/openai/v1/images/edits",
        ],
        Endpoint::ImageEdits,
        ClientApi::OpenAi,
        Needs::Key,
        "images",
    ),
    spec(
        Method::POST,
        &["/v1/files", "/files", "/openai/v1/files"],
        Endpoint::FileUpload,
        ClientApi::OpenAi,
        Needs::Key,
        "files",
    ),
    spec(
        Method::GET,
        &["/v1/files", "/files", "/openai/v1/files"],
        Endpoint::FileList,
        ClientApi::OpenAi,
        Needs::Key,
        "files",
    ),
    spec(
        Method::GET,
        &["/v1/files/{id}", "/files/{id}", "/openai/v1/files/{id}"],
        Endpoint::FileGet,
        ClientApi::OpenAi,
        Needs::Key,
        "files",
    ),
    spec(
        Method::DELETE,
        &["/v1/files/{id}", "/files/{id}", "/openai/v1/files/{id}"],
        Endpoint::FileDelete,
        ClientApi::OpenAi,
        Needs::Key,
        "files",
    ),
    spec(
        Method::GET,
        &[
            "/v1/files/{id}/content",
            "/files/{id}/content",
            "/openai/v1/files/{id}/content",
        ],
        Endpoint::FileContent,
        ClientApi::OpenAi,
        Needs::Key,
        "files",
    ),
    spec(
        Method::POST,
        &["/v1/batches", "/batches", "/openai/v1/batches"],
        Endpoint::BatchCreate,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "batches",
    ),
    spec(
        Method::GET,
        &["/v1/batches", "/batches", "/openai/v1/batches"],
        Endpoint::BatchList,
        ClientApi::OpenAi,
        Needs::Key,
        "batches",
    ),
    spec(
        Method::GET,
        &[
            "/v1/batches/{id}",
            "/batches/{id}",
            "/openai/v1/batches/{id}",
        ],
        Endpoint::BatchGet,
        ClientApi::OpenAi,
        Needs::Key,
        "batches",
    ),
    spec(
        Method::POST,
        &[
            "/v1/batches/{id}/cancel",
            "/batches/{id}/cancel",
            "/openai/v1/batches/{id}/cancel",
        ],
        Endpoint::BatchCancel,
        ClientApi::OpenAi,
        Needs::Key,
        "batches",
    ),
    spec(
        Method::POST,
        &[
            "/v1/audio/speech",
            "/audio/speech",
            "/openai/v1/audio/speech",
        ],
        Endpoint::AudioSpeech,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "audio",
    ),
    spec(
        Method::GET,
        &[
            "/v1/responses/{id}",
            "/responses/{id}",
            "/openai/v1/responses/{id}",
        ],
        Endpoint::ResponseGet,
        ClientApi::OpenAi,
        Needs::Key,
        "responses",
    ),
    spec(
        Method::DELETE,
        &[
            "/v1/responses/{id}",
            "/responses/{id}",
            "/openai/v1/responses/{id}",
        ],
        Endpoint::ResponseDelete,
        ClientApi::OpenAi,
        Needs::Key,
        "responses",
    ),
    spec(
        Method::GET,
        &[
            "/v1/responses/{id}/input_items",
            "/responses/{id}/input_items",
            "/openai/v1/responses/{id}/input_items",
        ],
        Endpoint::ResponseInputItems,
        ClientApi::OpenAi,
        Needs::Key,
        "responses",
    ),
    spec(
        Method::POST,
        &[
            "/v1/images/generations",
            "/images/generations",
            "/openai/v1/images/generations",
        ],
        Endpoint::ImageGenerations,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "images",
    ),
    spec(
        Method::GET,
        &["/v1/models", "/models"],
        Endpoint::Models,
        ClientApi::OpenAi,
        Needs::Key,
        "models",
    ),
    spec(
        Method::POST,
        &["/mcp", "/mcp/", "/mcp/{server}", "/{server}/mcp"],
        Endpoint::Mcp,
        ClientApi::OpenAi,
        Needs::Nothing,
        "mcp",
    ),
    spec(
        Method::GET,
        &["/mcp", "/mcp/", "/mcp/{server}", "/{server}/mcp"],
        Endpoint::Mcp,
        ClientApi::OpenAi,
        Needs::Nothing,
        "mcp",
    ),
    spec(
        Method::DELETE,
        &["/mcp", "/mcp/", "/mcp/{server}", "/{server}/mcp"],
        Endpoint::Mcp,
        ClientApi::OpenAi,
        Needs::Nothing,
        "mcp",
    ),
    spec(
        Method::GET,
        &["/mcp-rest/tools/list", "/v1/mcp/tools"],
        Endpoint::McpRestList,
        ClientApi::OpenAi,
        Needs::Key,
        "mcp",
    ),
    spec(
        Method::GET,
        &["/v1/mcp/server/health"],
        Endpoint::McpHealth,
        ClientApi::OpenAi,
        Needs::Key,
        "mcp",
    ),
    spec(
        Method::POST,
        &["/mcp-rest/tools/call"],
        Endpoint::McpRestCall,
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "mcp",
    ),
    spec(
        Method::GET,
        &[
            "/a2a/{agent}/.well-known/agent-card.json",
            "/a2a/{agent}/.well-known/agent.json",
        ],
        Endpoint::A2aCard,
        ClientApi::OpenAi,
        Needs::Nothing,
        "a2a",
    ),
    spec(
        Method::POST,
        &[
            "/a2a/{agent}",
            "/a2a/{agent}/",
            "/a2a/{agent}/message/send",
            "/v1/a2a/{agent}/message/send",
        ],
        Endpoint::A2aCall,
        ClientApi::OpenAi,
        Needs::Nothing,
        "a2a",
    ),
    spec(
        Method::GET,
        &["/health/liveliness", "/health/liveness"],
        Endpoint::Liveliness,
        ClientApi::OpenAi,
        Needs::Nothing,
        "health",
    ),
    spec(
        Method::GET,
        &["/health/readiness"],
        Endpoint::Readiness,
        ClientApi::OpenAi,
        Needs::Nothing,
        "health",
    ),
    spec(
        Method::GET,
        &["/metrics", "/metrics/"],
        Endpoint::Metrics,
        ClientApi::OpenAi,
        Needs::Nothing,
        "metrics",
    ),
    spec(
        Method::GET,
        &["/hot-reload/status"],
        Endpoint::HotReload,
        ClientApi::OpenAi,
        Needs::Nothing,
        "health",
    ),
    spec(
        Method::POST,
        &["/gemini/{*rest}"],
        Endpoint::PassThrough(ProviderKind::Gemini),
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "passthrough",
    ),
    spec(
        Method::POST,
        &["/vertex_ai/{*rest}"],
        Endpoint::PassThrough(ProviderKind::VertexAi),
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "passthrough",
    ),
    spec(
        Method::POST,
        &["/bedrock/{*rest}"],
        Endpoint::PassThrough(ProviderKind::Bedrock),
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "passthrough",
    ),
    spec(
        Method::POST,
        &["/anthropic/{*rest}"],
        Endpoint::PassThrough(ProviderKind::Anthropic),
        ClientApi::Anthropic,
        Needs::KeyAndBody,
        "passthrough",
    ),
    spec(
        Method::POST,
        &["/openai/{*rest}"],
        Endpoint::PassThrough(ProviderKind::OpenAi),
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "passthrough",
    ),
    spec(
        Method::POST,
        &["/cohere/{*rest}"],
        Endpoint::PassThrough(ProviderKind::Cohere),
        ClientApi::OpenAi,
        Needs::KeyAndBody,
        "passthrough",
    ),
];

/// The outcome of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'r, 'p> {
    /// The route, and its path's parameter (`{id}`, a pass-through's `{*rest}`).
    Route(&'r Route, Option<&'p str>),
    /// The path is known, not with this method.
    MethodNotAllowed,
    NotFound,
}

pub struct Routes(matchit::Router<Vec<Route>>);

/// The table, built on first use.
pub static ROUTES: LazyLock<Routes> = LazyLock::new(Routes::build);

impl Routes {
    fn build() -> Self {
        let mut by_path: BTreeMap<&str, Vec<Route>> = BTreeMap::new();
        for s in TABLE {
            for path in s.paths {
                by_path.entry(path).or_default().push(Route {
                    method: s.method.clone(),
                    endpoint: s.endpoint,
                    api: s.api,
                    needs: s.needs,
                    name: s.name,
                });
            }
        }
        let mut router = matchit::Router::new();
        for (path, routes) in by_path {
            // The table is a constant: `every_table_path_is_routed` proves each entry goes in.
            if let Err(e) = router.insert(path, routes) {
                tracing::error!(path, error = %e, "route table entry refused");
            }
        }
        Self(router)
    }

    pub fn find<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Found<'r, 'p> {
        let Ok(m) = self.0.at(path) else {
            return Found::NotFound;
        };
        match m.value.iter().find(|r| r.method == *method) {
            Some(route) => Found::Route(route, m.params.iter().next().map(|(_, v)| v)),
            None => Found::MethodNotAllowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(method: Method, path: &str) -> Option<(Endpoint, Option<&str>)> {
        match ROUTES.find(&method, path) {
            Found::Route(r, rest) => Some((r.endpoint, rest)),
            _ => None,
        }
    }

    #[test]
    fn every_alias_and_pass_through_is_found() {
        for p in [
            "/v1/chat/completions",
            "/chat/completions",
            "/openai/v1/chat/completions",
        ] {
            assert_eq!(
                endpoint(Method::POST, p),
                Some((Endpoint::Chat, None)),
                "{p}"
            );
        }
        assert_eq!(
            endpoint(Method::POST, "/anthropic/v1/messages"),
            Some((Endpoint::Messages, None))
        );
        assert_eq!(
            endpoint(Method::POST, "/anthropic/v1/messages/count_tokens"),
            Some((
                Endpoint::PassThrough(ProviderKind::Anthropic),
                Some("v1/messages/count_tokens")
            ))
        );
        assert_eq!(
            endpoint(
                Method::POST,
                "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
            ),
            Some((
                Endpoint::PassThrough(ProviderKind::Gemini),
                Some("v1beta/models/gemini-2.0-flash:generateContent")
            ))
        );
        assert_eq!(
            endpoint(Method::GET, "/health/liveness"),
            Some((Endpoint::Liveliness, None))
        );
        assert_eq!(
            endpoint(Method::DELETE, "/openai/v1/responses/resp_1"),
            Some((Endpoint::ResponseDelete, Some("resp_1")))
        );
        assert_eq!(
            endpoint(Method::GET, "/v1/responses/resp_1/input_items"),
            Some((Endpoint::ResponseInputItems, Some("resp_1")))
        );
        assert_eq!(
            ROUTES.find(&Method::PUT, "/v1/responses/resp_1"),
            Found::MethodNotAllowed
        );
        assert_eq!(
            endpoint(Method::GET, "/a2a/echo/.well-known/agent-card.json"),
            Some((Endpoint::A2aCard, Some("echo")))
        );
        for p in ["/a2a/echo", "/a2a/echo/", "/v1/a2a/echo/message/send"] {
            assert_eq!(
                endpoint(Method::POST, p),
                Some((Endpoint::A2aCall, Some("echo"))),
                "{p}"
            );
        }
    }

    #[test]
    fn every_table_path_is_routed() {
        for s in TABLE {
            for path in s.paths {
                let concrete = path
                    .replace("{*rest}", "some/native/path")
                    .replace("{id}", "resp_1");
                match ROUTES.find(&s.method, &concrete) {
                    Found::Route(r, _) => assert_eq!(r.endpoint, s.endpoint, "{path}"),
                    other => panic!("{path}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(
            ROUTES.find(&Method::GET, "/v1/chat/completions"),
            Found::MethodNotAllowed
        );
        assert_eq!(
            ROUTES.find(&Method::GET, "/bedrock/model/x/converse"),
            Found::MethodNotAllowed
        );
        assert_eq!(ROUTES.find(&Method::POST, "/v2/chat"), Found::NotFound);
        assert_eq!(ROUTES.find(&Method::POST, "/gemini/"), Found::NotFound);
        assert_eq!(ROUTES.find(&Method::POST, "/gemini"), Found::NotFound);
    }
}
