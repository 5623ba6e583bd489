//! Creates or updates the bus's streams and the per-role work consumers. Safe to run at every
//! start of every service: an existing stream or consumer with the same settings is left as it
//! is, and one with other settings is updated where NATS allows it.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context, ErrorCode};
use turbo_core::agent::AgentRole;

use crate::error::{Error, Result};
use crate::subjects;

/// How long [`subjects::EVENTS_STREAM`] remembers message ids to drop a repeated publish.
const EVENTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Raw events the recorder may hold unacknowledged: a few of its batches.
const RECORDER_MAX_ACK_PENDING: i64 = 4096;

/// Settings of the streams and work consumers.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// How long a worker may hold a work item without a sign of progress before NATS gives it to
    /// another replica. Workers send progress every third of it while an agent works, so a long
    /// model call is not redelivered; only a dead or stuck worker lets it run out.
    pub ack_wait: Duration,
    /// Deliveries of one work item that crashed or stalled its worker before it is dead-lettered.
    pub max_deliver: u32,
    /// How long results are kept, so a restarted orchestrator can still read them.
    pub results_max_age: Duration,
    /// How long raw agent events are kept for the orchestrator to store.
    pub events_max_age: Duration,
    /// How long dead letters are kept for an operator to look at.
    pub dlq_max_age: Duration,
    /// File storage survives a restart of nats-server; memory is for throwaway setups.
    pub storage: StorageType,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            results_max_age: Duration::from_secs(24 * 3600),
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            dlq_max_age: Duration::from_secs(14 * 24 * 3600),
            storage: StorageType::File,
        }
    }
}

/// Creates the stream `config` describes, or brings an existing one to it.
///
/// It creates first: creating a stream that exists with the same settings changes nothing, so
/// services that start together do not each send an update. Only a stream whose settings
/// differ is updated. (async-nats's `create_or_update_stream` updates first, every time;
/// nats-server 2.9 has been seen to crash on concurrent updates of one stream.)
pub async fn ensure_stream(js: &Context, config: stream::Config) -> std::result::Result<(), CreateStreamError> {
    match js.create_stream(config.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) => {
            js.update_stream(config).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Creates or updates every stream and every role's work consumer with the default settings.
pub async fn setup(js: &Context) -> Result<()> {
    setup_with(js, &BusConfig::default()).await
}

/// Creates or updates every stream and every role's work consumer.
pub async fn setup_with(js: &Context, config: &BusConfig) -> Result<()> {
    let streams = [
        stream::Config {
            name: subjects::WORK_STREAM.into(),
            description: Some("turbo-coder agent work, one subject per role".into()),
            subjects: vec![subjects::WORK_SUBJECTS.into()],
            retention: RetentionPolicy::WorkQueue,
            storage: config.storage,
            ..Default::default()
        },
        stream::Config {
            name: subjects::RESULTS_STREAM.into(),
            description: Some("turbo-coder agent results, one subject per task".into()),
            subjects: vec![subjects::RESULTS_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            max_age: config.results_max_age,
            storage: config.storage,
            ..Default::default()
        },
        stream::Config {
            name: subjects::DLQ_STREAM.into(),
            description: Some("turbo-coder work that could not be done, with the reason in a header".into()),
            subjects: vec![subjects::DLQ_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            max_age: config.dlq_max_age,
            storage: config.storage,
            ..Default::default()
        },
        stream::Config {
            name: subjects::EVENTS_RAW_STREAM.into(),
            description: Some("turbo-coder agent events before the orchestrator numbers them".into()),
            subjects: vec![subjects::EVENTS_RAW_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            max_age: config.events_max_age,
            storage: config.storage,
            ..Default::default()
        },
        stream::Config {
            name: subjects::EVENTS_STREAM.into(),
            description: Some("turbo-coder task events as stored and numbered, one subject per task".into()),
            subjects: vec![subjects::EVENTS_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            max_age: config.events_max_age,
            storage: config.storage,
            // The recorder publishes each event with the id <task>:<seq>; a second publish of
            // it (a retry) within this window is stored once.
            duplicate_window: EVENTS_DUPLICATE_WINDOW,
            ..Default::default()
        },
    ];
    for stream in streams {
        let name = stream.name.clone();
        ensure_stream(js, stream).await.map_err(|e| Error::Stream { stream: name, reason: e.to_string() })?;
    }

    let work = js
        .get_stream(subjects::WORK_STREAM)
        .await
        .map_err(|e| Error::Stream { stream: subjects::WORK_STREAM.into(), reason: e.to_string() })?;
    for role in AgentRole::ALL.iter().copied() {
        let consumer = work_consumer_config(role, config);
        let name = subjects::work_consumer(role);
        work.create_consumer(consumer).await.map_err(|e| Error::Consumer {
            stream: subjects::WORK_STREAM.into(),
            consumer: name,
            reason: e.to_string(),
        })?;
    }
    let raw = js
        .get_stream(subjects::EVENTS_RAW_STREAM)
        .await
        .map_err(|e| Error::Stream { stream: subjects::EVENTS_RAW_STREAM.into(), reason: e.to_string() })?;
    raw.create_consumer(recorder_consumer_config(config)).await.map_err(|e| Error::Consumer {
        stream: subjects::EVENTS_RAW_STREAM.into(),
        consumer: subjects::RECORDER_CONSUMER.into(),
        reason: e.to_string(),
    })?;
    tracing::debug!(ack_wait_ms = config.ack_wait.as_millis() as u64, max_deliver = config.max_deliver, "bus set up");
    Ok(())
}

fn work_consumer_config(role: AgentRole, config: &BusConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(subjects::work_consumer(role)),
        description: Some(format!("the {role} workers, shared by every replica")),
        filter_subject: subjects::work(role),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: server_max_deliver(config.max_deliver),
        ..Default::default()
    }
}

/// The orchestrator recorder's consumer of raw events: explicit acks (after the events are
/// stored), redelivered without limit (an event is dropped by the recorder, with a reason, not
/// by the server).
fn recorder_consumer_config(config: &BusConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(subjects::RECORDER_CONSUMER.into()),
        description: Some("the orchestrator's recorder: stores and numbers agent events".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_ack_pending: RECORDER_MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// NATS stops delivering a message after `max_deliver` deliveries and leaves it in the stream
/// with nobody to tell. The server is allowed one delivery more than the limit so that a worker
/// sees the message once past it and moves it to the dead-letter queue with a reason.
fn server_max_deliver(limit: u32) -> i64 {
    i64::from(limit.max(1)) + 1
}

/// The redelivery limit of a work consumer, read back from its server-side settings.
pub fn delivery_limit(info: &jetstream::consumer::Info) -> u32 {
    match info.config.max_deliver {
        n if n > 1 => u32::try_from(n - 1).unwrap_or(u32::MAX),
        // Unlimited or unset (set up by something else): never dead-letter for redeliveries.
        _ => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_delivers_once_past_the_limit_and_the_limit_reads_back() {
        let config = BusConfig { max_deliver: 5, ..Default::default() };
        let consumer = work_consumer_config(AgentRole::Coder, &config);
        assert_eq!(consumer.max_deliver, 6);
        assert_eq!(consumer.filter_subject, "turbo.work.coder");
        assert_eq!(consumer.durable_name.as_deref(), Some("workers-coder"));
        assert_eq!(server_max_deliver(0), 2, "at least one delivery");
        let recorder = recorder_consumer_config(&config);
        assert_eq!(recorder.durable_name.as_deref(), Some("orchestrator-recorder"));
        assert_eq!(recorder.ack_policy, AckPolicy::Explicit);
    }
}
