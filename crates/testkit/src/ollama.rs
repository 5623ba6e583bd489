//! Ollama's native API: `/api/chat` (NDJSON stream by default, like the real server),
//! `/api/show`, `/api/tags` and `/api/embed`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::embed;
use crate::server::{
    Resolved, Shared, completion_chars, estimate, eval_duration, exhausted, json_response, missing_model, model_of,
    prompt_chars, split_content, status_response, with_type,
};

const CREATED_AT: &str = "2025-01-01T00:00:00Z";

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn not_found(model: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("model '{model}' not found"))
}

pub(crate) async fn chat(shared: &Shared, body: &Value) -> Response {
    let Some(requested) = model_of(body) else {
        return json_response(StatusCode::BAD_REQUEST, &missing_model());
    };
    let Some(def) = shared.model(requested) else {
        return not_found(requested);
    };
    // Real Ollama streams unless told otherwise.
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let (content, tool_calls, usage) = match shared.resolve(def).await {
        None => return exhausted(&def.name),
        Some(Resolved::Status(code, text)) => return status_response(code, text),
        Some(Resolved::Garbage(text)) => {
            let content_type = if stream { "application/x-ndjson" } else { "application/json; charset=utf-8" };
            return with_type(StatusCode::OK, content_type, text);
        }
        Some(Resolved::Answer { content, tool_calls, usage }) => (content, tool_calls, usage),
    };
    let (prompt_tokens, completion_tokens) =
        usage.unwrap_or_else(|| (estimate(prompt_chars(body)), estimate(completion_chars(&content, &tool_calls))));
    let calls: Vec<Value> = tool_calls
        .iter()
        .map(|(name, arguments)| json!({"function": {"name": name, "arguments": arguments}}))
        .collect();
    let eval = eval_duration(completion_tokens);
    let prompt_eval = std::time::Duration::from_millis(1) * prompt_tokens;
    let load = std::time::Duration::from_millis(1);
    let done = json!({
        "model": def.name,
        "created_at": CREATED_AT,
        "done": true,
        "done_reason": "stop",
        "total_duration": nanos(load + prompt_eval + eval),
        "load_duration": nanos(load),
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": nanos(prompt_eval),
        "eval_count": completion_tokens,
        "eval_duration": nanos(eval),
    });
    if !stream {
        let mut reply = done;
        reply["message"] = json!({"role": "assistant", "content": content});
        if !calls.is_empty() {
            reply["message"]["tool_calls"] = Value::Array(calls);
        }
        return json_response(StatusCode::OK, &reply);
    }
    let mut lines: Vec<Value> = split_content(&content)
        .into_iter()
        .map(|piece| {
            json!({
                "model": def.name,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": piece},
                "done": false,
            })
        })
        .collect();
    if !calls.is_empty() {
        lines.push(json!({
            "model": def.name,
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": "", "tool_calls": calls},
            "done": false,
        }));
    }
    let mut last = done;
    last["message"] = json!({"role": "assistant", "content": ""});
    lines.push(last);
    let body: String = lines.iter().map(|line| format!("{line}\n")).collect();
    with_type(StatusCode::OK, "application/x-ndjson", body)
}

pub(crate) fn show(shared: &Shared, body: &Value) -> Response {
    let Some(requested) = model_of(body) else {
        return json_response(StatusCode::BAD_REQUEST, &missing_model());
    };
    let Some(def) = shared.model(requested) else {
        return not_found(requested);
    };
    let arch = &def.architecture;
    let mut model_info = serde_json::Map::new();
    model_info.insert("general.architecture".into(), json!(arch));
    model_info.insert("general.parameter_count".into(), json!(1_000_000));
    model_info.insert(format!("{arch}.context_length"), json!(def.context_length));
    model_info.insert(format!("{arch}.embedding_length"), json!(1024));
    json_response(
        StatusCode::OK,
        &json!({
            "modelfile": format!("FROM {}", def.name),
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": {
                "format": "gguf",
                "family": arch,
                "parameter_size": "1M",
                "quantization_level": "Q4_K_M",
            },
            "model_info": model_info,
            "capabilities": ["completion", "tools"],
        }),
    )
}

pub(crate) fn tags(shared: &Shared) -> Response {
    let models: Vec<Value> = shared
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "model": m.name,
                "modified_at": CREATED_AT,
                "size": 1_000_000,
                "digest": "0".repeat(64),
                "details": {"format": "gguf", "family": m.architecture},
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

/// `{"model", "input": string | [string]}` to `{"model", "embeddings": [[f32]], ...}`.
pub(crate) fn embed(shared: &Shared, body: &Value) -> Response {
    let Some(requested) = model_of(body) else {
        return json_response(StatusCode::BAD_REQUEST, &missing_model());
    };
    let Some(def) = shared.model(requested) else {
        return not_found(requested);
    };
    let inputs = match embed::inputs(body) {
        Ok(inputs) => inputs,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let vectors = match embed::vectors(shared, def, &inputs) {
        Ok(vectors) => vectors,
        Err(response) => return *response,
    };
    // Without input Ollama only loads the model: nothing is evaluated.
    let tokens = if inputs.is_empty() { 0 } else { estimate(embed::input_chars(&inputs)) };
    let load = std::time::Duration::from_millis(1);
    json_response(
        StatusCode::OK,
        &json!({
            "model": def.name,
            "embeddings": vectors,
            "total_duration": nanos(load + std::time::Duration::from_millis(1) * tokens),
            "load_duration": nanos(load),
            "prompt_eval_count": tokens,
        }),
    )
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
