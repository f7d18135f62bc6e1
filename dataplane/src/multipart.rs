//! `multipart/form-data` bodies (OpenAI's audio uploads), read only as far as the gateway
//! needs: the plain fields (`model`, `response_format`, ...) and where the file part
//! starts, so that the file itself can stream through untouched. A field's value can be
//! replaced in place (the model name the upstream knows).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use memchr::memmem;

use crate::error::ApiError;

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// A plain field: its name, where its value lies in the body, and where the whole part
/// lies (from its boundary line to the next one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: Range<usize>,
    pub part: Range<usize>,
}

/// What [`parse`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parts {
    pub fields: Vec<Field>,
    /// The first file part: its field name and where its boundary line starts.
    pub file: Option<(String, usize)>,
    /// The closing boundary was seen.
    pub end: bool,
}

impl Parts {
    pub fn field<'b>(&self, body: &'b [u8], name: &str) -> Option<&'b str> {
        let f = self.fields.iter().find(|f| f.name == name)?;
        std::str::from_utf8(&body[f.value.clone()]).ok()
    }
}

fn malformed(why: &str) -> ApiError {
    ApiError::bad_request(format!("malformed multipart/form-data body: {why}"))
}

/// Parses the parts of `body`. With `whole`, `body` is the whole body: file parts are
/// stepped over and every field found. Otherwise `body` is its beginning, and parsing
/// stops at the first file part; `Ok(None)`: more of the body is needed to get there.
pub fn parse(body: &[u8], boundary: &str, whole: bool) -> Result<Option<Parts>, ApiError> {
    let delimiter = format!("--{boundary}");
    let next_part = format!("\r\n--{boundary}");
    let mut parts = Parts::default();
    // The first boundary line (a preamble before it is allowed).
    let Some(first) = memmem::find(body, delimiter.as_bytes()) else {
        return if whole || body.len() > delimiter.len() + 1024 {
            Err(malformed("no boundary"))
        } else {
            Ok(None)
        };
    };
    let mut at = first;
    loop {
        // `at`: the start of a boundary line.
        let after = at + delimiter.len();
        match body.get(after..after + 2) {
            None => {
                return if whole {
                    Err(malformed("truncated"))
                } else {
                    Ok(None)
                }
            }
            Some(b"--") => {
                parts.end = true;
                return Ok(Some(parts));
            }
            Some(b"\r\n") => {}
            Some(_) => return Err(malformed("a boundary line does not end in CRLF")),
        }
        let headers_start = after + 2;
        let Some(headers_len) = memmem::find(&body[headers_start..], b"\r\n\r\n") else {
            return if whole {
                Err(malformed("a part's headers do not end"))
            } else {
                Ok(None)
            };
        };
        let headers = std::str::from_utf8(&body[headers_start..headers_start + headers_len])
            .map_err(|_| malformed("a part's headers are not UTF-8"))?;
        let (name, filename) = disposition(headers)?;
        let content = headers_start + headers_len + 4;
        if filename && parts.file.is_none() {
            parts.file = Some((name.clone(), at));
            if !whole {
                return Ok(Some(parts));
            }
        }
        let Some(len) = memmem::find(&body[content..], next_part.as_bytes()) else {
            return if whole {
                Err(malformed("a part does not end"))
            } else {
                Ok(None)
            };
        };
        if !filename {
            parts.fields.push(Field {
                name,
                value: content..content + len,
                part: at..content + len + 2,
            });
        }
        at = content + len + 2;
    }
}

/// The `name` of a part's `Content-Disposition: form-data`, and whether it has a
/// `filename`.
fn disposition(headers: &str) -> Result<(String, bool), ApiError> {
    let value = headers
        .split("\r\n")
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then_some(v.trim())
        })
        .ok_or_else(|| malformed("a part has no Content-Disposition"))?;
    let mut name = None;
    let mut filename = false;
    for param in value.split(';').skip(1) {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        match k.trim() {
            "name" => name = Some(v.trim().trim_matches('"').to_owned()),
            "filename" | "filename*" => filename = true,
            _ => {}
        }
    }
    let name = name.ok_or_else(|| malformed("a part has no name"))?;
    Ok((name, filename))
}

/// `body` with `field`'s value replaced by `value`.
pub fn replace(body: &[u8], field: &Field, value: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..field.value.start]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&body[field.value.end..]);
    out.freeze()
}

/// `body` without `field`'s part.
pub fn remove(body: &[u8], field: &Field) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len());
    out.extend_from_slice(&body[..field.part.start]);
    out.extend_from_slice(&body[field.part.end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--not the boundary\r\n--XyZ\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n--XyZ--\r\n";

    #[test]
    fn boundaries() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ"), Some("XyZ"));
        assert_eq!(
            boundary("Multipart/Form-Data; charset=utf-8; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn head_stops_at_the_file_and_whole_finds_every_field() {
        let head = parse(BODY, "XyZ", false).unwrap().unwrap();
        assert_eq!(head.field(BODY, "model"), Some("whisper"));
        let (name, at) = head.file.clone().unwrap();
        assert_eq!(name, "file");
        assert!(BODY[at..].starts_with(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\""));
        assert!(!head.end);
        // Cut anywhere before the file part: more is needed.
        for cut in 0..at {
            assert_eq!(parse(&BODY[..cut], "XyZ", false).unwrap(), None, "{cut}");
        }
        let all = parse(BODY, "XyZ", true).unwrap().unwrap();
        assert_eq!(all.field(BODY, "language"), Some("en"));
        assert!(all.end);
        let f = all.fields.iter().find(|f| f.name == "model").unwrap();
        let renamed = replace(BODY, f, "whisper-1");
        let again = parse(&renamed, "XyZ", true).unwrap().unwrap();
        assert_eq!(again.field(&renamed, "model"), Some("whisper-1"));
        assert_eq!(renamed.len(), BODY.len() + 2);
        let without = remove(BODY, f);
        let rest = parse(&without, "XyZ", true).unwrap().unwrap();
        assert_eq!(rest.field(&without, "model"), None);
        assert_eq!(rest.field(&without, "language"), Some("en"));
        assert_eq!(rest.file.unwrap().1, 0);
        assert!(parse(b"--XyZ\r\nno disposition\r\n\r\nx\r\n--XyZ--", "XyZ", true).is_err());
        assert!(parse(&BODY[..BODY.len() - 12], "XyZ", true).is_err());
    }
}
