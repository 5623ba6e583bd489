//! What agents call: one turn of a tool-using conversation, in native or schema mode, and
//! structured (JSON) answers.

mod recover;
mod schema;

use serde_json::Value;
use turbo_core::tool::{ToolCall, ToolSpec};

pub use self::recover::recover_tool_calls;
use crate::error::{Error, Result};
use crate::json;
use crate::message::{ChatRequest, ChatResponse, Message, ResponseFormat};
use crate::model::ChatModel;
use crate::settings::ToolMode;

#[derive(Clone, Debug, PartialEq)]
pub enum Turn {
    /// Run these, append their results, and call `next_turn` again.
    ToolCalls(Vec<ToolCall>),
    /// The model's answer; the loop is over.
    Final(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TurnResult {
    pub turn: Turn,
    /// `response.message` is normalised to native form (calls in `tool_calls`, final text in
    /// `content`) so it can be appended to the history whatever the mode.
    pub response: ChatResponse,
    /// The calls were found in the reply's text rather than in the protocol's own field.
    pub recovered_from_text: bool,
}

/// Asks the model for its next step, in the model's `tool_mode`.
///
/// Native: `tools` go in the request; calls the model wrote as text are recovered
/// (`recover_tool_calls`). Schema: tools are described in an appended system message and the
/// answer is constrained to a JSON schema; earlier calls and results in `messages` are re-encoded
/// in that protocol. In schema mode `on_delta` receives the final answer once, as the raw JSON
/// stream is not fit to show. Without tools this is a plain chat call.
pub async fn next_turn(
    model: &dyn ChatModel,
    messages: &[Message],
    tools: &[ToolSpec],
    stream: bool,
    on_delta: Option<&(dyn Fn(&str) + Send + Sync)>,
) -> Result<TurnResult> {
    if tools.is_empty() || model.settings().tool_mode == ToolMode::Native {
        native_turn(model, messages, tools, stream, on_delta).await
    } else {
        schema_turn(model, messages, tools, stream, on_delta).await
    }
}

async fn native_turn(
    model: &dyn ChatModel,
    messages: &[Message],
    tools: &[ToolSpec],
    stream: bool,
    on_delta: Option<&(dyn Fn(&str) + Send + Sync)>,
) -> Result<TurnResult> {
    let req = ChatRequest { messages: messages.to_vec(), tools: tools.to_vec(), stream, ..ChatRequest::default() };
    let mut response = model.chat(req, on_delta).await?;
    if !response.message.tool_calls.is_empty() {
        return Ok(TurnResult {
            turn: Turn::ToolCalls(response.message.tool_calls.clone()),
            response,
            recovered_from_text: false,
        });
    }
    let recovered = recover_tool_calls(&response.message.content, tools);
    if !recovered.is_empty() {
        tracing::debug!(
            model = %response.model,
            calls = recovered.len(),
            "recovered tool calls written as text"
        );
        response.message.tool_calls = recovered.clone();
        return Ok(TurnResult { turn: Turn::ToolCalls(recovered), response, recovered_from_text: true });
    }
    Ok(TurnResult { turn: Turn::Final(response.message.content.clone()), response, recovered_from_text: false })
}

async fn schema_turn(
    model: &dyn ChatModel,
    messages: &[Message],
    tools: &[ToolSpec],
    stream: bool,
    on_delta: Option<&(dyn Fn(&str) + Send + Sync)>,
) -> Result<TurnResult> {
    let mut encoded = schema::encode_history(messages);
    encoded.push(Message::system(schema::instructions(tools)));
    let req = ChatRequest {
        messages: encoded,
        response_format: ResponseFormat::JsonSchema {
            name: schema::SCHEMA_NAME.to_owned(),
            schema: schema::answer_schema(tools),
        },
        stream,
        ..ChatRequest::default()
    };
    let mut response = model.chat(req, None).await?;
    let (turn, recovered_from_text) = schema::parse_reply(&response.message.content, tools)?;
    match &turn {
        Turn::ToolCalls(calls) => {
            response.message.tool_calls = calls.clone();
            response.message.content.clear();
        }
        Turn::Final(text) => {
            response.message.content = text.clone();
            if stream && let Some(sink) = on_delta {
                sink(text);
            }
        }
    }
    Ok(TurnResult { turn, response, recovered_from_text })
}

/// Asks for an answer matching `schema` (Ollama `format`, OpenAI `json_schema`) and parses it,
/// tolerating a ```json fence or prose around one JSON value. Only the top level is checked
/// (type object and its `required` fields); deeper validation is the caller's.
pub async fn structured(
    model: &dyn ChatModel,
    messages: &[Message],
    name: &str,
    schema: &Value,
) -> Result<(Value, ChatResponse)> {
    let req = ChatRequest {
        messages: messages.to_vec(),
        response_format: ResponseFormat::JsonSchema { name: name.to_owned(), schema: schema.clone() },
        ..ChatRequest::default()
    };
    let response = model.chat(req, None).await?;
    let content = &response.message.content;
    let value = json::extract(content)
        .ok_or_else(|| Error::invalid_output(format!("the {name} answer is not json"), content))?;
    check_top_level(schema, &value).map_err(|reason| Error::invalid_output(reason, content))?;
    Ok((value, response))
}

fn check_top_level(schema: &Value, value: &Value) -> std::result::Result<(), String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Ok(());
    }
    let Some(object) = value.as_object() else {
        return Err("expected a json object".to_owned());
    };
    let missing: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|field| !object.contains_key(*field))
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(format!("missing required fields: {}", missing.join(", "))) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn top_level_check_requires_object_and_required_fields() {
        let schema = json!({"type": "object", "required": ["plan", "risk"]});
        assert!(check_top_level(&schema, &json!({"plan": [], "risk": "low"})).is_ok());
        let missing = check_top_level(&schema, &json!({"plan": []})).expect_err("missing");
        assert!(missing.contains("risk"));
        assert!(check_top_level(&schema, &json!([1])).is_err());
        assert!(check_top_level(&json!({"type": "array"}), &json!([1])).is_ok());
    }
}
