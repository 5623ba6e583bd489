//! The orchestrator's side of the bus against a real nats-server and a SQLite store: the
//! workers' raw events into the recorder (acknowledged once stored), and the numbered events
//! published on `turbo.events.task.<task_id>`, including those an orchestrator that died did not
//! publish.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use turbo_bus::async_nats::HeaderMap;
use turbo_bus::async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use turbo_bus::async_nats::jetstream::{self, Context};
use turbo_bus::publish::{publish_stored, publish_stored_raw};
use turbo_bus::{RawEvent, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::TaskId;
use turbo_core::project::{Language, ProjectMetadata, ProjectType};
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_orchestrator::Recorder;
use turbo_orchestrator::cluster::{publish_backlog, publish_events, record_raw_events};
use turbo_store::Store;
use turbo_testkit::NatsServer;

const PATIENCE: Duration = Duration::from_secs(30);

async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Fixture {
    _nats: NatsServer,
    _dir: tempfile::TempDir,
    js: Context,
    store: Store,
    task: DevelopmentTask,
}

async fn fixture() -> Fixture {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let client = turbo_bus::connect(&nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    turbo_bus::setup(&js).await.expect("setup");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
    let project = ProjectMetadata::new("p", "p", ProjectType::ApiService, vec![Language::Python], "/tmp");
    store.upsert_project(&project).await.unwrap();
    let task = DevelopmentTask::from_request(project.id, "record what the workers did, in order");
    store.insert_task(&task, "/tmp").await.unwrap();
    Fixture { _nats: nats, _dir: dir, js, store, task }
}

impl Fixture {
    async fn publish_raw(&self, task_id: TaskId, text: &str) {
        let event = RawEvent {
            task_id,
            at: Utc::now(),
            kind: EventKind::AgentMessage { role: AgentRole::Coder, text: text.into() },
        };
        publish_stored(&self.js, subjects::events_raw(task_id), &event, HeaderMap::new()).await.unwrap();
    }

    /// Every event stored on the task's subject of `TURBO_EVENTS`, oldest first.
    async fn published(&self) -> Vec<TaskEvent> {
        let consumer: PullConsumer = self
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .unwrap()
            .create_consumer(pull::Config {
                filter_subject: subjects::events_task(self.task.id),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let pending = consumer.cached_info().num_pending as usize;
        if pending == 0 {
            return Vec::new();
        }
        let mut batch = consumer.fetch().max_messages(pending).messages().await.unwrap();
        let mut out = Vec::new();
        while let Some(message) = futures_next(&mut batch).await {
            out.push(turbo_bus::decode::<TaskEvent>(&message.payload).unwrap());
        }
        out
    }

    async fn raw_pending(&self) -> (u64, u64) {
        let mut consumer: PullConsumer = self
            .js
            .get_stream(subjects::EVENTS_RAW_STREAM)
            .await
            .unwrap()
            .get_consumer(subjects::RECORDER_CONSUMER)
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        (info.num_pending, info.num_ack_pending as u64)
    }
}

async fn futures_next(
    batch: &mut turbo_bus::async_nats::jetstream::consumer::pull::Batch,
) -> Option<turbo_bus::async_nats::jetstream::Message> {
    use tokio_stream::StreamExt;
    batch.next().await.map(|m| m.expect("a stored message"))
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_events_are_stored_acknowledged_and_published_in_order() {
    let f = fixture().await;
    let (outbox, outbox_rx) = tokio::sync::mpsc::channel(64);
    let (recorder, _) = Recorder::start_with_outbox(f.store.clone(), outbox);
    let _publisher = tokio::spawn(publish_events(f.js.clone(), outbox_rx));
    let (recorded, mut recorded_rx) = watch::channel(0);
    let stop = CancellationToken::new();
    let consumer =
        tokio::spawn(record_raw_events(f.js.clone(), f.store.clone(), recorder.clone(), recorded, stop.clone()));

    // Two events of the task, one of a task this store does not have, one that is not an event.
    f.publish_raw(f.task.id, "first").await;
    f.publish_raw(TaskId::new(), "of another cluster").await;
    publish_stored_raw(&f.js, subjects::events_raw(f.task.id), HeaderMap::new(), "{not json".into()).await.unwrap();
    let last = publish_stored(
        &f.js,
        subjects::events_raw(f.task.id),
        &RawEvent {
            task_id: f.task.id,
            at: Utc::now(),
            kind: EventKind::AgentMessage { role: AgentRole::Coder, text: "second".into() },
        },
        HeaderMap::new(),
    )
    .await
    .unwrap()
    .sequence;

    tokio::time::timeout(PATIENCE, recorded_rx.wait_for(|seq| *seq >= last)).await.expect("recorded").unwrap();
    let stored = f.store.events(f.task.id, 0).await.unwrap();
    let texts: Vec<&str> = stored
        .iter()
        .map(|e| match &e.kind {
            EventKind::AgentMessage { text, .. } => text.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(texts, ["first", "second"], "stored in order; the others dropped");
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    eventually("every raw event to be acknowledged", || async { (f.raw_pending().await == (0, 0)).then_some(()) })
        .await;
    let published = eventually("the stored events on the task's subject", || async {
        let published = f.published().await;
        (published.len() >= 2).then_some(published)
    })
    .await;
    assert_eq!(published, stored);

    stop.cancel();
    tokio::time::timeout(PATIENCE, consumer).await.expect("the consumer stops").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn events_a_dead_orchestrator_stored_but_did_not_publish_are_published_at_start() {
    let f = fixture().await;
    let mut task = f.task.clone();
    task.status = TaskStatus::InProgress;
    f.store.update_task(&task).await.unwrap();
    let events: Vec<TaskEvent> = (1..=3)
        .map(|seq| TaskEvent { task_id: task.id, seq, at: Utc::now(), kind: EventKind::Progress { percent: 10.0 } })
        .collect();
    f.store.append_events(&events).await.unwrap();
    // The dead orchestrator published only the first.
    publish_stored(&f.js, subjects::events_task(task.id), &events[0], HeaderMap::new()).await.unwrap();

    publish_backlog(&f.js, &f.store).await;
    assert_eq!(f.published().await, events, "the gap is filled, in order, once");
    publish_backlog(&f.js, &f.store).await;
    assert_eq!(f.published().await, events, "a second start publishes nothing again");
}
