//! MCP servers made of an HTTP API (`spec_path`: an OpenAPI 3 file, JSON or YAML): each
//! operation is a tool, named by its `operationId` (else its method and path), whose input
//! is its path, query and header parameters and, for a JSON request body, `body`. A call
//! is one HTTP request to the server's `url`, with the server's credential and static
//! headers; its answer is the response body as text, an error when the status is 4xx or
//! 5xx. `$ref`s to `#/components/...` are inlined (a few levels deep).

use http::Method;
use serde_json::{json, Map, Value};

/// `$ref`s followed inside one schema.
const MAX_REF_DEPTH: usize = 8;
/// Tool names are at most this long.
const MAX_NAME: usize = 64;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Path,
    Query,
    Header,
}

#[derive(Debug)]
struct Param {
    name: String,
    at: In,
}

#[derive(Debug)]
struct Operation {
    tool: Value,
    method: Method,
    /// The path template (`/pets/{id}`).
    path: String,
    params: Vec<Param>,
    /// A JSON request body, from the `body` argument.
    body: bool,
}

/// The tools of one API.
#[derive(Debug)]
pub struct Api {
    ops: Vec<Operation>,
}

/// One HTTP request for a tool call.
#[derive(Debug, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    /// Path and query, to append to the server's base path.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Api {
    /// Reads the description at `path`.
    pub fn load(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading spec_path `{path}`: {e}"))?;
        let spec: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(&text).map_err(|e| format!("spec_path `{path}`: {e}"))?
        } else {
            serde_norway::from_str(&text).map_err(|e| format!("spec_path `{path}`: {e}"))?
        };
        Self::from_spec(&spec).map_err(|e| format!("spec_path `{path}`: {e}"))
    }

    fn from_spec(spec: &Value) -> Result<Self, String> {
        let version = spec.get("openapi").and_then(Value::as_str).unwrap_or("");
        if !version.starts_with('3') {
            return Err("not an OpenAPI 3 description (no `openapi: 3.x`)".into());
        }
        let paths = spec
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("no `paths`")?;
        let mut ops = Vec::new();
        for (path, item) in paths {
            let shared = item.get("parameters").and_then(Value::as_array);
            for (key, method) in [
                ("get", Method::GET),
                ("put", Method::PUT),
                ("post", Method::POST),
                ("delete", Method::DELETE),
                ("patch", Method::PATCH),
                ("head", Method::HEAD),
                ("options", Method::OPTIONS),
            ] {
                let Some(op) = item.get(key) else {
                    continue;
                };
                ops.push(Operation::of(spec, path, method, op, shared));
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = ops.iter().find(|o| !seen.insert(o.name())) {
            return Err(format!("two operations are named `{}`", dup.name()));
        }
        Ok(Self { ops })
    }

    /// Its tools, as `tools/list` gives them.
    pub fn tools(&self) -> Vec<Value> {
        self.ops.iter().map(|o| o.tool.clone()).collect()
    }

    /// The request for a call of `tool` with `args`; `None` for an unknown tool.
    pub fn call(&self, tool: &str, args: &Map<String, Value>) -> Option<Result<Call, String>> {
        let op = self.ops.iter().find(|o| o.name() == tool)?;
        Some(op.call(args))
    }
}

/// A schema with its `#/components/...` references inlined.
fn resolved(spec: &Value, v: &Value, depth: usize) -> Value {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                let target = r
                    .strip_prefix('#')
                    .and_then(|p| spec.pointer(p))
                    .filter(|_| depth < MAX_REF_DEPTH);
                return match target {
                    Some(t) => resolved(spec, t, depth + 1),
                    // Unknown, external, or too deep: anything goes.
                    None => json!({}),
                };
            }
            Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), resolved(spec, v, depth)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| resolved(spec, v, depth)).collect()),
        other => other.clone(),
    }
}

/// `GET /pets/{id}` → `get_pets_id`, within the tool-name alphabet.
fn derived_name(method: &Method, path: &str) -> String {
    let mut name = method.as_str().to_ascii_lowercase();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            name.push('_');
            name.push_str(part);
        }
    }
    name
}

fn tool_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect()
}

/// `s` as one path segment: every byte but RFC 3986's unreserved ones percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Operation {
    fn of(
        spec: &Value,
        path: &str,
        method: Method,
        op: &Value,
        shared: Option<&Vec<Value>>,
    ) -> Self {
        let name = tool_name(
            &op.get("operationId")
                .and_then(Value::as_str)
                .map_or_else(|| derived_name(&method, path), str::to_owned),
        );
        let mut properties = Map::new();
        let mut required = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        // The operation's own parameters replace the path's of the same name and place.
        let own = op.get("parameters").and_then(Value::as_array);
        for p in own
            .into_iter()
            .flatten()
            .chain(shared.into_iter().flatten())
        {
            let p = resolved(spec, p, 0);
            let Some(pname) = p.get("name").and_then(Value::as_str) else {
                continue;
            };
            let at = match p.get("in").and_then(Value::as_str) {
                Some("path") => In::Path,
                Some("query") => In::Query,
                Some("header") => In::Header,
                _ => continue, // cookies are not sent
            };
            if params.iter().any(|q| q.name == pname && q.at == at) {
                continue;
            }
            let mut schema = p.get("schema").cloned().unwrap_or_else(|| json!({}));
            if let (Some(d), Value::Object(s)) = (p.get("description"), &mut schema) {
                s.entry("description").or_insert_with(|| d.clone());
            }
            properties.insert(pname.to_owned(), schema);
            if at == In::Path || p.get("required") == Some(&Value::Bool(true)) {
                required.push(json!(pname));
            }
            params.push(Param {
                name: pname.to_owned(),
                at,
            });
        }
        let body = op
            .get("requestBody")
            .map(|b| resolved(spec, b, 0))
            .and_then(|b| {
                let schema = b.pointer("/content/application~1json/schema")?.clone();
                Some((schema, b.get("required") == Some(&Value::Bool(true))))
            });
        if let Some((schema, needed)) = &body {
            properties.insert("body".into(), schema.clone());
            if *needed {
                required.push(json!("body"));
            }
        }
        let mut tool = json!({
            "name": name,
            "inputSchema": {"type": "object", "properties": properties, "required": required},
        });
        let text = |k: &str| op.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(d) = text("summary").or_else(|| text("description")) {
            tool["description"] = json!(d);
        }
        Self {
            tool,
            method,
            path: path.to_owned(),
            params,
            body: body.is_some(),
        }
    }

    fn name(&self) -> &str {
        self.tool["name"].as_str().unwrap_or("")
    }

    fn call(&self, args: &Map<String, Value>) -> Result<Call, String> {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut path = self.path.clone();
        let mut query = form_urlencoded::Serializer::new(String::new());
        let mut has_query = false;
        let mut headers = Vec::new();
        for p in &self.params {
            let Some(v) = args.get(&p.name).filter(|v| !v.is_null()) else {
                if p.at == In::Path {
                    return Err(format!("`{}` is required", p.name));
                }
                continue;
            };
            match p.at {
                In::Path => {
                    path = path.replace(&format!("{{{}}}", p.name), &segment(&text(v)));
                }
                In::Query => {
                    has_query = true;
                    match v {
                        Value::Array(items) => {
                            for i in items {
                                query.append_pair(&p.name, &text(i));
                            }
                        }
                        v => {
                            query.append_pair(&p.name, &text(v));
                        }
                    }
                }
                In::Header => {
                    let value = text(v);
                    if http::HeaderValue::from_str(&value).is_err() {
                        return Err(format!("`{}` is not a valid header value", p.name));
                    }
                    headers.push((p.name.to_ascii_lowercase(), value));
                }
            }
        }
        if has_query {
            path.push('?');
            path.push_str(&query.finish());
        }
        let body = if self.body {
            args.get("body").map(Value::to_string)
        } else {
            None
        };
        Ok(Call {
            method: self.method.clone(),
            path,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pets() -> Api {
        Api::from_spec(&json!({
            "openapi": "3.0.3",
            "paths": {
                "/pets": {
                    "get": {"operationId": "listPets", "summary": "List pets",
                            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}},
                                           {"name": "tag", "in": "query", "schema": {"type": "array"}}]},
                    "post": {"operationId": "createPet",
                             "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}}}
                },
                "/pets/{id}": {
                    "parameters": [{"$ref": "#/components/parameters/Id"}],
                    "get": {"description": "One pet",
                            "parameters": [{"name": "x-trace", "in": "header", "schema": {"type": "string"}}]}
                }
            },
            "components": {
                "parameters": {"Id": {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}},
                "schemas": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}, "owner": {"$ref": "#/components/schemas/Pet"}}}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn operations_become_tools() {
        let tools = pets().tools();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["listPets", "createPet", "get_pets_id"]);
        assert_eq!(tools[0]["description"], "List pets");
        assert_eq!(
            tools[0]["inputSchema"]["properties"]["limit"]["type"],
            "integer"
        );
        assert_eq!(tools[1]["inputSchema"]["required"], json!(["body"]));
        // References are inlined, a recursive one up to a depth.
        let body = &tools[1]["inputSchema"]["properties"]["body"];
        assert_eq!(body["properties"]["name"]["type"], "string");
        assert_eq!(
            body["properties"]["owner"]["properties"]["name"]["type"],
            "string"
        );
        assert_eq!(tools[2]["description"], "One pet");
        assert_eq!(tools[2]["inputSchema"]["required"], json!(["id"]));
    }

    #[test]
    fn calls_become_requests() {
        let api = pets();
        let args = |v: Value| v.as_object().unwrap().clone();
        let c = api
            .call("listPets", &args(json!({"limit": 2, "tag": ["a b", "c"]})))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            (Method::GET, "/pets?limit=2&tag=a+b&tag=c")
        );
        let c = api
            .call("createPet", &args(json!({"body": {"name": "Rex"}})))
            .unwrap()
            .unwrap();
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.body.as_deref(), Some(r#"{"name":"Rex"}"#));
        let c = api
            .call(
                "get_pets_id",
                &args(json!({"id": "7/../x", "x-trace": "t1"})),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            c.path, "/pets/7%2F..%2Fx",
            "a path parameter cannot leave its segment"
        );
        assert_eq!(c.headers, [("x-trace".to_owned(), "t1".to_owned())]);
        assert!(api.call("get_pets_id", &args(json!({}))).unwrap().is_err());
        assert!(api.call("nosuch", &args(json!({}))).is_none());
    }

    #[test]
    fn files_are_json_or_yaml() {
        let dir = std::env::temp_dir().join(format!("routeiq-openapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json_file = dir.join("a.json");
        std::fs::write(
            &json_file,
            r#"{"openapi": "3.0.0", "paths": {"/a": {"get": {"operationId": "a"}}}}"#,
        )
        .unwrap();
        let yaml_file = dir.join("a.yaml");
        std::fs::write(&yaml_file, "openapi: 3.1.0\npaths:\n  /b:\n    post: {}\n").unwrap();
        let names = |p: &std::path::Path| -> Vec<Value> {
            Api::load(p.to_str().unwrap())
                .unwrap()
                .tools()
                .into_iter()
                .map(|t| t["name"].clone())
                .collect()
        };
        assert_eq!(names(&json_file), [json!("a")]);
        assert_eq!(names(&yaml_file), [json!("post_b")]);
        let e = Api::load(dir.join("none.yaml").to_str().unwrap()).unwrap_err();
        assert!(e.contains("none.yaml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_documents_are_refused() {
        assert!(Api::from_spec(&json!({"swagger": "2.0", "paths": {}})).is_err());
        let twice = json!({"openapi": "3.1.0", "paths": {
            "/a": {"get": {"operationId": "x"}}, "/b": {"get": {"operationId": "x"}}}});
        assert!(Api::from_spec(&twice).unwrap_err().contains("`x`"));
    }
}
