//! Reading results back from their stream, for a caller that may have missed one while it was
//! not listening: an orchestrator that reconnected or restarted, or a worker given an item again
//! whose result an earlier delivery already stored.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt;
use turbo_core::ids::TaskId;
use uuid::Uuid;

use crate::codec::decode;
use crate::error::{Error, Result};
use crate::message::WorkResult;
use crate::subjects;

/// Results read per request to the server.
const BATCH: usize = 256;
/// The server removes the temporary reader after this long unused, should this process die
/// before removing it.
const READER_IDLE: Duration = Duration::from_secs(60);

/// The stored result of work item `request_id` of `task_id`, if there is one. Reads the task's
/// results (a handful per task) through a temporary consumer.
pub async fn find_result(js: &Context, task_id: TaskId, request_id: Uuid) -> Result<Option<WorkResult>> {
    let read =
        |e: &dyn std::fmt::Display| Error::Read { stream: subjects::RESULTS_STREAM.into(), reason: e.to_string() };
    let stream = js.get_stream(subjects::RESULTS_STREAM).await.map_err(|e| read(&e))?;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subjects::results(task_id),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: READER_IDLE,
            ..Default::default()
        })
        .await
        .map_err(|e| read(&e))?;
    let found = scan(&consumer, request_id).await;
    let name = consumer.cached_info().name.clone();
    if let Err(error) = stream.delete_consumer(&name).await {
        tracing::debug!(
            %error, consumer = %name,
            "cannot remove a temporary results reader; the server drops it when idle"
        );
    }
    found.map_err(|e| read(&e))
}

async fn scan(consumer: &PullConsumer, request_id: Uuid) -> std::result::Result<Option<WorkResult>, async_nats::Error> {
    loop {
        let mut batch = consumer.fetch().max_messages(BATCH).messages().await?;
        let mut seen = 0;
        while let Some(message) = batch.next().await {
            let message = message?;
            seen += 1;
            if let Ok(result) = decode::<WorkResult>(&message.payload)
                && result.request_id == request_id
            {
                return Ok(Some(result));
            }
        }
        if seen < BATCH {
            return Ok(None);
        }
    }
}
