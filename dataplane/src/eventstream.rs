//! How upstream streams are framed: server-sent events (OpenAI, Anthropic, Gemini,
//! Cohere), or AWS's binary event stream (Bedrock's `converse-stream` and
//! `invoke-with-response-stream`). Both decode into [`Event`]s for the stream converters.
//!
//! An AWS frame becomes an event named by its `:event-type` with its JSON payload; an
//! InvokeModel `chunk` (`{"bytes": <base64>}`) becomes the provider event it wraps, named
//! by its `type` (Anthropic's events, for `bedrock/invoke/anthropic.*`); an exception
//! frame becomes an Anthropic-shaped `error` event. Each decoded event carries an SSE
//! rendering as its `raw`, for clients that get the provider's events as they are.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use base64::Engine as _;
use bytes::BytesMut;
use routeiq_proto::ProviderKind;
use serde_json::{json, Value};

use crate::sse::{self, Event};

pub enum Decoder {
    Sse(sse::Parser),
    Aws {
        buf: BytesMut,
        frames: MessageFrameDecoder,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Sse(#[from] sse::EventTooLarge),
    #[error("upstream sent a malformed event stream frame: {0}")]
    Frame(String),
}

impl Decoder {
    pub fn for_provider(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Bedrock => Self::Aws {
                buf: BytesMut::new(),
                frames: MessageFrameDecoder::new(),
            },
            _ => Self::Sse(sse::Parser::default()),
        }
    }

    /// Feeds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, DecodeError> {
        match self {
            Self::Sse(p) => Ok(p.feed(chunk)?),
            Self::Aws { buf, frames } => {
                buf.extend_from_slice(chunk);
                let mut out = Vec::new();
                while let DecodedFrame::Complete(m) = frames
                    .decode_frame(&mut *buf)
                    .map_err(|e| DecodeError::Frame(e.to_string()))?
                {
                    out.extend(aws_event(&m));
                }
                Ok(out)
            }
        }
    }

    /// Whatever is left at the end of the stream, if it forms an event.
    pub fn finish(&mut self) -> Option<Event> {
        match self {
            Self::Sse(p) => p.finish(),
            Self::Aws { .. } => None,
        }
    }
}

fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

fn event(name: &str, data: String) -> Event {
    Event {
        raw: sse::named(name, &data),
        event: Some(name.to_owned()),
        data,
    }
}

fn aws_event(m: &Message) -> Option<Event> {
    let payload = String::from_utf8_lossy(m.payload()).into_owned();
    match header(m, ":message-type") {
        Some("exception") | Some("error") => {
            let kind = header(m, ":exception-type")
                .or_else(|| header(m, ":error-code"))
                .unwrap_or("error");
            let message = serde_json::from_str::<Value>(&payload)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .or_else(|| header(m, ":error-message").map(str::to_owned))
                .unwrap_or(payload);
            let data = json!({"type": "error", "error": {"type": kind, "message": message}});
            Some(event("error", data.to_string()))
        }
        _ => {
            let name = header(m, ":event-type")?;
            if name != "chunk" {
                return Some(event(name, payload));
            }
            // InvokeModel: the provider's own event, base64 in `bytes`.
            let inner = serde_json::from_str::<Value>(&payload)
                .ok()
                .and_then(|v| v.get("bytes")?.as_str().map(str::to_owned))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())?;
            let kind = serde_json::from_str::<Value>(&inner)
                .ok()
                .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "chunk".to_owned());
            Some(event(&kind, inner))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue};
    use bytes::Bytes;

    fn frame(message_type: &str, kind_header: (&str, &str), payload: &str) -> Vec<u8> {
        let m = Message::new(Bytes::from(payload.to_owned()))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String(message_type.to_owned().into()),
            ))
            .add_header(Header::new(
                kind_header.0.to_owned(),
                HeaderValue::String(kind_header.1.to_owned().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut out = Vec::new();
        write_message_to(&m, &mut out).unwrap();
        out
    }

    #[test]
    fn frames_split_anywhere_decode_into_events() {
        let mut bytes = frame(
            "event",
            (":event-type", "messageStart"),
            r#"{"role":"assistant"}"#,
        );
        let inner = base64::engine::general_purpose::STANDARD.encode(r#"{"type":"message_stop"}"#);
        bytes.extend(frame(
            "event",
            (":event-type", "chunk"),
            &format!(r#"{{"bytes":"{inner}"}}"#),
        ));
        bytes.extend(frame(
            "exception",
            (":exception-type", "throttlingException"),
            r#"{"message":"slow down"}"#,
        ));
        for split in [1, 7, 13, bytes.len() / 2, bytes.len() - 1] {
            let mut d = Decoder::for_provider(ProviderKind::Bedrock);
            let mut events = d.feed(&bytes[..split]).unwrap();
            events.extend(d.feed(&bytes[split..]).unwrap());
            assert_eq!(events.len(), 3, "split at {split}");
            assert_eq!(events[0].event.as_deref(), Some("messageStart"));
            assert_eq!(events[0].data, r#"{"role":"assistant"}"#);
            assert_eq!(events[1].event.as_deref(), Some("message_stop"));
            assert_eq!(events[2].event.as_deref(), Some("error"));
            let e: Value = serde_json::from_str(&events[2].data).unwrap();
            assert_eq!(e["error"]["type"], "throttlingException");
            assert_eq!(e["error"]["message"], "slow down");
            assert!(events[0].raw.starts_with(b"event: messageStart\n"));
        }
    }

    #[test]
    fn a_corrupt_frame_is_an_error() {
        let mut bytes = frame("event", (":event-type", "messageStart"), "{}");
        let n = bytes.len();
        bytes[n - 1] ^= 0xff; // message CRC
        let mut d = Decoder::for_provider(ProviderKind::Bedrock);
        assert!(d.feed(&bytes).is_err());
    }
}
