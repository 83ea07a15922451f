//! The outbox relay (`orchestrator::bus::relay`) against a real store and the
//! local NATS server: commands committed through the writer are published
//! without waiting for a scan of the table (the scan only takes rows older
//! than two seconds), and their rows are deleted; rows that did not come
//! through the hand-off are found by the scan. (That a round due for a scan
//! also takes the handed-over rows is a unit test in `relay.rs`.) With direct
//! delivery a row is kept and sent again until its reply is recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::BENCH;
use futures::StreamExt;
use orchestrator::engine::driver::Driver;
use orchestrator::store::Store;
use orchestrator::store::entities::outbox;
use sagas::protocol::Namespace;
use sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait};
use serde_json::json;
use skald_testkit::{Backend, TempDatabase};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Setup {
    store: Store,
    /// Direct delivery's answered commands (`None`: JetStream delivery).
    answered: Option<std::sync::Arc<orchestrator::bus::direct::Answered>>,
    driver: Driver,
    commands: async_nats::Subscriber,
    stop: CancellationToken,
    relay: tokio::task::JoinHandle<()>,
    client: async_nats::Client,
    ns: Namespace,
    db: TempDatabase,
}

impl Setup {
    async fn new() -> Self {
        Self::with(skald_transport::Delivery::JetStream).await
    }

    async fn with(delivery: skald_transport::Delivery) -> Self {
        let (db, store) = common::store(Backend::Sqlite).await;
        let ns = skald_testkit::namespace();
        let driver = common::driver(&store, &[BENCH], ns.clone(), common::PARTITIONS).await;
        let url = skald_testkit::nats_url();
        let client = async_nats::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must run at {url}: {e}"));
        let js = async_nats::jetstream::new(client.clone());
        skald_transport::streams::ensure_streams(&js, &ns).await.unwrap();
        let subject = format!("{}.cmd.>", ns.prefix());
        let subject = match delivery {
            skald_transport::Delivery::JetStream => subject,
            skald_transport::Delivery::Direct => ns.direct(&subject),
        };
        let commands = client.subscribe(subject).await.unwrap();
        client.flush().await.unwrap();
        let stop = CancellationToken::new();
        let wire = orchestrator::bus::Wire::new(delivery, client.clone(), ns.clone());
        let answered = wire.answered.clone();
        let parts = orchestrator::bus::relay::RelayParts {
            store: store.clone(),
            ownership: driver.ownership().clone(),
            publisher: wire.publisher,
            answered: answered.clone(),
        };
        let relay = tokio::spawn(orchestrator::bus::relay::run(parts, stop.clone()));
        Self { store, answered, driver, commands, stop, relay, client, ns, db }
    }

    /// The next command published, within `within`.
    async fn next_command(&mut self, within: Duration) -> Option<serde_json::Value> {
        let msg = tokio::time::timeout(within, self.commands.next()).await.ok()??;
        Some(serde_json::from_slice(&msg.payload).unwrap())
    }

    /// An outbox row on partition 0 committed behind the writer's back, as
    /// another instance would leave it.
    async fn insert_row(&self, saga: &str, msg_id: &str, subject: String, body: serde_json::Value) {
        outbox::Entity::insert(outbox::ActiveModel {
            saga_id: Set(saga.into()),
            subject: Set(subject),
            msg_id: Set(msg_id.into()),
            body: Set(body.to_string()),
            created_at_ms: Set(0),
            partition: Set(0),
            ..Default::default()
        })
        .exec(self.store.db())
        .await
        .unwrap();
    }

    async fn outbox_rows(&self) -> u64 {
        outbox::Entity::find().count(self.store.db()).await.unwrap()
    }

    /// The outbox's rows once it is empty, or after `within`.
    async fn outbox_rows_after(&self, within: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = self.outbox_rows().await;
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) {
        self.stop.cancel();
        self.relay.await.unwrap();
        skald_testkit::delete_streams(&self.client, &self.ns).await;
        drop((self.store, self.driver));
        self.db.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_commands_are_published_at_once_and_forgotten() {
    let mut s = Setup::new().await;
    for round in 0..3 {
        let started = s.driver.start("bench", &format!("k{round}"), &json!({})).await.unwrap();
        let command = s
            .next_command(Duration::from_millis(900))
            .await
            .unwrap_or_else(|| panic!("round {round}: the start's command was not published"));
        assert_eq!(command["saga_id"], started.saga_id());
    }
    // Acknowledged rows are deleted in batches, well within a second.
    let left = s.outbox_rows_after(Duration::from_millis(1000)).await;
    assert_eq!(left, 0, "published rows are deleted");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_behind_the_writers_back_are_found_by_the_scan() {
    let mut s = Setup::new().await;
    // As another instance would leave it: a committed row never handed over.
    let subject = s.ns.command_subject("bench", "step1");
    s.insert_row("elsewhere", "elsewhere.one.do/1", subject, json!({ "from": "elsewhere" })).await;
    let command = s
        .next_command(Duration::from_secs(5))
        .await
        .expect("the periodic scan publishes a row older than its age limit");
    assert_eq!(command["from"], "elsewhere");
    s.finish().await;
}

/// Direct delivery: nothing acknowledges a command, so its row stays and the
/// command is sent again (after a pause of about two seconds) until the intake
/// reports its reply recorded; then the row is deleted and the sending stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_commands_are_sent_again_until_answered_then_forgotten() {
    let mut s = Setup::with(skald_transport::Delivery::Direct).await;
    let started = s.driver.start("bench", "k", &json!({})).await.unwrap();
    let first = s.next_command(Duration::from_millis(900)).await.expect("sent at once");
    assert_eq!(first["saga_id"], started.saga_id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.outbox_rows().await, 1, "kept until answered");
    let again =
        s.next_command(Duration::from_secs(4)).await.expect("an unanswered command is sent again");
    assert_eq!(again, first, "the same command, same attempt");

    let msg_id = sagas::protocol::msg_id(
        first["command_id"].as_str().unwrap(),
        u32::try_from(first["attempt"].as_u64().unwrap()).unwrap(),
    );
    s.answered.as_ref().unwrap().push(msg_id);
    let left = s.outbox_rows_after(Duration::from_millis(2000)).await;
    assert_eq!(left, 0, "an answered command's row is deleted");
    assert!(
        s.next_command(Duration::from_secs(5)).await.is_none(),
        "an answered command is not sent again"
    );
    s.finish().await;
}

/// Direct delivery: a command found past its attempt's deadline (as a dead
/// instance or a long outage leaves it) is deleted without being sent: the
/// saga has timed that attempt out, and an answer to it would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_commands_past_their_deadline_are_deleted_unsent() {
    let mut s = Setup::with(skald_transport::Delivery::Direct).await;
    let body = json!({ "command_id": "late.one.do", "attempt": 1, "deadline_unix_ms": 1_000 });
    s.insert_row("late", "late.one.do/1", s.ns.command_subject("bench", "step1"), body).await;
    // Found by a scan, as after a takeover.
    s.store.handoff().miss();
    let left = s.outbox_rows_after(Duration::from_millis(3000)).await;
    assert_eq!(left, 0, "an expired command's row is deleted");
    assert!(s.next_command(Duration::from_millis(500)).await.is_none(), "and never sent");
    s.finish().await;
}
