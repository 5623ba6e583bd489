//! The one wire format of the bus: a versioned JSON envelope around every message,
//! `{"v": 1, "kind": "work_item", "body": {...}}`.
//!
//! `v` lets a process recognise a message from a newer or older release and refuse it with a
//! reason instead of misreading it; `kind` catches a message sent to the wrong subject. Decoding
//! never panics: every problem is a [`DecodeError`] that says what is wrong.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The envelope version this build writes and the only one it reads.
pub const VERSION: u64 = 1;

/// A message that travels in the envelope; `KIND` is its `kind` field.
pub trait BusMessage: Serialize + DeserializeOwned {
    const KIND: &'static str;
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    v: u64,
    kind: &'a str,
    body: &'a T,
}

/// Why bytes from the bus are not the message that was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {reason}; expected a JSON envelope {{\"v\": {VERSION}, \"kind\": ..., \"body\": ...}}")]
    Malformed { reason: String },
    #[error(
        "message from version {found}; this process speaks version {VERSION}: upgrade {}",
        if *found > VERSION { "this process" } else { "the sender" }
    )]
    Version { found: u64 },
    #[error("expected a {expected} message, got a {found} message; check who publishes to this subject")]
    WrongKind { expected: &'static str, found: String },
    #[error("invalid {kind} message: {reason}")]
    Body { kind: &'static str, reason: String },
}

/// Wraps `message` in the envelope.
pub fn encode<T: BusMessage>(message: &T) -> Result<Bytes, crate::Error> {
    serde_json::to_vec(&Envelope { v: VERSION, kind: T::KIND, body: message })
        .map(Bytes::from)
        .map_err(|e| crate::Error::Encode { kind: T::KIND, reason: e.to_string() })
}

/// Reads a `T` from an envelope, checking its version and kind first.
pub fn decode<T: BusMessage>(bytes: &[u8]) -> Result<T, DecodeError> {
    #[derive(Deserialize)]
    struct Loose {
        v: Option<serde_json::Value>,
        kind: Option<serde_json::Value>,
        body: Option<serde_json::Value>,
    }
    let loose: Loose = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed {
        reason: if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() {
            "not a JSON object".into()
        } else {
            format!("not JSON ({e})")
        },
    })?;
    let found = match loose.v {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| DecodeError::Malformed { reason: format!("version {v} is not a version number") })?,
        None => return Err(DecodeError::Malformed { reason: "no version field \"v\"".into() }),
    };
    if found != VERSION {
        return Err(DecodeError::Version { found });
    }
    let kind = match loose.kind {
        Some(serde_json::Value::String(kind)) => kind,
        Some(other) => return Err(DecodeError::Malformed { reason: format!("kind {other} is not a string") }),
        None => return Err(DecodeError::Malformed { reason: "no \"kind\" field".into() }),
    };
    if kind != T::KIND {
        return Err(DecodeError::WrongKind { expected: T::KIND, found: kind });
    }
    let body = loose.body.ok_or_else(|| DecodeError::Malformed { reason: "no \"body\" field".into() })?;
    serde_json::from_value(body).map_err(|e| DecodeError::Body { kind: T::KIND, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }

    impl BusMessage for Ping {
        const KIND: &'static str = "ping";
    }

    #[test]
    fn round_trips_in_the_envelope() {
        let bytes = encode(&Ping { n: 7 }).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, serde_json::json!({"v": 1, "kind": "ping", "body": {"n": 7}}));
        assert_eq!(decode::<Ping>(&bytes).unwrap(), Ping { n: 7 });
    }

    #[test]
    fn says_what_is_wrong_with_bad_input() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "malformed message: not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (b"{\"kind\": \"ping\", \"body\": {}}", "no version field"),
            (b"{\"v\": \"one\", \"kind\": \"ping\", \"body\": {}}", "is not a version number"),
            (
                b"{\"v\": 7, \"kind\": \"ping\", \"body\": {}}",
                "message from version 7; this process speaks version 1: upgrade this process",
            ),
            (
                b"{\"v\": 0, \"kind\": \"ping\", \"body\": {}}",
                "message from version 0; this process speaks version 1: upgrade the sender",
            ),
            (b"{\"v\": 1, \"kind\": \"pong\", \"body\": {}}", "expected a ping message, got a pong message"),
            (b"{\"v\": 1, \"kind\": 3, \"body\": {}}", "kind 3 is not a string"),
            (b"{\"v\": 1, \"kind\": \"ping\"}", "no \"body\" field"),
            (b"{\"v\": 1, \"kind\": \"ping\", \"body\": {\"n\": \"x\"}}", "invalid ping message: invalid type"),
        ];
        for (bytes, expected) in cases {
            let err = decode::<Ping>(bytes).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} does not contain {expected:?}");
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        for bytes in
            [&b""[..], b"\xff\xfe", b"null", b"{\"v\": -1}", b"{\"v\": 1e400}", b"{\"v\": 18446744073709551616}"]
        {
            assert!(decode::<Ping>(bytes).is_err());
        }
    }
}
