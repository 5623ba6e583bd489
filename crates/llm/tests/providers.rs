//! The model layer against a real HTTP server (`ScriptedModelServer`) speaking Ollama's and
//! OpenAI's protocols.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use turbo_llm::{
    ChatModel, ChatRequest, Error, Message, ModelSettings, Provider, ResponseFormat, ToolMode, ToolSpec, Turn, connect,
    next_turn, structured,
};
use turbo_testkit::{ModelDef, Reply, Script, ScriptedModelServer};

const MODEL: &str = "qwen3:8b";

fn settings(provider: Provider, server: &ScriptedModelServer) -> ModelSettings {
    let mut s = ModelSettings::new(provider, server.url(), MODEL);
    s.request_timeout_s = 10;
    s
}

fn model(settings: &ModelSettings) -> Arc<dyn ChatModel> {
    connect(settings).expect("valid settings")
}

async fn serve(replies: Vec<Reply>) -> ScriptedModelServer {
    ScriptedModelServer::start(
        Script::new()
            .model(ModelDef::new(MODEL, 40960).architecture("qwen3"))
            .model(ModelDef::new("llama3.2", 131072))
            .replies(MODEL, replies),
    )
    .await
    .expect("server starts")
}

fn read_file_tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Read a file of the workspace".into(),
        parameters: json!({
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        }),
    }
}

fn chat_request(text: &str, stream: bool) -> ChatRequest {
    ChatRequest { stream, ..ChatRequest::new(vec![Message::system("be brief"), Message::user(text)]) }
}

fn chat_bodies(server: &ScriptedModelServer, path: &str) -> Vec<Value> {
    server.requests_to(path).into_iter().map(|r| r.body).collect()
}

#[derive(Default)]
struct Deltas(Mutex<Vec<String>>);

impl Deltas {
    fn push(&self, delta: &str) {
        self.0.lock().expect("not poisoned").push(delta.to_owned());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("not poisoned").clone()
    }
}

#[tokio::test]
async fn ollama_non_stream_text_reply_is_returned_with_server_usage() {
    let server = serve(vec![Reply::text("hello there").with_usage(12, 3)]).await;
    let model = model(&settings(Provider::Ollama, &server));
    let response = model.chat(chat_request("hi", false), None).await.expect("reply");
    assert_eq!(response.message.content, "hello there");
    assert!(response.message.tool_calls.is_empty());
    assert_eq!(response.usage.prompt_tokens, 12);
    assert_eq!(response.usage.completion_tokens, 3);
    assert!(!response.usage_estimated);
    assert_eq!(response.model, MODEL);
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    let body = &chat_bodies(&server, "/api/chat")[0];
    assert_eq!(body["stream"], false);
    assert_eq!(body["messages"][1], json!({"role": "user", "content": "hi"}));
}

#[tokio::test]
async fn ollama_stream_passes_each_delta_and_joins_them() {
    let server = serve(vec![Reply::text("streaming works fine")]).await;
    let model = model(&settings(Provider::Ollama, &server));
    let deltas = Deltas::default();
    let sink = |d: &str| deltas.push(d);
    let response = model.chat(chat_request("hi", true), Some(&sink)).await.expect("reply");
    assert_eq!(response.message.content, "streaming works fine");
    let seen = deltas.all();
    assert!(seen.len() >= 2, "content should arrive in pieces: {seen:?}");
    assert_eq!(seen.concat(), "streaming works fine");
    assert_eq!(chat_bodies(&server, "/api/chat")[0]["stream"], true);
}

#[tokio::test]
async fn openai_stream_and_non_stream_text_replies_are_returned() {
    let server = serve(vec![Reply::text("first answer"), Reply::text("second answer").with_usage(7, 2)]).await;
    let mut s = settings(Provider::Openai, &server);
    s.base_url = format!("{}/v1", server.url());
    let model = model(&s);
    let plain = model.chat(chat_request("a", false), None).await.expect("reply");
    assert_eq!(plain.message.content, "first answer");
    let deltas = Deltas::default();
    let sink = |d: &str| deltas.push(d);
    let streamed = model.chat(chat_request("b", true), Some(&sink)).await.expect("reply");
    assert_eq!(streamed.message.content, "second answer");
    assert_eq!(deltas.all().concat(), "second answer");
    assert_eq!((streamed.usage.prompt_tokens, streamed.usage.completion_tokens), (7, 2));
    let bodies = chat_bodies(&server, "/v1/chat/completions");
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["stream_options"], json!({"include_usage": true}));
    assert!(bodies[0].get("stream_options").is_none());
}

#[tokio::test]
async fn ollama_native_tool_calls_become_a_tool_calls_turn() {
    let server =
        serve(vec![Reply::tool_call("read_file", json!({"path": "src/main.rs"})), Reply::text("the file is empty")])
            .await;
    let model = model(&settings(Provider::Ollama, &server));
    let tools = vec![read_file_tool()];
    let mut history = vec![Message::user("what is in main.rs?")];
    let first = next_turn(model.as_ref(), &history, &tools, true, None).await.expect("turn");
    let Turn::ToolCalls(calls) = &first.turn else {
        panic!("expected tool calls, got {:?}", first.turn);
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "read_file");
    assert_eq!(calls[0].arguments, json!({"path": "src/main.rs"}));
    assert!(calls[0].id.starts_with("call_"));
    assert!(!first.recovered_from_text);

    history.push(first.response.message.clone());
    history.push(Message::tool_result(&calls[0], ""));
    let second = next_turn(model.as_ref(), &history, &tools, false, None).await.expect("turn");
    assert_eq!(second.turn, Turn::Final("the file is empty".into()));

    let bodies = chat_bodies(&server, "/api/chat");
    assert_eq!(
        bodies[0]["tools"][0],
        json!({"type": "function", "function": {
            "name": "read_file",
            "description": "Read a file of the workspace",
            "parameters": read_file_tool().parameters,
        }})
    );
    assert_eq!(
        bodies[1]["messages"][1]["tool_calls"],
        json!([{"function": {"name": "read_file", "arguments": {"path": "src/main.rs"}}}])
    );
    assert_eq!(bodies[1]["messages"][2], json!({"role": "tool", "content": "", "tool_name": "read_file"}));
}

#[tokio::test]
async fn openai_native_tool_calls_are_reassembled_from_stream_fragments() {
    let server = serve(vec![
        Reply::ToolCalls(vec![
            ("read_file".into(), json!({"path": "a.rs"})),
            ("read_file".into(), json!({"path": "b.rs"})),
        ]),
        Reply::tool_call("read_file", json!({"path": "c.rs"})),
        Reply::text("done"),
    ])
    .await;
    let model = model(&settings(Provider::Openai, &server));
    let tools = vec![read_file_tool()];
    let mut history = vec![Message::user("read a and b")];
    let streamed = next_turn(model.as_ref(), &history, &tools, true, None).await.expect("turn");
    let Turn::ToolCalls(calls) = &streamed.turn else {
        panic!("expected tool calls, got {:?}", streamed.turn);
    };
    let paths: Vec<&Value> = calls.iter().map(|c| &c.arguments["path"]).collect();
    assert_eq!(paths, vec!["a.rs", "b.rs"]);
    assert_ne!(calls[0].id, calls[1].id);

    history.push(streamed.response.message.clone());
    for call in calls {
        history.push(Message::tool_result(call, "contents"));
    }
    let plain = next_turn(model.as_ref(), &history, &tools, false, None).await.expect("turn");
    let Turn::ToolCalls(more) = &plain.turn else {
        panic!("expected tool calls, got {:?}", plain.turn);
    };
    assert_eq!(more[0].arguments, json!({"path": "c.rs"}));

    let bodies = chat_bodies(&server, "/v1/chat/completions");
    let sent = &bodies[1]["messages"];
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(sent[1]["tool_calls"][0]["id"], json!(calls[0].id));
    assert_eq!(sent[1]["tool_calls"][0]["type"], "function");
    let args = sent[1]["tool_calls"][0]["function"]["arguments"].as_str().expect("arguments go as a json string");
    assert_eq!(serde_json::from_str::<Value>(args).ok(), Some(json!({"path": "a.rs"})));
    assert_eq!(sent[2], json!({"role": "tool", "tool_call_id": calls[0].id, "content": "contents"}));
    assert_eq!(bodies[0]["tools"][0]["function"]["name"], "read_file");
}

#[tokio::test]
async fn schema_mode_sends_no_tools_and_parses_a_call_then_a_final_answer() {
    let server = serve(vec![
        Reply::Json(json!({"tool": "read_file", "arguments": {"path": "README.md"}})),
        Reply::Json(json!({"final": "it is a readme"})),
    ])
    .await;
    let mut s = settings(Provider::Ollama, &server);
    s.tool_mode = ToolMode::Schema;
    let model = model(&s);
    let tools = vec![read_file_tool()];
    let mut history = vec![Message::user("summarise the readme")];

    let first = next_turn(model.as_ref(), &history, &tools, false, None).await.expect("turn");
    let Turn::ToolCalls(calls) = &first.turn else {
        panic!("expected tool calls, got {:?}", first.turn);
    };
    assert_eq!(calls[0].name, "read_file");
    assert_eq!(calls[0].arguments, json!({"path": "README.md"}));
    assert!(!first.recovered_from_text);
    assert_eq!(first.response.message.tool_calls, *calls);

    history.push(first.response.message.clone());
    history.push(Message::tool_result(&calls[0], "# Turbo"));
    let deltas = Deltas::default();
    let sink = |d: &str| deltas.push(d);
    let second = next_turn(model.as_ref(), &history, &tools, true, Some(&sink)).await.expect("turn");
    assert_eq!(second.turn, Turn::Final("it is a readme".into()));
    assert_eq!(second.response.message.content, "it is a readme");
    assert_eq!(deltas.all().concat(), "it is a readme");

    let bodies = chat_bodies(&server, "/api/chat");
    assert!(bodies[0].get("tools").is_none());
    let any_of = bodies[0]["format"]["anyOf"].as_array().expect("schema");
    assert_eq!(any_of[0]["properties"]["tool"]["const"], "read_file");
    assert_eq!(any_of[0]["properties"]["arguments"], read_file_tool().parameters);
    assert_eq!(any_of[1]["required"], json!(["final"]));
    let messages = bodies[0]["messages"].as_array().expect("messages");
    let instructions = messages.last().expect("instructions");
    assert_eq!(instructions["role"], "system");
    let text = instructions["content"].as_str().expect("text");
    assert!(text.contains("read_file") && text.contains("Read a file of the workspace"));

    let replayed = bodies[1]["messages"].as_array().expect("messages");
    assert_eq!(replayed[1]["role"], "assistant");
    assert_eq!(
        serde_json::from_str::<Value>(replayed[1]["content"].as_str().unwrap_or_default()).ok(),
        Some(json!({"tool": "read_file", "arguments": {"path": "README.md"}}))
    );
    assert!(replayed[1].get("tool_calls").is_none());
    assert_eq!(replayed[2], json!({"role": "user", "content": "tool result for read_file:\n# Turbo"}));
}

#[tokio::test]
async fn schema_mode_prose_reply_is_invalid_output() {
    let server = serve(vec![Reply::text("I would read the readme first.")]).await;
    let mut s = settings(Provider::Openai, &server);
    s.tool_mode = ToolMode::Schema;
    let err = next_turn(model(&s).as_ref(), &[Message::user("go")], &[read_file_tool()], false, None)
        .await
        .expect_err("prose is not the protocol");
    assert!(matches!(err, Error::InvalidOutput { .. }), "{err}");
    let body = &chat_bodies(&server, "/v1/chat/completions")[0];
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], false);
}

#[tokio::test]
async fn tool_call_written_as_text_is_recovered_by_next_turn() {
    let server = serve(vec![Reply::text(
        "Let me check.\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"Cargo.toml\"}}\n</tool_call>",
    )])
    .await;
    let model = model(&settings(Provider::Ollama, &server));
    let result = next_turn(model.as_ref(), &[Message::user("check the manifest")], &[read_file_tool()], true, None)
        .await
        .expect("turn");
    assert!(result.recovered_from_text);
    let Turn::ToolCalls(calls) = &result.turn else {
        panic!("expected tool calls, got {:?}", result.turn);
    };
    assert_eq!(calls[0].arguments, json!({"path": "Cargo.toml"}));
    assert_eq!(result.response.message.tool_calls, *calls);
}

#[tokio::test]
async fn structured_output_parses_fenced_json_and_sends_the_schema() {
    let server = serve(vec![
        Reply::text("Here is the plan:\n```json\n{\"steps\": [\"a\", \"b\"]}\n```"),
        Reply::text("no json here"),
    ])
    .await;
    let model = model(&settings(Provider::Ollama, &server));
    let schema = json!({
        "type": "object",
        "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
        "required": ["steps"],
    });
    let messages = [Message::user("plan it")];
    let (value, response) = structured(model.as_ref(), &messages, "plan", &schema).await.expect("json");
    assert_eq!(value, json!({"steps": ["a", "b"]}));
    assert!(response.message.content.contains("```json"));
    assert_eq!(chat_bodies(&server, "/api/chat")[0]["format"], schema);

    let err = structured(model.as_ref(), &messages, "plan", &schema).await.expect_err("not json");
    assert!(matches!(err, Error::InvalidOutput { .. }), "{err}");
}

#[tokio::test]
async fn openai_structured_output_uses_json_schema_response_format() {
    let server = serve(vec![Reply::Json(json!({"ok": true}))]).await;
    let model = model(&settings(Provider::Openai, &server));
    let schema = json!({"type": "object", "required": ["ok"]});
    let (value, _) = structured(model.as_ref(), &[Message::user("ok?")], "answer", &schema).await.expect("json");
    assert_eq!(value, json!({"ok": true}));
    let body = &chat_bodies(&server, "/v1/chat/completions")[0];
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": false}})
    );
}

#[tokio::test]
async fn json_response_format_maps_to_each_protocol() {
    let server = serve(vec![Reply::Json(json!({})), Reply::Json(json!({}))]).await;
    let req = ChatRequest { response_format: ResponseFormat::Json, ..chat_request("json please", false) };
    model(&settings(Provider::Ollama, &server)).chat(req.clone(), None).await.expect("reply");
    model(&settings(Provider::Openai, &server)).chat(req, None).await.expect("reply");
    assert_eq!(chat_bodies(&server, "/api/chat")[0]["format"], "json");
    assert_eq!(chat_bodies(&server, "/v1/chat/completions")[0]["response_format"], json!({"type": "json_object"}));
}

#[tokio::test]
async fn context_length_from_api_show_is_sent_as_num_ctx_and_looked_up_once() {
    let server = serve(vec![Reply::text("a"), Reply::text("b")]).await;
    let mut s = settings(Provider::Ollama, &server);
    s.max_context = 65536;
    let model = model(&s);
    model.chat(chat_request("1", false), None).await.expect("reply");
    model.chat(chat_request("2", true), None).await.expect("reply");
    let shows = server.requests_to("/api/show");
    assert_eq!(shows.len(), 1, "the context length is cached");
    assert_eq!(shows[0].body["model"], MODEL);
    for body in chat_bodies(&server, "/api/chat") {
        assert_eq!(body["options"]["num_ctx"], 40960);
    }
    assert_eq!(model.context_window().await, 40960);
    let info = model.model_info().await.expect("info");
    assert_eq!(info.context_length, Some(40960));
}

#[tokio::test]
async fn detected_context_length_is_capped_at_max_context() {
    let server = ScriptedModelServer::start(
        Script::new().model(ModelDef::new("llama3.2", 131072)).replies("llama3.2", vec![Reply::text("a")]),
    )
    .await
    .expect("server starts");
    let mut s = settings(Provider::Ollama, &server);
    s.model = "llama3.2".into();
    s.max_context = 16384;
    let model = model(&s);
    model.chat(chat_request("1", false), None).await.expect("reply");
    assert_eq!(chat_bodies(&server, "/api/chat")[0]["options"]["num_ctx"], 16384);
    assert_eq!(model.context_window().await, 16384);
}

#[tokio::test]
async fn num_ctx_setting_overrides_detection_and_skips_api_show() {
    let server = serve(vec![Reply::text("a")]).await;
    let mut s = settings(Provider::Ollama, &server);
    s.num_ctx = Some(65536);
    s.temperature = Some(0.5);
    let model = model(&s);
    let req = ChatRequest { max_tokens: Some(100), ..chat_request("1", false) };
    model.chat(req, None).await.expect("reply");
    let body = &chat_bodies(&server, "/api/chat")[0];
    assert_eq!(body["options"], json!({"num_ctx": 65536, "temperature": 0.5, "num_predict": 100}));
    assert!(server.requests_to("/api/show").is_empty());
    assert_eq!(model.context_window().await, 65536);
}

#[tokio::test]
async fn openai_context_length_comes_from_the_models_list() {
    let server = serve(vec![]).await;
    let model = model(&settings(Provider::Openai, &server));
    assert_eq!(model.model_info().await.expect("info").context_length, Some(40960));
    assert_eq!(model.context_window().await, 32768, "capped at max_context");
}

#[tokio::test]
async fn check_model_accepts_listed_models_with_or_without_latest_tag() {
    let server = serve(vec![]).await;
    let mut s = settings(Provider::Ollama, &server);
    model(&s).check_model().await.expect("listed");
    s.model = "llama3.2:latest".into();
    model(&s).check_model().await.expect("name:latest equals name");
    s.provider = Provider::Openai;
    s.model = MODEL.into();
    model(&s).check_model().await.expect("listed");
}

#[tokio::test]
async fn check_model_reports_missing_model_and_what_is_available() {
    let server = serve(vec![]).await;
    for provider in [Provider::Ollama, Provider::Openai] {
        let mut s = settings(provider, &server);
        s.model = "mistral:7b".into();
        let err = model(&s).check_model().await.expect_err("not listed");
        let Error::ModelNotFound { model, available } = &err else {
            panic!("expected ModelNotFound, got {err}");
        };
        assert_eq!(model, "mistral:7b");
        assert_eq!(available, &vec![MODEL.to_owned(), "llama3.2".to_owned()]);
        let msg = err.to_string();
        assert!(msg.contains("ollama pull mistral:7b") && msg.contains(MODEL), "{msg}");
    }
}

#[tokio::test]
async fn ollama_chat_with_an_unknown_model_is_model_not_found() {
    let server = serve(vec![]).await;
    let mut s = settings(Provider::Ollama, &server);
    s.model = "ghost".into();
    let err = model(&s).chat(chat_request("hi", false), None).await.expect_err("unknown model");
    assert!(matches!(&err, Error::ModelNotFound { available, .. } if available.len() == 2), "{err}");
}

#[tokio::test]
async fn rejected_api_key_is_unauthorized_and_not_retried() {
    let server = ScriptedModelServer::start(
        Script::new().require_api_key("right-key").replies(MODEL, vec![Reply::text("never")]),
    )
    .await
    .expect("server starts");
    for provider in [Provider::Ollama, Provider::Openai] {
        let mut s = settings(provider, &server);
        s.api_key = Some("wrong-key-123".into());
        let before = server.requests().len();
        let err = model(&s).chat(chat_request("hi", false), None).await.expect_err("rejected");
        assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
        assert!(err.to_string().contains("OLLAMA_API_KEY"), "{err}");
        assert!(!err.to_string().contains("wrong-key-123"), "{err}");
        assert_eq!(server.requests().len() - before, 1, "exactly one request");
    }
    assert_eq!(server.remaining(MODEL), 1);
}

#[tokio::test]
async fn scripted_401_status_is_unauthorized_and_not_retried() {
    let server = serve(vec![Reply::Status(401, "{\"error\":\"unauthorized\"}".into())]).await;
    let err =
        model(&settings(Provider::Openai, &server)).chat(chat_request("hi", false), None).await.expect_err("rejected");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retries_on_503_then_succeeds() {
    let server =
        serve(vec![Reply::Status(503, "busy".into()), Reply::Status(503, "busy".into()), Reply::text("finally")]).await;
    let mut s = settings(Provider::Ollama, &server);
    s.num_ctx = Some(4096);
    let response = model(&s).chat(chat_request("hi", true), None).await.expect("third attempt succeeds");
    assert_eq!(response.message.content, "finally");
    assert_eq!(response.timing.attempts, 3);
    assert_eq!(server.requests_to("/api/chat").len(), 3);
    assert_eq!(server.remaining(MODEL), 0);
}

#[tokio::test]
async fn retries_on_429_for_openai() {
    let server = serve(vec![Reply::Status(429, "slow down".into()), Reply::text("ok")]).await;
    let response = model(&settings(Provider::Openai, &server))
        .chat(chat_request("hi", false), None)
        .await
        .expect("second attempt succeeds");
    assert_eq!(response.timing.attempts, 2);
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let server =
        serve(vec![Reply::Status(500, "boom".into()), Reply::Status(502, "boom".into()), Reply::text("too late")])
            .await;
    let mut s = settings(Provider::Openai, &server);
    s.max_retries = 1;
    let err = model(&s).chat(chat_request("hi", false), None).await.expect_err("retries exhausted");
    assert!(matches!(err, Error::Http { status: 502, .. }), "{err}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn bad_request_400_is_not_retried() {
    let server = serve(vec![Reply::Status(400, "{\"error\":\"invalid format\"}".into()), Reply::text("unused")]).await;
    let mut s = settings(Provider::Ollama, &server);
    s.num_ctx = Some(4096);
    let err = model(&s).chat(chat_request("hi", false), None).await.expect_err("bad request");
    let Error::Http { status, body } = &err else {
        panic!("expected Http, got {err}");
    };
    assert_eq!(*status, 400);
    assert!(body.contains("invalid format"));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.remaining(MODEL), 1);
}

#[tokio::test]
async fn exhausted_script_surfaces_as_http_500() {
    let server = serve(vec![]).await;
    let mut s = settings(Provider::Openai, &server);
    s.max_retries = 0;
    let err = model(&s).chat(chat_request("hi", false), None).await.expect_err("nothing scripted");
    assert!(
        matches!(&err, Error::Http { status: 500, body } if body.contains("script exhausted for model qwen3:8b")),
        "{err}"
    );
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    for provider in [Provider::Ollama, Provider::Openai] {
        let mut s = ModelSettings::new(provider, format!("http://127.0.0.1:{port}"), MODEL);
        s.max_retries = 0;
        s.num_ctx = Some(2048);
        let err = model(&s).chat(chat_request("hi", false), None).await.expect_err("nothing listens");
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        assert!(err.is_retryable());
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("TURBO_HOST"), "{msg}");
    }
}

#[tokio::test]
async fn slow_reply_times_out() {
    let server = serve(vec![Reply::text("late").delayed(std::time::Duration::from_secs(5))]).await;
    let mut s = settings(Provider::Openai, &server);
    s.request_timeout_s = 1;
    s.max_retries = 0;
    let err = model(&s).chat(chat_request("hi", false), None).await.expect_err("too slow");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn garbage_body_is_invalid_response_and_not_retried() {
    let garbage = || Reply::Garbage("{\"message\": this is not json".into());
    let server = serve(vec![garbage(), garbage(), garbage(), garbage()]).await;
    let mut ollama = settings(Provider::Ollama, &server);
    ollama.num_ctx = Some(2048);
    let openai = settings(Provider::Openai, &server);
    for (s, stream) in [(&ollama, false), (&ollama, true), (&openai, false), (&openai, true)] {
        let err = model(s).chat(chat_request("hi", stream), None).await.expect_err("garbage");
        assert!(matches!(err, Error::InvalidResponse { .. }), "{:?} stream={stream}: {err}", s.provider);
    }
    assert_eq!(server.requests().len(), 4, "no retries");
}

#[tokio::test]
async fn bearer_key_is_sent_but_never_shown() {
    let key = "sk-turbo-secret-42";
    let server = ScriptedModelServer::start(Script::new().require_api_key(key).replies(
        MODEL,
        vec![Reply::text("ok"), Reply::text("ok"), Reply::Status(500, format!("upstream rejected Bearer {key}"))],
    ))
    .await
    .expect("server starts");
    let mut s = settings(Provider::Ollama, &server);
    s.api_key = Some(key.into());
    s.max_retries = 0;
    let model_a = model(&s);
    model_a.chat(chat_request("hi", false), None).await.expect("authorised");
    model_a.check_model().await.expect("authorised");
    for request in server.requests() {
        assert_eq!(request.header("Authorization"), Some(format!("Bearer {key}").as_str()), "{}", request.path);
    }
    let mut o = s.clone();
    o.provider = Provider::Openai;
    model(&o).chat(chat_request("hi", false), None).await.expect("authorised");
    assert_eq!(
        server.requests_to("/v1/chat/completions")[0].header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );

    assert!(!format!("{s:?}").contains(key));
    let err = model_a.chat(chat_request("hi", false), None).await.expect_err("500");
    assert!(!err.to_string().contains(key), "{err}");
    assert!(!format!("{err:?}").contains(key), "{err:?}");
}

#[tokio::test]
async fn usage_and_timing_are_populated() {
    let server =
        serve(vec![Reply::text("a reasonably long answer").with_usage(30, 6), Reply::text("another answer")]).await;
    for (provider, stream) in [(Provider::Ollama, true), (Provider::Openai, false)] {
        let response = model(&settings(provider, &server)).chat(chat_request("hi", stream), None).await.expect("reply");
        let timing = &response.timing;
        let ttft = timing.time_to_first_token.expect("ttft");
        assert!(ttft <= timing.total, "{timing:?}");
        assert!(timing.tokens_per_second.is_some_and(|t| t > 0.0), "{timing:?}");
        assert_eq!(timing.attempts, 1);
        assert!(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0);
    }
}

#[tokio::test]
async fn default_usage_is_derived_from_characters() {
    // "be brief" + 32 chars = 40 chars -> 10 prompt tokens; 20-char reply -> 5 tokens.
    let server = serve(vec![Reply::text("twenty characters!!!")]).await;
    let response = model(&settings(Provider::Openai, &server))
        .chat(chat_request(&"x".repeat(32), true), None)
        .await
        .expect("reply");
    assert_eq!(response.usage.prompt_tokens, 10);
    assert_eq!(response.usage.completion_tokens, 5);
}

#[tokio::test]
async fn openai_base_url_is_accepted_with_and_without_v1() {
    let server = serve(vec![Reply::text("a"), Reply::text("b")]).await;
    for base in [server.url(), format!("{}/v1/", server.url())] {
        let mut s = settings(Provider::Openai, &server);
        s.base_url = base;
        model(&s).chat(chat_request("hi", false), None).await.expect("reply");
    }
    assert_eq!(server.requests_to("/v1/chat/completions").len(), 2);
}
