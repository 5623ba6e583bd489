//! Conversions between the generated messages and the domain types of [`turbo_core`].
//!
//! Every model has `impl From<domain::X> for proto::X` (never fails, loses nothing) and
//! `impl TryFrom<proto::X> for domain::X` (fails with an [`Error`] naming the field). A
//! `TryFrom` checks structure first (ids are UUIDs, required messages are set, enums are
//! known, JSON parses, timestamps and durations are in range) and then calls the domain's
//! `validate()` where the type has one, so what comes out satisfies every domain constraint.
//!
//! Enums travel as `i32` in prost messages; [`ProtoEnum`] converts them with the field name
//! at hand. Free-form JSON maps travel as JSON text in `*_json` fields; an empty string
//! reads as an empty object (or `null` for a free JSON value).
//!
//! Knowledge errors are not conversion errors: [`knowledge_error_to_status`] and
//! [`knowledge_error_from_status`] are the one mapping between
//! `turbo_core::knowledge::KnowledgeError` and a status, used by the knowledge service and its
//! client alike.
//!
//! Durations: `std::time::Duration` values beyond `i64::MAX` seconds (about 292 billion
//! years) are clamped to it; everything else is exact, nanos included.

mod agent;
mod config;
mod enums;
mod event;
mod knowledge;
mod project;
mod task;
mod tool;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use enums::ProtoEnum;
pub use knowledge::{
    DEFAULT_SEARCH_LIMIT, KNOWLEDGE_ERROR_DOMAIN, is_knowledge_status, knowledge_code, knowledge_error_from_status,
    knowledge_error_to_status, knowledge_kind,
};

use crate::Error;

/// A domain timestamp as a `google.protobuf.Timestamp`, exact to the nanosecond.
pub fn timestamp_to_proto(t: DateTime<Utc>) -> prost_types::Timestamp {
    // Below 2e9 even on a leap second, so it fits an i32.
    let nanos = i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(i32::MAX);
    prost_types::Timestamp { seconds: t.timestamp(), nanos }
}

/// A `google.protobuf.Timestamp` as a domain timestamp; out-of-range values name `field`.
pub fn timestamp_from_proto(field: &str, t: prost_types::Timestamp) -> Result<DateTime<Utc>, Error> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or_else(|| Error::BadTimestamp { field: field.to_string() })
}

/// A domain duration as a `google.protobuf.Duration`, exact to the nanosecond (clamped beyond `i64::MAX` seconds).
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A `google.protobuf.Duration` as a domain duration; negative or unnormalized values name `field`.
pub fn duration_from_proto(field: &str, d: prost_types::Duration) -> Result<Duration, Error> {
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Ok(Duration::new(secs, nanos)),
        _ => Err(Error::BadDuration { field: field.to_string() }),
    }
}

/// The value of a required message field, or [`Error::Missing`] naming it.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, Error> {
    value.ok_or_else(|| Error::Missing { field: field.to_string() })
}

/// A typed id from its UUID text; empty text is [`Error::Missing`], anything else unparsable [`Error::BadId`].
pub fn id_from_proto<I: From<Uuid>>(field: &str, value: &str) -> Result<I, Error> {
    if value.is_empty() {
        return Err(Error::Missing { field: field.to_string() });
    }
    Uuid::from_str(value).map(I::from).map_err(|_| Error::BadId { field: field.to_string(), value: value.to_string() })
}

/// An optional typed id: empty text is None, anything else as [`id_from_proto`].
pub fn opt_id_from_proto<I: From<Uuid>>(field: &str, value: &str) -> Result<Option<I>, Error> {
    if value.is_empty() { Ok(None) } else { id_from_proto(field, value).map(Some) }
}

/// A JSON object as the text of a `*_json` field.
pub fn json_map_to_proto(map: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(map).expect("a JSON map with string keys always serializes")
}

/// The JSON object in a `*_json` field; empty text is an empty object.
pub fn json_map_from_proto(field: &str, text: &str) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match json_value_from_proto(field, text)? {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(Error::BadJson {
            field: field.to_string(),
            reason: format!("expected a JSON object, got {}", json_kind(&other)),
        }),
    }
}

/// Any JSON value as the text of a `*_json` field.
pub fn json_value_to_proto(value: &serde_json::Value) -> String {
    value.to_string()
}

/// The JSON value in a `*_json` field; empty text is `null`.
pub fn json_value_from_proto(field: &str, text: &str) -> Result<serde_json::Value, Error> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| Error::BadJson { field: field.to_string(), reason: e.to_string() })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Optional timestamp field.
fn opt_timestamp(field: &str, t: Option<prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>, Error> {
    t.map(|t| timestamp_from_proto(field, t)).transpose()
}

/// Required timestamp field.
fn req_timestamp(field: &str, t: Option<prost_types::Timestamp>) -> Result<DateTime<Utc>, Error> {
    timestamp_from_proto(field, required(field, t)?)
}

/// Required duration field.
fn req_duration(field: &str, d: Option<prost_types::Duration>) -> Result<Duration, Error> {
    duration_from_proto(field, required(field, d)?)
}

/// Runs the domain's validation, turning broken constraints into [`Error::Invalid`].
fn validated<T: turbo_core::Validate>(value: T) -> Result<T, Error> {
    value.validate()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_nanos_and_reject_bad_ones() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(timestamp_from_proto("at", timestamp_to_proto(t)).unwrap(), t);
        let bad = prost_types::Timestamp { seconds: 0, nanos: -1 };
        assert_eq!(timestamp_from_proto("at", bad), Err(Error::BadTimestamp { field: "at".into() }));
        let huge = prost_types::Timestamp { seconds: i64::MAX, nanos: 0 };
        assert!(timestamp_from_proto("at", huge).is_err());
    }

    #[test]
    fn durations_reject_negative_and_unnormalized_values() {
        let d = Duration::new(90, 5);
        assert_eq!(duration_from_proto("d", duration_to_proto(d)).unwrap(), d);
        for (seconds, nanos) in [(-1, 0), (0, -1), (1, 1_000_000_000)] {
            assert!(duration_from_proto("d", prost_types::Duration { seconds, nanos }).is_err());
        }
    }

    #[test]
    fn json_fields_parse_objects_only() {
        assert_eq!(json_map_from_proto("c", "").unwrap(), serde_json::Map::new());
        assert!(
            json_map_from_proto("c", "[1]").unwrap_err().to_string().contains("expected a JSON object, got an array")
        );
        assert!(matches!(json_map_from_proto("c", "{"), Err(Error::BadJson { .. })));
        assert_eq!(json_value_from_proto("a", "").unwrap(), serde_json::Value::Null);
    }

    #[test]
    fn ids_distinguish_missing_from_malformed() {
        assert!(matches!(id_from_proto::<turbo_core::ids::TaskId>("task_id", ""), Err(Error::Missing { .. })));
        assert!(matches!(id_from_proto::<turbo_core::ids::TaskId>("task_id", "x"), Err(Error::BadId { .. })));
    }
}
