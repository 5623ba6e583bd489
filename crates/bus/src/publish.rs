//! Publishing with the envelope and the trace context: stored (JetStream, waits for the
//! server's acknowledgement that the message is in its stream) or core NATS (fire and forget).

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;

use crate::codec::{BusMessage, encode};
use crate::error::{Error, Result};
use crate::headers;

/// Publishes `message` to the stream that captures `subject` and waits until it is stored.
pub async fn publish_stored<T: BusMessage>(
    js: &Context,
    subject: String,
    message: &T,
    headers: HeaderMap,
) -> Result<PublishAck> {
    let payload = encode(message)?;
    publish_stored_raw(js, subject, headers, payload).await
}

/// Publishes bytes as they are (a dead letter keeps the original) and waits until stored.
pub async fn publish_stored_raw(
    js: &Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<PublishAck> {
    let pending = send_stored_raw(js, subject.clone(), headers, payload).await?;
    pending.await.map_err(|e| Error::Publish { subject, reason: e.to_string() })
}

/// Sends `message` to its stream without waiting for the server's acknowledgement; await the
/// returned future for it. Lets a sender keep several messages in flight.
pub async fn send_stored<T: BusMessage>(
    js: &Context,
    subject: String,
    message: &T,
    headers: HeaderMap,
) -> Result<PublishAckFuture> {
    let payload = encode(message)?;
    send_stored_raw(js, subject, headers, payload).await
}

async fn send_stored_raw(
    js: &Context,
    subject: String,
    mut headers: HeaderMap,
    payload: Bytes,
) -> Result<PublishAckFuture> {
    headers::inject_trace(&mut headers);
    let publish = jetstream::message::PublishMessage::build().payload(payload).headers(headers);
    js.send_publish(subject.clone(), publish).await.map_err(|e| Error::Publish { subject, reason: e.to_string() })
}

/// Publishes `message` on core NATS: delivered to whoever subscribes now, stored nowhere.
pub async fn publish_core<T: BusMessage>(client: &async_nats::Client, subject: String, message: &T) -> Result<()> {
    let mut headers = HeaderMap::new();
    headers::inject_trace(&mut headers);
    let payload = encode(message)?;
    client
        .publish_with_headers(subject.clone(), headers, payload)
        .await
        .map_err(|e| Error::Publish { subject, reason: e.to_string() })
}
