//! Tool calls that a model wrote as text instead of using the protocol's tool-call field, as
//! Qwen, Hermes and Llama fine-tunes often do when served without a matching chat template.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};
use turbo_core::tool::{ToolCall, ToolSpec};

use crate::json;
use crate::model::{next_call_id, parse_arguments};

/// `<tool_call>..</tool_call>` or `<function_call>..</function_call>`; an unclosed tag runs to
/// the end, since models often stop generating right before the closing tag.
static TAGGED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)<(?:tool_call|function_call)>(.*?)(?:</(?:tool_call|function_call)>|\z)")
        .expect("static regex compiles")
});

/// Markers some templates put before a raw call (Mistral, Llama 3.1).
const PREFIXES: &[&str] = &["[TOOL_CALLS]", "<|python_tag|>"];

/// Finds tool calls written as text: Qwen/Hermes `<tool_call>` tags (one or many),
/// `<function_call>` tags, fenced code blocks (```json, ```tool_call, plain ```), or a reply
/// that is a bare JSON object (or array of them). Accepted shapes: `{"name","arguments"}`,
/// `{"name","parameters"}`, `{"tool","arguments"|"args"|"parameters"}`,
/// `{"function":{"name","arguments"}}`, with arguments as an object or as JSON text.
///
/// Only calls naming one of `tools` count, so an ordinary JSON answer is not taken for a call.
/// Prose around tags or fences is ignored; JSON merely mentioned inside a sentence is not a
/// call, because a final answer often quotes what was done.
pub fn recover_tool_calls(text: &str, tools: &[ToolSpec]) -> Vec<ToolCall> {
    let known = |name: &str| tools.iter().any(|t| t.name == name);
    let tagged: Vec<&str> = TAGGED.captures_iter(text).filter_map(|c| c.get(1).map(|m| m.as_str())).collect();
    let calls = calls_in(&tagged, &known);
    if !calls.is_empty() {
        return calls;
    }
    let fenced: Vec<&str> = json::FENCE.captures_iter(text).filter_map(|c| c.get(2).map(|m| m.as_str())).collect();
    let calls = calls_in(&fenced, &known);
    if !calls.is_empty() {
        return calls;
    }
    let mut bare = text.trim();
    for prefix in PREFIXES {
        bare = bare.strip_prefix(prefix).unwrap_or(bare).trim_start();
    }
    calls_in(&[bare], &known)
}

fn calls_in(blocks: &[&str], known: &dyn Fn(&str) -> bool) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    for block in blocks {
        for value in json::values(block) {
            collect(value, known, &mut calls);
        }
    }
    calls
}

fn collect(value: Value, known: &dyn Fn(&str) -> bool, out: &mut Vec<ToolCall>) {
    match value {
        Value::Array(items) => {
            for item in items {
                collect(item, known, out);
            }
        }
        Value::Object(mut object) => {
            if let Some(Value::Array(items)) = object.remove("tool_calls") {
                for item in items {
                    collect(item, known, out);
                }
            } else if let Some(call) = call_from(object, known) {
                out.push(call);
            }
        }
        _ => {}
    }
}

fn call_from(mut object: Map<String, Value>, known: &dyn Fn(&str) -> bool) -> Option<ToolCall> {
    fn take_arguments(object: &mut Map<String, Value>) -> Value {
        ["arguments", "args", "parameters", "input"].iter().find_map(|key| object.remove(*key)).unwrap_or(Value::Null)
    }
    let (name, arguments) = match object.remove("function") {
        Some(Value::Object(mut function)) => {
            let name = function.remove("name")?;
            (name, take_arguments(&mut function))
        }
        Some(name @ Value::String(_)) => (name, take_arguments(&mut object)),
        Some(_) => return None,
        None => {
            let name = object.remove("name").or_else(|| object.remove("tool"))?;
            (name, take_arguments(&mut object))
        }
    };
    let name = name.as_str()?.to_owned();
    if !known(&name) {
        return None;
    }
    let arguments = parse_arguments(&name, arguments).ok()?;
    Some(ToolCall { id: next_call_id(), name, arguments })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tools() -> Vec<ToolSpec> {
        ["read_file", "list_dir"]
            .iter()
            .map(|name| ToolSpec {
                name: (*name).to_owned(),
                description: format!("{name} tool"),
                parameters: json!({"type": "object"}),
            })
            .collect()
    }

    fn names_and_args(calls: &[ToolCall]) -> Vec<(&str, &Value)> {
        calls.iter().map(|c| (c.name.as_str(), &c.arguments)).collect()
    }

    #[test]
    fn qwen_tool_call_tag_is_recovered() {
        let text = "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>";
        let calls = recover_tool_calls(text, &tools());
        assert_eq!(names_and_args(&calls), vec![("read_file", &json!({"path": "a.rs"}))]);
        assert!(calls[0].id.starts_with("call_"));
    }

    #[test]
    fn several_tool_call_tags_mixed_with_prose_are_all_recovered_in_order() {
        let text = "Let me look around first.\n<tool_call>{\"name\": \"list_dir\", \"arguments\": {\"path\": \".\"}}</tool_call>\nand then\n<tool_call>{\"name\": \"read_file\", \"arguments\": {\"path\": \"b\"}}</tool_call>";
        let calls = recover_tool_calls(text, &tools());
        assert_eq!(
            names_and_args(&calls),
            vec![("list_dir", &json!({"path": "."})), ("read_file", &json!({"path": "b"}))]
        );
    }

    #[test]
    fn unclosed_tool_call_tag_runs_to_the_end() {
        let text = "<tool_call>{\"name\": \"read_file\", \"arguments\": {\"path\": \"c\"}}";
        assert_eq!(recover_tool_calls(text, &tools()).len(), 1);
    }

    #[test]
    fn function_call_tag_with_parameters_is_recovered() {
        let text = "<function_call>{\"name\": \"read_file\", \"parameters\": {\"path\": \"d\"}}</function_call>";
        let calls = recover_tool_calls(text, &tools());
        assert_eq!(names_and_args(&calls), vec![("read_file", &json!({"path": "d"}))]);
    }

    #[test]
    fn fenced_json_block_after_prose_is_recovered() {
        let text = "I will read the file.\n```json\n{\"tool\": \"read_file\", \"args\": {\"path\": \"e\"}}\n```";
        let calls = recover_tool_calls(text, &tools());
        assert_eq!(names_and_args(&calls), vec![("read_file", &json!({"path": "e"}))]);
    }

    #[test]
    fn fenced_tool_call_and_plain_fences_are_recovered() {
        let tagged = "```tool_call\n{\"name\": \"list_dir\", \"arguments\": {}}\n```";
        assert_eq!(recover_tool_calls(tagged, &tools()).len(), 1);
        let plain = "```\n{\"name\": \"list_dir\", \"arguments\": {}}\n```";
        assert_eq!(recover_tool_calls(plain, &tools()).len(), 1);
    }

    #[test]
    fn bare_openai_style_function_object_with_string_arguments_is_recovered() {
        let text = r#"{"type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"f\"}"}}"#;
        let calls = recover_tool_calls(text, &tools());
        assert_eq!(names_and_args(&calls), vec![("read_file", &json!({"path": "f"}))]);
    }

    #[test]
    fn bare_array_and_mistral_prefix_are_recovered() {
        let text = r#"[TOOL_CALLS] [{"name": "read_file", "arguments": {"path": "g"}}, {"name": "list_dir", "arguments": {"path": "h"}}]"#;
        assert_eq!(recover_tool_calls(text, &tools()).len(), 2);
    }

    #[test]
    fn json_answer_that_is_not_a_call_is_ignored() {
        let answer = r#"{"name": "Alice", "arguments": {"age": 3}}"#;
        assert!(recover_tool_calls(answer, &tools()).is_empty());
        let summary = r#"{"summary": "read the file", "files": ["a.rs"]}"#;
        assert!(recover_tool_calls(summary, &tools()).is_empty());
    }

    #[test]
    fn call_mentioned_inside_a_sentence_is_not_recovered() {
        let text = r#"I already ran {"name": "read_file", "arguments": {"path": "a"}} and it worked."#;
        assert!(recover_tool_calls(text, &tools()).is_empty());
    }

    #[test]
    fn plain_prose_has_no_calls() {
        assert!(recover_tool_calls("The bug is in main.rs, line 3.", &tools()).is_empty());
    }

    #[test]
    fn call_with_arguments_that_are_not_json_is_skipped() {
        let text = r#"<tool_call>{"name": "read_file", "arguments": "path=a"}</tool_call>"#;
        assert!(recover_tool_calls(text, &tools()).is_empty());
    }
}
