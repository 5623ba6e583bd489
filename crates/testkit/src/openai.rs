//! The OpenAI-compatible API: `/v1/chat/completions` (SSE when streaming, with a usage chunk
//! when `stream_options.include_usage`), `/v1/models` and `/v1/embeddings`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::embed;
use crate::server::{
    Resolved, Shared, completion_chars, estimate, exhausted, json_response, missing_model, model_of, prompt_chars,
    split_content, status_response, with_type,
};

pub(crate) fn error(status: StatusCode, message: &str, code: &str) -> Response {
    json_response(
        status,
        &json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": code,
        }}),
    )
}

pub(crate) async fn chat(shared: &Shared, body: &Value) -> Response {
    let Some(requested) = model_of(body) else {
        return json_response(StatusCode::BAD_REQUEST, &missing_model());
    };
    let Some(def) = shared.model(requested) else {
        return error(StatusCode::NOT_FOUND, &format!("The model `{requested}` does not exist"), "model_not_found");
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (content, tool_calls, usage) = match shared.resolve(def).await {
        None => return exhausted(&def.name),
        Some(Resolved::Status(code, text)) => return status_response(code, text),
        Some(Resolved::Garbage(text)) => {
            let content_type = if stream { "text/event-stream" } else { "application/json" };
            return with_type(StatusCode::OK, content_type, text);
        }
        Some(Resolved::Answer { content, tool_calls, usage }) => (content, tool_calls, usage),
    };
    let (prompt_tokens, completion_tokens) =
        usage.unwrap_or_else(|| (estimate(prompt_chars(body)), estimate(completion_chars(&content, &tool_calls))));
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens.saturating_add(completion_tokens),
    });
    let id = format!("chatcmpl-{}", shared.next_id());
    let calls: Vec<(String, String, String)> = tool_calls
        .iter()
        .map(|(name, arguments)| (format!("call_{}", shared.next_id()), name.clone(), arguments.to_string()))
        .collect();
    let finish_reason = if calls.is_empty() { "stop" } else { "tool_calls" };
    if !stream {
        let mut message = json!({
            "role": "assistant",
            "content": if calls.is_empty() || !content.is_empty() { json!(content) } else { Value::Null },
        });
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
                })
                .collect();
        }
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": 0,
                "model": def.name,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": usage,
            }),
        );
    }
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": def.name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for piece in split_content(&content) {
        chunks.push(chunk(json!({ "content": piece }), None));
    }
    for (index, (call_id, name, arguments)) in calls.iter().enumerate() {
        // Arguments arrive in fragments, as from real servers, to exercise reassembly.
        let cut = arguments.char_indices().nth(arguments.chars().count() / 2).map_or(arguments.len(), |(at, _)| at);
        chunks.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": &arguments[..cut]}}]}),
            None,
        ));
        chunks
            .push(chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": &arguments[cut..]}}]}), None));
    }
    chunks.push(chunk(json!({}), Some(finish_reason)));
    if include_usage {
        chunks.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": def.name,
            "choices": [],
            "usage": usage,
        }));
    }
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    with_type(StatusCode::OK, "text/event-stream", body)
}

pub(crate) fn models(shared: &Shared) -> Response {
    let data: Vec<Value> = shared
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "turbo-testkit",
                "max_model_len": m.context_length,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `{"model", "input": string | [string]}` to `{"object": "list", "data": [{"object":
/// "embedding", "index", "embedding"}], "model", "usage"}`.
pub(crate) fn embeddings(shared: &Shared, body: &Value) -> Response {
    let Some(requested) = model_of(body) else {
        return json_response(StatusCode::BAD_REQUEST, &missing_model());
    };
    let Some(def) = shared.model(requested) else {
        return error(StatusCode::NOT_FOUND, &format!("The model `{requested}` does not exist"), "model_not_found");
    };
    let inputs = match embed::inputs(body) {
        Ok(inputs) if inputs.is_empty() => {
            return error(StatusCode::BAD_REQUEST, "'input' must not be empty", "invalid_value");
        }
        Ok(inputs) => inputs,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason, "invalid_value"),
    };
    let vectors = match embed::vectors(shared, def, &inputs) {
        Ok(vectors) => vectors,
        Err(response) => return *response,
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    let tokens = estimate(embed::input_chars(&inputs));
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": def.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}
