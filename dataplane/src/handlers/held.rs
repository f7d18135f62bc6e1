//! Objects a deployment holds at its provider: native Responses API responses, files and
//! batches. The id a client gets names the deployment, the owner (the creating key's team,
//! or the key; see `conversations::owner`) and the provider's own id, so that any data
//! plane sends a later request about the object to the deployment that holds it, and
//! only to a caller of the same owner: `<prefix>` and the URL-safe base64 of an
//! HMAC-SHA256 tag followed by the JSON array `[deployment id, owner, provider's id,
//! creating key's hash]`. The tag's key derives from the master key's hash, which every
//! data plane of an install holds and no client sees, so a client cannot forge an id
//! that names another owner's object.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::Method;
use routeiq_proto::ProviderKind;
use serde_json::Value;

use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::upstream::{Exchange, UpstreamRequest};

/// Signs and checks ids (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Signer(ring::hmac::Key);

impl Signer {
    pub fn of(live: &LiveState) -> Self {
        Self::new(live.master_key_hash)
    }

    /// The signer of an install whose master key has hash `master`.
    pub fn new(master: Option<routeiq_proto::KeyHash>) -> Self {
        let secret = master.map(|h| h.0).unwrap_or_default();
        let key = [b"routeiq object ids:".as_slice(), &secret].concat();
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key))
    }
}

/// A provider's id as the gateway accepts it in a path segment.
fn plain(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && id != "."
        && id != ".."
}

/// An object held by a deployment, as a client's id names it.
#[derive(Debug, Clone)]
pub struct Held {
    pub deployment: String,
    pub owner: String,
    pub upstream: String,
    /// The creating key's hash (hex; empty for the master key): whom a batch's cost is
    /// charged to.
    pub creator: String,
    pub signer: Signer,
}

impl Held {
    /// The client's id for it.
    pub fn id(&self, prefix: &str) -> String {
        let json =
            serde_json::to_vec(&(&self.deployment, &self.owner, &self.upstream, &self.creator))
                .unwrap_or_default();
        let tag = ring::hmac::sign(&self.signer.0, &json);
        let signed = [tag.as_ref(), &json].concat();
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(signed))
    }

    /// What a client's id names; `None` for an id this gateway did not give (or that
    /// was altered).
    pub fn parse(live: &LiveState, prefix: &str, id: &str) -> Option<Self> {
        Self::parse_signed(Signer::of(live), prefix, id)
    }

    fn parse_signed(signer: Signer, prefix: &str, id: &str) -> Option<Self> {
        let signed = URL_SAFE_NO_PAD.decode(id.strip_prefix(prefix)?).ok()?;
        let (tag, json) = signed.split_at_checked(TAG_LEN)?;
        ring::hmac::verify(&signer.0, json, tag).ok()?;
        let (deployment, owner, upstream, creator) =
            serde_json::from_slice::<(String, String, String, String)>(json).ok()?;
        plain(&upstream).then_some(Self {
            deployment,
            owner,
            upstream,
            creator,
            signer,
        })
    }

    /// The same owner and deployment, another object (a batch's files).
    pub fn sibling(&self, upstream: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            ..self.clone()
        }
    }
}

/// The length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// The object's kinds: the prefix of their client ids.
pub const RESPONSE: &str = "resp_";
pub const FILE: &str = "file-";
pub const BATCH: &str = "batch_";

impl Held {
    /// An object deployment `d` holds for the caller in `ctx` (its provider id to come).
    pub fn of(live: &LiveState, d: &CompiledDeployment, ctx: &RequestCtx) -> Self {
        Self {
            deployment: d.deployment.id.0.clone(),
            owner: crate::conversations::owner(ctx.key.as_deref()),
            upstream: String::new(),
            creator: ctx
                .key
                .as_ref()
                .map(|k| k.hash.to_hex())
                .unwrap_or_default(),
            signer: Signer::of(live),
        }
    }
}

/// The deployment that holds `held`, when the caller owns it and may use the deployment's
/// model group; a 404 naming `client_id` otherwise (a stranger learns nothing).
pub fn holder(
    live: &LiveState,
    ctx: &mut RequestCtx,
    held: &Held,
    client_id: &str,
) -> Result<Arc<CompiledDeployment>, ApiError> {
    let owner = crate::conversations::owner(ctx.key.as_deref());
    let d = live
        .compiled()
        .find(|d| d.deployment.id.0 == held.deployment)
        .filter(|_| owner.is_empty() || owner == held.owner)
        .cloned()
        .ok_or_else(|| not_found(client_id))?;
    crate::access::check(live, ctx.key.as_deref(), &d.deployment.model_name)?;
    ctx.model = Some(d.deployment.model_name.clone());
    ctx.deployment = Some(Arc::clone(&d));
    Ok(d)
}

pub fn not_found(client_id: &str) -> ApiError {
    ApiError::not_found(format!("No object with id '{client_id}' was found."))
        .with_code("not_found")
}

/// Whether the deployment's provider holds objects the gateway can reach.
pub fn supported(d: &CompiledDeployment) -> bool {
    matches!(
        d.deployment.provider,
        ProviderKind::OpenAi | ProviderKind::Azure
    )
}

/// The upstream path for `path` (`/files/...`, with its query) on deployment `d`:
/// OpenAI's under `api_base`, Azure's under `/openai` with its `api-version`.
pub fn path(d: &CompiledDeployment, path: &str) -> String {
    let base = d.target.as_ref().map_or("", |t| t.base_path.as_str());
    match d.deployment.provider {
        ProviderKind::Azure => format!(
            "{base}/openai{path}{sep}api-version={}",
            d.deployment.api_version.as_deref().unwrap_or_default(),
            sep = if path.contains('?') { '&' } else { '?' },
        ),
        _ => format!("{base}{path}"),
    }
}

/// Sends a request about a held object to deployment `d` and waits for the answer's
/// header: a 2xx exchange, else the client's error (404: `client_id` is not found).
pub async fn call(
    app: &App,
    d: &CompiledDeployment,
    method: Method,
    path: String,
    body: Option<(String, Bytes)>,
    client_id: &str,
) -> Result<Exchange, ApiError> {
    let target = d.target.as_ref().ok_or_else(|| not_found(client_id))?;
    let (headers, body) = match body {
        Some((content_type, body)) => (vec![("content-type", content_type)], body),
        None => (Vec::new(), Bytes::new()),
    };
    let mut req = UpstreamRequest {
        method,
        path,
        headers,
        body,
    };
    crate::providers::get(d.deployment.provider)
        .authorize(&app.upstream, d, target, &mut req)
        .await?;
    let mut ex = tokio::time::timeout(
        d.timeout,
        app.upstream.send(target, req, None, Arc::clone(&d.label)),
    )
    .await
    .map_err(|_| {
        ApiError::timeout(format!(
            "{} did not answer within {:.1}s",
            d.label,
            d.timeout.as_secs_f64()
        ))
    })??;
    match ex.status {
        200..=299 => Ok(ex),
        404 => Err(not_found(client_id)),
        status => {
            let body = ex.read_error_body().await;
            Err(crate::providers::upstream_error(
                d.deployment.provider,
                status,
                &body,
            ))
        }
    }
}

/// An answer's JSON with its provider ids made clients' ids (`fields`: field and
/// prefix), at the top level and in each item of a list's `data`.
pub fn rewrite(body: &[u8], held: &Held, fields: &[(&str, &str)]) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Bytes::copy_from_slice(body);
    };
    let one = |o: &mut Value| {
        for (field, prefix) in fields {
            if let Some(Value::String(id)) = o.get_mut(*field) {
                *id = held.sibling(id).id(prefix);
            }
        }
    };
    let list = v.get("object").and_then(Value::as_str) == Some("list");
    match v.get_mut("data").and_then(Value::as_array_mut) {
        Some(items) if list => {
            items.iter_mut().for_each(one);
            for edge in ["first_id", "last_id"] {
                if let Some(Value::String(id)) = v.get_mut(edge) {
                    let prefix = fields.first().map_or("", |(_, p)| *p);
                    *id = held.sibling(id).id(prefix);
                }
            }
        }
        _ => one(&mut v),
    }
    crate::json::bytes(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::KeyHash;

    fn signer(master: &str) -> Signer {
        Signer::new(Some(KeyHash::of(master)))
    }

    fn parse_with(signer: &Signer, prefix: &str, id: &str) -> Option<Held> {
        Held::parse_signed(signer.clone(), prefix, id)
    }

    #[test]
    fn ids_round_trip_and_cannot_be_forged() {
        let h = Held {
            deployment: "dep;with\"odd\"chars".into(),
            owner: "team:t".into(),
            upstream: "file-abc".into(),
            creator: "ab".into(),
            signer: signer("sk-master"),
        };
        let id = h.id(FILE);
        assert!(id.starts_with("file-"));
        let back = parse_with(&h.signer, FILE, &id).unwrap();
        assert_eq!(
            (back.deployment, back.owner, back.upstream, back.creator),
            (
                h.deployment.clone(),
                h.owner.clone(),
                h.upstream.clone(),
                h.creator.clone()
            )
        );
        assert!(parse_with(&h.signer, BATCH, &id).is_none());
        assert!(parse_with(&h.signer, FILE, "file-abc").is_none());
        // Another install's key, or an altered owner: refused.
        assert!(parse_with(&signer("sk-other"), FILE, &id).is_none());
        let mut bytes = URL_SAFE_NO_PAD.decode(&id[5..]).unwrap();
        let json = String::from_utf8(bytes.split_off(TAG_LEN)).unwrap();
        let forged = [bytes, json.replace("team:t", "team:u").into_bytes()].concat();
        assert!(parse_with(
            &h.signer,
            FILE,
            &format!("file-{}", URL_SAFE_NO_PAD.encode(forged))
        )
        .is_none());
        // A provider id that would change the upstream path: refused even when signed.
        let odd = Held {
            upstream: "../x?y".into(),
            ..h.clone()
        };
        assert!(parse_with(&h.signer, FILE, &odd.id(FILE)).is_none());

        let out = rewrite(
            br#"{"object":"list","data":[{"id":"file-1"},{"id":"file-2"}],"last_id":"file-2"}"#,
            &h,
            &[("id", FILE)],
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        let second = parse_with(&h.signer, FILE, v["data"][1]["id"].as_str().unwrap()).unwrap();
        assert_eq!(second.upstream, "file-2");
        assert_eq!(v["last_id"], v["data"][1]["id"]);
        let batch = rewrite(
            br#"{"id":"batch_1","input_file_id":"file-1","output_file_id":null}"#,
            &h,
            &[
                ("id", BATCH),
                ("input_file_id", FILE),
                ("output_file_id", FILE),
            ],
        );
        let v: Value = serde_json::from_slice(&batch).unwrap();
        let b = parse_with(&h.signer, BATCH, v["id"].as_str().unwrap()).unwrap();
        assert_eq!(b.upstream, "batch_1");
        assert!(v["output_file_id"].is_null());
    }
}
