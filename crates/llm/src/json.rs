//! Finding JSON in model output, which often wraps it in a code fence or a sentence even when
//! asked not to.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// A fenced block: its language tag (possibly empty) and body.
pub(crate) static FENCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)```[ \t]*([A-Za-z0-9_-]*)[^\n]*\n(.*?)```").expect("static regex compiles"));

/// Every JSON value in `text` when it is nothing but whitespace-separated JSON values (models
/// sometimes put several calls in one block); empty when anything else is there.
pub(crate) fn values(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for value in serde_json::Deserializer::from_str(text.trim()).into_iter::<Value>() {
        match value {
            Ok(value) => out.push(value),
            Err(_) => return Vec::new(),
        }
    }
    out
}

/// The single JSON value a reply carries: the whole reply, else the first fenced block that is
/// JSON, else the first object or array embedded in prose.
pub(crate) fn extract(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return Some(value);
    }
    for fence in FENCE.captures_iter(text) {
        if let Some(body) = fence.get(2)
            && let Ok(value) = serde_json::from_str::<Value>(body.as_str().trim())
        {
            return Some(value);
        }
    }
    embedded(text)
}

/// The first `{..}` or `[..]` in `text` that parses, ignoring what follows it.
fn embedded(text: &str) -> Option<Value> {
    text.char_indices().filter(|(_, c)| *c == '{' || *c == '[').find_map(|(start, _)| {
        serde_json::Deserializer::from_str(&text[start..])
            .into_iter::<Value>()
            .next()
            .and_then(|r| r.ok())
            .filter(|v| v.is_object() || (v.is_array() && !v.as_array().is_some_and(Vec::is_empty)))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn extracts_whole_fenced_and_embedded_json() {
        assert_eq!(extract(" {\"a\": 1} "), Some(json!({"a": 1})));
        assert_eq!(extract("Here it is:\n```json\n{\"a\": 2}\n```\nDone."), Some(json!({"a": 2})));
        assert_eq!(extract("The answer is {\"a\": [3]} as requested."), Some(json!({"a": [3]})));
        assert_eq!(extract("no json [here] at all"), None);
    }

    #[test]
    fn values_reads_a_sequence_and_rejects_trailing_prose() {
        assert_eq!(values("{\"a\":1}\n{\"b\":2}").len(), 2);
        assert!(values("{\"a\":1} and more").is_empty());
    }
}
