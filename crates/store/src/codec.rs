//! Conversions between domain values and column values. Reading never panics: a value that does
//! not decode becomes [`Error::Corrupt`] naming the row.

use sea_orm::{QueryResult, TryGetable};
use serde::de::DeserializeOwned;

use turbo_core::agent::AgentRole;

use crate::error::{Error, Result};

/// A domain integer as a column value; Postgres has no unsigned types, hence i64.
pub(crate) fn to_i64(v: impl TryInto<i64> + Copy + std::fmt::Display, what: &str) -> Result<i64> {
    v.try_into()
        .map_err(|_| Error::Invalid { what: what.to_string(), reason: format!("{v} is larger than {}", i64::MAX) })
}

/// A column integer back as the domain's unsigned type.
pub(crate) fn from_i64<T: TryFrom<i64>>(v: i64, what: impl FnOnce() -> String) -> Result<T> {
    T::try_from(v).map_err(|_| Error::Corrupt { what: what(), reason: format!("{v} is out of range") })
}

/// A role column back as a role.
pub(crate) fn role(s: &str, what: impl FnOnce() -> String) -> Result<AgentRole> {
    s.parse().map_err(|e: turbo_core::Error| Error::Corrupt { what: what(), reason: e.to_string() })
}

pub(crate) fn opt_role(s: Option<&str>, what: impl FnOnce() -> String) -> Result<Option<AgentRole>> {
    s.map(|s| role(s, what)).transpose()
}

/// A column of a raw row; a value the driver cannot decode (e.g. invalid JSON text in SQLite)
/// becomes `Corrupt` instead of failing the whole query.
pub(crate) fn col<T: TryGetable>(row: &QueryResult, name: &str, what: impl FnOnce() -> String) -> Result<T> {
    row.try_get::<T>("", name).map_err(|e| Error::Corrupt { what: what(), reason: format!("column {name}: {e}") })
}

/// A JSON body back as its domain type.
pub(crate) fn body<T: DeserializeOwned>(v: serde_json::Value, what: impl FnOnce() -> String) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Corrupt { what: what(), reason: e.to_string() })
}

/// A domain value as a JSON body. Serializing the domain types only fails on a bug (e.g. a map
/// with non-string keys), which is still reported rather than panicking.
pub(crate) fn to_body<T: serde::Serialize>(v: &T, what: impl FnOnce() -> String) -> Result<serde_json::Value> {
    serde_json::to_value(v)
        .map_err(|e| Error::Invalid { what: what(), reason: format!("it does not serialize to JSON: {e}") })
}

/// Rejects floats a database column cannot hold the same way on both backends.
pub(crate) fn finite(v: f64, what: impl FnOnce() -> String) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::Invalid { what: what(), reason: format!("{v} is not a finite number") })
    }
}
