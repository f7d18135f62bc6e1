//! Server-sent events: an incremental parser for upstream streams and an encoder for the
//! client side.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

/// One event. `data` holds the joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    /// The event exactly as it arrived, terminator included, for pass-through.
    pub raw: Bytes,
}

/// Streams must not grow an unterminated event without bound.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream sent an event over {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

impl Parser {
    /// Feeds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, term)) = find_terminator(&self.buf) {
            let raw = self.buf.split_to(end + term).freeze();
            if let Some(ev) = parse_event(raw) {
                out.push(ev);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(out)
    }

    /// Whatever is left at the end of the stream, if it forms an event.
    pub fn finish(&mut self) -> Option<Event> {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        parse_event(self.buf.split().freeze())
    }
}

/// Position and length of the first blank line (`\n\n`, `\r\n\r\n`, or `\r\r`).
fn find_terminator(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
        let p = i + pos;
        let rest = &buf[p..];
        if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            return Some((p, 2));
        }
        if rest.starts_with(b"\r\n\r\n") {
            return Some((p, 4));
        }
        if rest.starts_with(b"\n\r\n") {
            return Some((p, 3));
        }
        i = p + 1;
    }
    None
}

/// One whole event (its bytes, with or without the blank line ending it); `None` for a
/// comment or keep-alive.
pub fn parse_event(raw: Bytes) -> Option<Event> {
    let text = std::str::from_utf8(&raw).ok()?;
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.lines() {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    if event.is_none() && data.is_none() {
        return None; // a comment or keep-alive
    }
    Some(Event {
        event,
        data: data.unwrap_or_default(),
        raw,
    })
}

/// `data: <json>\n\n`
pub fn data(json: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 8);
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(json.as_bytes());
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

/// `data: <v>\n\n`, `v` written as compact JSON.
pub fn data_json(v: &serde_json::Value) -> Bytes {
    json_event(None, v)
}

/// `event: <name>\ndata: <v>\n\n`, `v` written as compact JSON.
pub fn named_json(name: &str, v: &serde_json::Value) -> Bytes {
    json_event(Some(name), v)
}

/// An event whose data is `v`, serialised straight into the event's buffer.
fn json_event(name: Option<&str>, v: &serde_json::Value) -> Bytes {
    let mut w = BytesMut::with_capacity(144 + name.map_or(0, str::len)).writer();
    // Writing to a `BytesMut` cannot fail, and a `Value` always serialises.
    if let Some(name) = name {
        let _ = w.write_all(b"event: ");
        let _ = w.write_all(name.as_bytes());
        let _ = w.write_all(b"\n");
    }
    let _ = w.write_all(b"data: ");
    let _ = serde_json::to_writer(&mut w, v);
    let _ = w.write_all(b"\n\n");
    w.into_inner().freeze()
}

/// `event: <name>\ndata: <json>\n\n`
pub fn named(name: &str, json: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + name.len() + 16);
    b.extend_from_slice(b"event: ");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\ndata: ");
    b.extend_from_slice(json.as_bytes());
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_events_are_the_texts_events() {
        let v = serde_json::json!({"choices": [{"delta": {"content": "é \"q\"\n"}}], "n": 1.5});
        assert_eq!(data_json(&v), data(&v.to_string()));
        assert_eq!(
            named_json("message_delta", &v),
            named("message_delta", &v.to_string())
        );
    }

    #[test]
    fn events_split_across_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: {\"a\"").unwrap().is_empty());
        let evs = p
            .feed(b":1}\n\nevent: x\r\ndata: 2\r\n\r\n: ping\n\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0].data, "{\"a\":1}");
        assert_eq!(evs[0].raw.as_ref(), b"data: {\"a\":1}\n\n");
        assert_eq!(evs[1].event.as_deref(), Some("x"));
        assert_eq!(evs[1].data, "2");
        assert_eq!(evs[2].data, "[DONE]");
        assert!(p.finish().is_none());
    }

    #[test]
    fn multi_line_data_and_trailing_event() {
        let mut p = Parser::default();
        let evs = p.feed(b"data: a\ndata: b\n\ndata: tail").unwrap();
        assert_eq!(evs[0].data, "a\nb");
        assert_eq!(p.finish().unwrap().data, "tail");
    }
}
