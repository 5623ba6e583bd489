//! Schema mode: tools offered through a system message and a JSON-schema-constrained answer,
//! for models whose native tool calling is missing or unreliable. Constrained decoding (Ollama's
//! `format`) makes even small models produce a well-formed call.

use serde_json::{Value, json};
use turbo_core::tool::{ToolCall, ToolSpec};

use super::Turn;
use super::recover::recover_tool_calls;
use crate::error::{Error, Result};
use crate::json;
use crate::message::{Message, Role};
use crate::model::{next_call_id, parse_arguments};

pub(crate) const SCHEMA_NAME: &str = "tool_call_or_final";

/// `anyOf` one `{"tool": <const name>, "arguments": <its parameters>}` per tool, or
/// `{"final": string}`.
pub(crate) fn answer_schema(tools: &[ToolSpec]) -> Value {
    let mut choices: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
                "required": ["tool", "arguments"],
            })
        })
        .collect();
    choices.push(json!({
        "type": "object",
        "properties": {"final": {"type": "string"}},
        "required": ["final"],
    }));
    json!({ "anyOf": choices })
}

pub(crate) fn instructions(tools: &[ToolSpec]) -> String {
    let mut text = String::from(
        "You can use tools. Reply with exactly one JSON object and nothing else.\n\
         To call a tool: {\"tool\": \"<tool name>\", \"arguments\": {<arguments matching the tool's parameters>}}\n\
         To give your final answer: {\"final\": \"<your answer>\"}\n\
         Call one tool at a time; its result comes in the next message.\n\nTools:\n",
    );
    for tool in tools {
        text.push_str(&format!(
            "\n## {}\n{}\nParameters (JSON schema): {}\n",
            tool.name, tool.description, tool.parameters
        ));
    }
    text
}

/// Rewrites a conversation kept in native form into the protocol the model speaks in schema
/// mode, so it sees its own earlier answers as the JSON it is asked to produce.
pub(crate) fn encode_history(messages: &[Message]) -> Vec<Message> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                out.extend(
                    m.tool_calls
                        .iter()
                        .map(|c| Message::assistant(json!({"tool": c.name, "arguments": c.arguments}).to_string())),
                );
            }
            Role::Assistant => {
                out.push(Message::assistant(json!({"final": m.content}).to_string()));
            }
            Role::Tool => {
                let name = m
                    .tool_name
                    .clone()
                    .or_else(|| called_name(&messages[..i], m.tool_call_id.as_deref()))
                    .unwrap_or_else(|| "tool".to_owned());
                out.push(Message::user(format!("tool result for {name}:\n{}", m.content)));
            }
            Role::System | Role::User => {
                out.push(Message { tool_calls: Vec::new(), tool_call_id: None, tool_name: None, ..m.clone() })
            }
        }
    }
    out
}

fn called_name(earlier: &[Message], id: Option<&str>) -> Option<String> {
    let id = id?;
    earlier.iter().rev().flat_map(|m| m.tool_calls.iter()).find(|c| c.id == id).map(|c| c.name.clone())
}

/// The turn a schema-mode reply encodes, and whether it had to be recovered from free text.
pub(crate) fn parse_reply(content: &str, tools: &[ToolSpec]) -> Result<(Turn, bool)> {
    if let Some(Value::Object(mut object)) = json::extract(content) {
        if let Some(tool) = object.get("tool").and_then(Value::as_str).map(str::to_owned) {
            if !tools.iter().any(|t| t.name == tool) {
                let known: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::invalid_output(
                    format!("unknown tool {tool}; the tools are {}", known.join(", ")),
                    content,
                ));
            }
            let arguments =
                ["arguments", "args", "parameters"].iter().find_map(|key| object.remove(*key)).unwrap_or(Value::Null);
            let arguments =
                parse_arguments(&tool, arguments).map_err(|e| Error::invalid_output(e.to_string(), content))?;
            let call = ToolCall { id: next_call_id(), name: tool, arguments };
            return Ok((Turn::ToolCalls(vec![call]), false));
        }
        match object.remove("final") {
            Some(Value::String(text)) => return Ok((Turn::Final(text), false)),
            Some(other) if !other.is_null() => return Ok((Turn::Final(other.to_string()), false)),
            _ => {}
        }
    }
    let recovered = recover_tool_calls(content, tools);
    if recovered.is_empty() {
        Err(Error::invalid_output("expected {\"tool\": .., \"arguments\": ..} or {\"final\": ..}", content))
    } else {
        Ok((Turn::ToolCalls(recovered), true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "read_file".into(),
            description: "Read a file".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }]
    }

    #[test]
    fn schema_offers_each_tool_and_a_final_answer() {
        let schema = answer_schema(&tools());
        let choices = schema["anyOf"].as_array().expect("anyOf");
        assert_eq!(choices.len(), 2);
        assert_eq!(choices[0]["properties"]["tool"]["const"], "read_file");
        assert_eq!(choices[0]["properties"]["arguments"], tools()[0].parameters);
        assert_eq!(choices[1]["required"], json!(["final"]));
    }

    #[test]
    fn history_is_re_encoded_into_the_json_protocol() {
        let call = ToolCall { id: "call_9".into(), name: "read_file".into(), arguments: json!({"path": "a"}) };
        let mut result = Message::tool_result(&call, "fn main() {}");
        result.tool_name = None;
        let history = vec![Message::user("fix it"), Message::assistant_tool_calls("", vec![call]), result];
        let encoded = encode_history(&history);
        assert_eq!(encoded[1].role, Role::Assistant);
        assert_eq!(
            serde_json::from_str::<Value>(&encoded[1].content).ok(),
            Some(json!({"tool": "read_file", "arguments": {"path": "a"}}))
        );
        assert!(encoded[1].tool_calls.is_empty());
        assert_eq!(encoded[2].role, Role::User);
        assert_eq!(encoded[2].content, "tool result for read_file:\nfn main() {}");
    }

    #[test]
    fn reply_parses_into_call_or_final_or_invalid_output() {
        let (turn, recovered) =
            parse_reply(r#"{"tool":"read_file","arguments":{"path":"x"}}"#, &tools()).expect("call");
        assert!(!recovered);
        assert!(matches!(turn, Turn::ToolCalls(ref c) if c[0].arguments == json!({"path": "x"})));
        let (turn, _) = parse_reply(r#"{"final":"done"}"#, &tools()).expect("final");
        assert_eq!(turn, Turn::Final("done".into()));
        let err = parse_reply(r#"{"tool":"rm_rf","arguments":{}}"#, &tools()).expect_err("unknown");
        assert!(err.to_string().contains("rm_rf"), "{err}");
        let err = parse_reply("I think the answer is 4", &tools()).expect_err("prose");
        assert!(matches!(err, Error::InvalidOutput { .. }));
    }

    #[test]
    fn non_json_reply_with_a_tagged_call_is_recovered() {
        let text = r#"<tool_call>{"name":"read_file","arguments":{"path":"y"}}</tool_call>"#;
        let (turn, recovered) = parse_reply(text, &tools()).expect("recovered");
        assert!(recovered);
        assert!(matches!(turn, Turn::ToolCalls(ref c) if c.len() == 1));
    }
}
