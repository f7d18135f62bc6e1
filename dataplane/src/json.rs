//! JSON written out as bytes: serde_json's writer into a buffer, about twice as fast as a
//! `Value`'s `Display` (which goes through `fmt::Write` piece by piece) for the same bytes.
//! For `Value`s and the typed structs that derive `Serialize` (their keys are all strings).
//!
//! [`Object`] and [`Array`] write JSON field by field for the bodies a translation builds
//! on every request: their keys are names known to need no escaping, written as they
//! are, where serde would escape each key byte by byte.

use bytes::Bytes;
use serde::Serialize;

/// `v` as compact JSON.
pub fn to_vec(v: &(impl Serialize + ?Sized)) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(&mut out, v);
    out
}

/// `v` as compact JSON.
pub fn bytes(v: &(impl Serialize + ?Sized)) -> Bytes {
    Bytes::from(to_vec(v))
}

/// A JSON object being written into a buffer; the closing brace is written when it is
/// dropped, so the borrow checker keeps nested objects and arrays in order.
pub struct Object<'w> {
    out: &'w mut Vec<u8>,
    first: bool,
}

impl<'w> Object<'w> {
    pub fn new(out: &'w mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Starts the field `key` (a name needing no escaping) and returns the buffer to write
    /// its value into.
    pub fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(needs_no_escaping(key), "{key:?}");
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// The field `key` with `json`, JSON text, as its value.
    pub fn raw(&mut self, key: &'static str, json: &str) {
        self.key(key).extend_from_slice(json.as_bytes());
    }

    /// The field `key` with the string `s`, which needs no escaping.
    pub fn plain(&mut self, key: &'static str, s: &str) {
        debug_assert!(needs_no_escaping(s), "{s:?}");
        let out = self.key(key);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }

    /// The field `key` with `v` serialised.
    pub fn value(&mut self, key: &'static str, v: &(impl Serialize + ?Sized)) {
        write(self.key(key), v);
    }

    pub fn object(&mut self, key: &'static str) -> Object<'_> {
        Object::new(self.key(key))
    }

    pub fn array(&mut self, key: &'static str) -> Array<'_> {
        Array::new(self.key(key))
    }
}

impl Drop for Object<'_> {
    fn drop(&mut self) {
        self.out.push(b'}');
    }
}

/// A JSON array being written into a buffer; closed when dropped, as [`Object`] is.
pub struct Array<'w> {
    out: &'w mut Vec<u8>,
    first: bool,
}

impl<'w> Array<'w> {
    pub fn new(out: &'w mut Vec<u8>) -> Self {
        out.push(b'[');
        Self { out, first: true }
    }

    /// Starts the next item and returns the buffer to write it into.
    pub fn item(&mut self) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out
    }

    pub fn object(&mut self) -> Object<'_> {
        Object::new(self.item())
    }
}

impl Drop for Array<'_> {
    fn drop(&mut self) {
        self.out.push(b']');
    }
}

/// `v` serialised onto the end of `out`. `Value`s and the wire structs always serialise
/// (their map keys are strings), and writing to a `Vec` cannot fail.
pub fn write(out: &mut Vec<u8>, v: &(impl Serialize + ?Sized)) {
    let written = serde_json::to_writer(out, v);
    debug_assert!(written.is_ok(), "cannot write JSON: {written:?}");
}

/// Whether `s` can go between quotes as it is: no quote, backslash or control character.
fn needs_no_escaping(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_bytes_are_displays() {
        let v = json!({"a": [1, 2.5, "é\n\"", null, true], "b": {"c": {}}, "d": []});
        assert_eq!(to_vec(&v), v.to_string().into_bytes());
    }

    #[test]
    fn objects_and_arrays_written_field_by_field() {
        let mut out = Vec::new();
        {
            let mut o = Object::new(&mut out);
            o.plain("role", "user");
            o.raw("n", "1.5");
            o.value("text", "é\n\"");
            {
                let mut a = o.array("list");
                a.item().extend_from_slice(b"null");
                a.object().plain("k", "v");
                let _empty = a.object();
            }
            let _empty = o.array("none");
        }
        let expected =
            r#"{"role":"user","n":1.5,"text":"é\n\"","list":[null,{"k":"v"},{}],"none":[]}"#;
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    }
}
