//! What the embedding endpoints (`/api/embed`, `/v1/embeddings`) share: reading a request's
//! inputs, playing the scripted `EmbedReply`, and `hashed_embedding`, the vectors they return.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::script::{EmbedReply, ModelDef};
use crate::server::{Shared, status_response, with_type};

/// A deterministic, content-dependent unit vector for `text`: a bag of its lowercase words
/// (runs of letters and digits), each added as ±1 at a position chosen by its hash (feature
/// hashing). Texts sharing words score a higher cosine than texts sharing none, so tests can
/// check that retrieval ranks by similarity. A text without words gets the vector of the empty
/// word; a `dimension` of 0 gives an empty vector.
pub fn hashed_embedding(text: &str, dimension: usize) -> Vec<f32> {
    let mut vector = vec![0f32; dimension];
    if dimension == 0 {
        return vector;
    }
    let mut words: Vec<String> =
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    if words.is_empty() {
        words.push(String::new());
    }
    for word in &words {
        let hash = fnv1a(word.as_bytes());
        // usize is at most 64 bits, so the remainder fits.
        let at = usize::try_from(hash % dimension as u64).unwrap_or(0);
        vector[at] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    } else {
        // Words that cancel out: still a unit vector, and still the same one for the same text.
        vector[0] = 1.0;
    }
    vector
}

/// FNV-1a: std's hasher may change between Rust releases, and these vectors must not.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The request's `input`: one string or a list of strings (both protocols accept either).
/// `Err` says what is wrong with it.
pub(crate) fn inputs(body: &Value) -> Result<Vec<String>, String> {
    match body.get("input") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| format!("input items must be strings, got {item}"))
            })
            .collect(),
        Some(other) => Err(format!("input must be a string or a list of strings, got {other}")),
    }
}

/// The vectors for `inputs` as `def`'s next scripted reply has them, or the response that
/// replaces the protocol's answer (an error status or garbage).
pub(crate) fn vectors(shared: &Shared, def: &ModelDef, inputs: &[String]) -> Result<Vec<Vec<f32>>, Box<Response>> {
    let hashed = |dimension: usize| inputs.iter().map(|text| hashed_embedding(text, dimension)).collect::<Vec<_>>();
    match shared.take_embed_reply(&def.name) {
        EmbedReply::Hashed => Ok(hashed(shared.embedding_dimension)),
        EmbedReply::Dimension(dimension) => Ok(hashed(dimension)),
        EmbedReply::DropLast => {
            let mut vectors = hashed(shared.embedding_dimension);
            vectors.pop();
            Ok(vectors)
        }
        EmbedReply::Status(code, body) => Err(Box::new(status_response(code, body))),
        EmbedReply::Garbage(body) => Err(Box::new(with_type(StatusCode::OK, "application/json", body))),
    }
}

/// Characters of all inputs, for the usage estimate.
pub(crate) fn input_chars(inputs: &[String]) -> usize {
    inputs.iter().map(|text| text.chars().count()).sum()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hashed_embeddings_are_unit_vectors_that_depend_on_the_words_only() {
        let a = hashed_embedding("Read a file into a String", 64);
        assert_eq!(a.len(), 64);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, hashed_embedding("read a FILE, into a string!", 64));
        assert_ne!(a, hashed_embedding("parse a token", 64));
        let empty = hashed_embedding("", 16);
        assert!((cosine(&empty, &empty) - 1.0).abs() < 1e-5);
        assert!(hashed_embedding("anything", 0).is_empty());
    }

    #[test]
    fn texts_sharing_words_score_higher_than_texts_sharing_none() {
        let query = hashed_embedding("read the config file", 64);
        let near = hashed_embedding("read a file from disk", 64);
        let far = hashed_embedding("jwt bearer token parsing", 64);
        assert!(cosine(&query, &near) > cosine(&query, &far) + 0.2);
    }

    #[test]
    fn input_is_a_string_or_a_list_of_strings() {
        assert_eq!(inputs(&json!({"input": "a"})), Ok(vec!["a".to_owned()]));
        assert_eq!(inputs(&json!({"input": ["a", "b"]})), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(inputs(&json!({})), Ok(Vec::new()));
        assert!(inputs(&json!({"input": [1]})).is_err());
        assert!(inputs(&json!({"input": 1})).is_err());
    }
}
