//! Checking a model's arguments against a tool's JSON schema, and reading them inside tools.
//!
//! Only the subset of JSON schema the tools declare is understood: an object with typed
//! properties (`string`, `integer`, `number`, `boolean`, `array`, `object`), `minimum` on
//! integers, `required` and `additionalProperties: false`. Reasons name the key and the expected
//! type so the model can fix its call.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Builds the schema of a tool's arguments: an object that allows no other keys.
pub(crate) fn object(properties: Value, required: &[&str]) -> Value {
    serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Validates `args` against `schema`. `null` is taken as `{}` because some providers send it
/// for tools without arguments; `null` for an optional key is taken as absent for the same reason.
pub(crate) fn validate(tool: &str, schema: &Value, args: &Value) -> Result<()> {
    let empty = Map::new();
    let args = match args {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            return Err(Error::bad_args(
                tool,
                format!("the arguments must be a JSON object of named arguments, got {}", describe(other)),
            ));
        }
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));

    for (key, value) in args {
        let Some(property) = properties.and_then(|p| p.get(key)) else {
            if closed {
                return Err(Error::bad_args(tool, format!("unknown argument '{key}': {}", known_keys(properties))));
            }
            continue;
        };
        // Absent for an optional key; reported as missing below for a required one.
        if value.is_null() {
            continue;
        }
        check_value(tool, key, property, value)?;
    }
    for key in &required {
        if args.get(*key).is_none_or(Value::is_null) {
            let expected = properties
                .and_then(|p| p.get(*key))
                .and_then(|p| p.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("value");
            return Err(Error::bad_args(tool, format!("missing required argument '{key}' ({expected})")));
        }
    }
    Ok(())
}

fn check_value(tool: &str, key: &str, property: &Value, value: &Value) -> Result<()> {
    let Some(expected) = property.get("type").and_then(Value::as_str) else {
        return Ok(());
    };
    if !has_type(value, expected) {
        return Err(Error::bad_args(
            tool,
            format!("argument '{key}' must be {}, got {}", article(expected), describe(value)),
        ));
    }
    if let (Some(minimum), Some(n)) = (property.get("minimum").and_then(Value::as_i64), value.as_i64())
        && n < minimum
    {
        return Err(Error::bad_args(tool, format!("argument '{key}' must be at least {minimum}, got {n}")));
    }
    if let (Some(items), Some(elements)) = (property.get("items"), value.as_array()) {
        for (i, element) in elements.iter().enumerate() {
            check_value(tool, &format!("{key}[{i}]"), items, element)?;
        }
    }
    Ok(())
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        // A type this checker does not know is the tool's business, not the model's.
        _ => true,
    }
}

fn article(ty: &str) -> String {
    match ty {
        "integer" | "array" | "object" => format!("an {ty}"),
        _ => format!("a {ty}"),
    }
}

/// "a string (\"abc\")": the kind and a short excerpt, so the model sees what it sent.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let mut text = value.to_string();
    if text.len() > 40 {
        let cut = (0..=40).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    format!("{kind} ({text})")
}

fn known_keys(properties: Option<&Map<String, Value>>) -> String {
    match properties {
        Some(p) if !p.is_empty() => {
            // Sorted so the message does not depend on serde_json's map ordering feature.
            let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
            keys.sort_unstable();
            format!("the accepted arguments are {}", keys.join(", "))
        }
        _ => "this tool takes no arguments".to_owned(),
    }
}

/// A tool's arguments, read with errors that name the key. Tools use this even after
/// validation because they can also be called directly.
pub(crate) struct Args<'a> {
    tool: &'static str,
    value: &'a Value,
}

impl<'a> Args<'a> {
    pub(crate) fn new(tool: &'static str, value: &'a Value) -> Self {
        Self { tool, value }
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> Error {
        Error::bad_args(self.tool, format!("argument '{key}' must be {}, got {}", article(expected), describe(got)))
    }

    pub(crate) fn string(&self, key: &str) -> Result<&'a str> {
        self.opt_string(key)?
            .ok_or_else(|| Error::bad_args(self.tool, format!("missing required argument '{key}' (string)")))
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "string", other)),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "boolean", other)),
        }
    }

    pub(crate) fn array(&self, key: &str) -> Result<&'a [Value]> {
        match self.present(key) {
            None => Err(Error::bad_args(self.tool, format!("missing required argument '{key}' (array)"))),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.wrong(key, "array", other)),
        }
    }

    pub(crate) fn opt_array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.wrong(key, "array", other)),
        }
    }

    pub(crate) fn opt_object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(self.wrong(key, "object", other)),
        }
    }

    /// A positive integer (every integer argument of these tools is a count or a line number).
    pub(crate) fn opt_positive(&self, key: &str) -> Result<Option<u64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(0) => Err(Error::bad_args(self.tool, format!("argument '{key}' must be at least 1, got 0"))),
                Some(n) => Ok(Some(n)),
                None => Err(self.wrong(key, "integer", v)),
            },
        }
    }
}

/// Checks that `args[key]`, when given, is one of `choices`; an operation outside them is
/// [`Error::UnknownOperation`], another key a bad argument naming the choices.
pub(crate) fn one_of(tool: &str, args: &Value, key: &str, choices: &[&str]) -> Result<()> {
    let Some(given) = args.get(key).and_then(Value::as_str) else { return Ok(()) };
    if choices.contains(&given) {
        return Ok(());
    }
    if key == "operation" {
        return Err(Error::UnknownOperation {
            tool: tool.to_string(),
            operation: given.to_string(),
            available: choices.iter().map(|c| c.to_string()).collect(),
        });
    }
    Err(Error::bad_args(tool, format!("unknown {key} '{given}': use one of {}", choices.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        object(
            json!({
                "path": {"type": "string"},
                "max": {"type": "integer", "minimum": 1},
                "deep": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
            }),
            &["path"],
        )
    }

    fn reason(args: Value) -> String {
        match validate("t", &schema(), &args).unwrap_err() {
            Error::BadArguments { reason, .. } => reason,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn accepts_well_formed_arguments_and_null_optionals() {
        validate("t", &schema(), &json!({"path": "a", "max": 3, "deep": true, "tags": ["x"]})).unwrap();
        validate("t", &schema(), &json!({"path": "a", "max": null})).unwrap();
    }

    #[test]
    fn names_the_missing_key_and_its_type() {
        assert_eq!(reason(json!({})), "missing required argument 'path' (string)");
        assert_eq!(reason(json!({"path": null})), "missing required argument 'path' (string)");
    }

    #[test]
    fn names_the_key_with_the_wrong_type() {
        assert_eq!(reason(json!({"path": 5})), "argument 'path' must be a string, got a number (5)");
        assert_eq!(
            reason(json!({"path": "a", "max": "10"})),
            "argument 'max' must be an integer, got a string (\"10\")"
        );
        assert_eq!(
            reason(json!({"path": "a", "tags": ["x", 1]})),
            "argument 'tags[1]' must be a string, got a number (1)"
        );
    }

    #[test]
    fn refuses_unknown_keys_listing_the_known_ones() {
        assert_eq!(
            reason(json!({"path": "a", "pth": "b"})),
            "unknown argument 'pth': the accepted arguments are deep, max, path, tags"
        );
    }

    #[test]
    fn enforces_integer_minimum() {
        assert_eq!(reason(json!({"path": "a", "max": 0})), "argument 'max' must be at least 1, got 0");
    }

    #[test]
    fn refuses_non_objects_but_takes_null_as_empty() {
        assert!(reason(json!("path=a")).starts_with("the arguments must be a JSON object"));
        let none = object(json!({}), &[]);
        validate("t", &none, &Value::Null).unwrap();
    }

    #[test]
    fn args_reader_reports_wrong_types_and_zero() {
        let value = json!({"s": 1, "n": 0, "b": "yes"});
        let args = Args::new("t", &value);
        assert!(args.string("s").is_err());
        assert!(args.string("absent").is_err());
        assert!(args.opt_positive("n").is_err());
        assert!(args.opt_bool("b").is_err());
        assert_eq!(args.opt_string("absent").unwrap(), None);
    }
}
