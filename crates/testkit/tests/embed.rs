//! The scripted server's embedding endpoints over real HTTP: both protocols' shapes, and the
//! scripted failures in order.

use serde_json::{Value, json};
use turbo_testkit::{EmbedReply, ModelDef, Script, ScriptedModelServer, hashed_embedding};

async fn post(server: &ScriptedModelServer, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .json(&body)
        .send()
        .await
        .expect("the scripted server answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn as_vector(value: &Value) -> Vec<f32> {
    serde_json::from_value(value.clone()).expect("a vector of numbers")
}

#[tokio::test]
async fn ollama_and_openai_embeddings_are_the_hashed_embeddings_of_the_inputs() {
    let server =
        ScriptedModelServer::start(Script::new().model(ModelDef::new("embedder", 512)).embedding_dimension(16))
            .await
            .expect("server starts");

    let (status, reply) = post(&server, "/api/embed", json!({"model": "embedder", "input": ["a b", "c"]})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["model"], "embedder");
    let embeddings = reply["embeddings"].as_array().expect("embeddings");
    assert_eq!(embeddings.len(), 2);
    assert_eq!(as_vector(&embeddings[0]), hashed_embedding("a b", 16));
    assert_eq!(as_vector(&embeddings[1]), hashed_embedding("c", 16));

    let (status, reply) = post(&server, "/v1/embeddings", json!({"model": "embedder", "input": "a b"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["data"][0]["object"], "embedding");
    assert_eq!(reply["data"][0]["index"], 0);
    assert_eq!(as_vector(&reply["data"][0]["embedding"]), hashed_embedding("a b", 16));
    assert!(reply["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n >= 1), "{reply}");

    let (status, _) = post(&server, "/api/embed", json!({"model": "unknown", "input": "a"})).await;
    assert_eq!(status, 404);
    let (status, _) = post(&server, "/v1/embeddings", json!({"model": "embedder", "input": []})).await;
    assert_eq!(status, 400);
    assert_eq!(server.requests_to("/api/embed").len(), 2);
}

#[tokio::test]
async fn scripted_embed_replies_come_in_order_then_hashed_ones() {
    let script = Script::new().embed_replies(
        "embedder",
        vec![
            EmbedReply::Status(500, "boom".into()),
            EmbedReply::Dimension(3),
            EmbedReply::DropLast,
            EmbedReply::Garbage("{nope".into()),
        ],
    );
    let server = ScriptedModelServer::start(script).await.expect("server starts");
    let request = json!({"model": "embedder", "input": ["x", "y"]});

    let (status, reply) = post(&server, "/api/embed", request.clone()).await;
    assert_eq!((status, reply), (500, json!("boom")));
    let (_, reply) = post(&server, "/v1/embeddings", request.clone()).await;
    assert_eq!(as_vector(&reply["data"][1]["embedding"]).len(), 3);
    let (_, reply) = post(&server, "/api/embed", request.clone()).await;
    assert_eq!(reply["embeddings"].as_array().map(Vec::len), Some(1));
    let (status, reply) = post(&server, "/api/embed", request.clone()).await;
    assert_eq!((status, reply), (200, json!("{nope")));
    let (_, reply) = post(&server, "/api/embed", request).await;
    assert_eq!(as_vector(&reply["embeddings"][1]), hashed_embedding("y", 64));
}
