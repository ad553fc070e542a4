//! Cettia events: `{id, type, data, reply}` as JSON text, or as MessagePack when the event holds
//! binary data anywhere.
//!
//! Event data is a [`Value`] (MessagePack's data model, a superset of JSON's with `bin`), so one
//! type carries both encodings. JSON maps keep their key order. Ids are numbers (the JavaScript
//! client) or strings (the reference servers); they are kept as they came and echoed unchanged.
use bytes::Bytes;
use bytestring::ByteString;
pub use rmpv::Value;
use thiserror::Error;

/// One event, either direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique per sender and direction; a number or a string.
    pub id: Value,
    /// The event name (`type` on the wire).
    pub kind: String,
    pub data: Value,
    /// The sender wants a `reply` event for this one.
    pub reply: bool,
}

/// A transport message: text (a JSON event, a handshake) or binary (a MessagePack event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMessage {
    Text(ByteString),
    Binary(Bytes),
}

impl WireMessage {
    pub fn len(&self) -> usize {
        match self {
            WireMessage::Text(t) => t.len(),
            WireMessage::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an event could not be read or written.
#[derive(Debug, Error, PartialEq)]
pub enum EventError {
    #[error("event is not valid JSON: {0}")]
    Json(String),
    #[error("event is not valid MessagePack: {0}")]
    MsgPack(String),
    #[error("an event must be a map with a string `type`, an `id` and a boolean `reply`")]
    Shape,
    #[error("event data cannot be written as JSON: {0}")]
    Encode(String),
}

impl Event {
    /// An event without reply request.
    pub fn new(id: impl Into<Value>, kind: impl Into<String>, data: Value) -> Self {
        Event {
            id: id.into(),
            kind: kind.into(),
            data,
            reply: false,
        }
    }

    /// Read a text message. Trailing whitespace is tolerated (form-posting fallbacks add CRLF).
    pub fn decode_text(text: &str) -> Result<Event, EventError> {
        let value: Value =
            serde_json::from_str(text.trim()).map_err(|e| EventError::Json(e.to_string()))?;
        Event::from_value(value)
    }

    /// Read a binary message (MessagePack). msgpack-lite's typed-array extensions become bytes.
    pub fn decode_binary(bytes: &[u8]) -> Result<Event, EventError> {
        let mut reader = bytes;
        let value = rmpv::decode::read_value_with_max_depth(&mut reader, 64)
            .map_err(|e| EventError::MsgPack(e.to_string()))?;
        if !reader.is_empty() {
            return Err(EventError::MsgPack("trailing bytes after the event".into()));
        }
        Event::from_value(typed_arrays_to_binary(value))
    }

    fn from_value(value: Value) -> Result<Event, EventError> {
        let Value::Map(entries) = value else {
            return Err(EventError::Shape);
        };
        let mut id = None;
        let mut kind = None;
        let mut data = Value::Nil;
        let mut reply = false;
        for (key, value) in entries {
            match key.as_str() {
                Some("id") => id = Some(value),
                Some("type") => match value {
                    Value::String(s) => kind = s.into_str(),
                    _ => return Err(EventError::Shape),
                },
                Some("data") => data = value,
                Some("reply") => reply = value.as_bool().ok_or(EventError::Shape)?,
                _ => {}
            }
        }
        match (id, kind) {
            (Some(id), Some(kind)) if id.is_str() || id.is_number() => Ok(Event {
                id,
                kind,
                data,
                reply,
            }),
            _ => Err(EventError::Shape),
        }
    }

    /// The wire form: MessagePack if the data holds binary anywhere, JSON text otherwise.
    pub fn encode(&self) -> Result<WireMessage, EventError> {
        if contains_binary(&self.data) {
            Ok(WireMessage::Binary(Bytes::from(self.to_msgpack())))
        } else {
            self.to_json().map(|t| WireMessage::Text(t.into()))
        }
    }

    /// The JSON text form, keys in the order `id, type, data, reply`.
    pub fn to_json(&self) -> Result<String, EventError> {
        let mut out = String::from("{\"id\":");
        out.push_str(&json(&self.id)?);
        out.push(',');
        out.push_str(&json_tail(&self.kind, &json(&self.data)?, self.reply));
        Ok(out)
    }

    /// The MessagePack form: a map `{id, type, data, reply}` with binary as `bin`.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let map = Value::Map(vec![
            (Value::from("id"), self.id.clone()),
            (Value::from("type"), Value::from(self.kind.as_str())),
            (Value::from("data"), self.data.clone()),
            (Value::from("reply"), Value::from(self.reply)),
        ]);
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &map);
        out
    }
}

/// The part of a JSON event after its id: `"type":..,"data":<data_json>,"reply":..}`. Shared by
/// every recipient of a topic message; each prefixes its own `{"id":..,`.
pub fn json_tail(kind: &str, data_json: &str, reply: bool) -> String {
    let kind = serde_json::to_string(kind).unwrap_or_else(|_| "\"\"".into());
    format!("\"type\":{kind},\"data\":{data_json},\"reply\":{reply}}}")
}

/// `value` as JSON text; binary and non-string map keys cannot be written.
pub fn json(value: &Value) -> Result<String, EventError> {
    if contains_binary(value) {
        return Err(EventError::Encode("binary data needs MessagePack".into()));
    }
    serde_json::to_string(value).map_err(|e| EventError::Encode(e.to_string()))
}

/// Read JSON text into a [`Value`].
pub fn from_json(text: &str) -> Result<Value, EventError> {
    serde_json::from_str(text).map_err(|e| EventError::Json(e.to_string()))
}

/// Whether `value` holds binary (`bin` or an extension) anywhere.
pub fn contains_binary(value: &Value) -> bool {
    match value {
        Value::Binary(_) | Value::Ext(..) => true,
        Value::Array(items) => items.iter().any(contains_binary),
        Value::Map(entries) => entries
            .iter()
            .any(|(k, v)| contains_binary(k) || contains_binary(v)),
        _ => false,
    }
}

/// msgpack-lite writes typed arrays as extensions 0x11..=0x1D (0x1B and 0x1C are not byte
/// views); their payload is the raw bytes, which is what an application means by binary.
fn typed_arrays_to_binary(value: Value) -> Value {
    match value {
        Value::Ext(ty, bytes) if (0x11..=0x1D).contains(&ty) && ty != 0x1B && ty != 0x1C => {
            Value::Binary(bytes)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(typed_arrays_to_binary).collect())
        }
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k, typed_arrays_to_binary(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_round_trip_keeps_ids_and_key_order() {
        let e = Event::decode_text(
            r#"{"id":3,"type":"echo","data":{"b":1,"a":[true,null,1.5]},"reply":true}"#,
        )
        .unwrap();
        assert_eq!(e.id, Value::from(3));
        assert!(e.reply);
        assert_eq!(
            e.to_json().unwrap(),
            r#"{"id":3,"type":"echo","data":{"b":1,"a":[true,null,1.5]},"reply":true}"#
        );
        let s = Event::decode_text("{\"id\":\"7\",\"type\":\"x\",\"reply\":false}\r\n").unwrap();
        assert_eq!(s.id, Value::from("7"));
        assert_eq!(s.data, Value::Nil);
    }

    #[test]
    fn bad_events_are_errors() {
        assert!(matches!(
            Event::decode_text("nope"),
            Err(EventError::Json(_))
        ));
        assert_eq!(Event::decode_text("[1]"), Err(EventError::Shape));
        assert_eq!(
            Event::decode_text(r#"{"id":1,"reply":false}"#),
            Err(EventError::Shape)
        );
        assert_eq!(
            Event::decode_text(r#"{"id":{},"type":"a"}"#),
            Err(EventError::Shape)
        );
        assert!(matches!(
            Event::decode_binary(&[0x92, 0x01]),
            Err(EventError::MsgPack(_))
        ));
    }

    #[test]
    fn binary_data_goes_out_as_msgpack_bin() {
        let e = Event::new("2", "echo", Value::Binary(b"data".to_vec()));
        let WireMessage::Binary(bytes) = e.encode().unwrap() else {
            panic!("binary expected")
        };
        // The bytes the reference server writes for this event (spec 1.4).
        assert_eq!(
            &bytes[..],
            &[
                0x84, 0xa2, 0x69, 0x64, 0xa1, 0x32, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa4, 0x65, 0x63,
                0x68, 0x6f, 0xa4, 0x64, 0x61, 0x74, 0x61, 0xc4, 0x04, 0x64, 0x61, 0x74, 0x61, 0xa5,
                0x72, 0x65, 0x70, 0x6c, 0x79, 0xc2
            ]
        );
        assert_eq!(Event::decode_binary(&bytes).unwrap(), e);
    }

    #[test]
    fn typed_array_extensions_become_bytes() {
        let mut buf = Vec::new();
        let map = Value::Map(vec![
            (Value::from("id"), Value::from(1)),
            (Value::from("type"), Value::from("echo")),
            (Value::from("data"), Value::Ext(0x12, vec![1, 2])),
            (Value::from("reply"), Value::from(false)),
        ]);
        rmpv::encode::write_value(&mut buf, &map).unwrap();
        assert_eq!(
            Event::decode_binary(&buf).unwrap().data,
            Value::Binary(vec![1, 2])
        );
    }

    proptest! {
        // What a stranger POSTs or sends on a socket: an error or an event, never a panic.
        #[test]
        fn any_text_or_bytes_decode_or_fail_cleanly(
            text in ".*",
            near in r#"\{("(id|type|data|reply)":([0-9.e+-]{0,24}|"[^"]{0,8}"|true|null|\[\]|\{\}),?){0,5}\}"#,
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = Event::decode_text(&text);
            let _ = Event::decode_text(&near);
            let _ = Event::decode_binary(&bytes);
        }
    }
}
