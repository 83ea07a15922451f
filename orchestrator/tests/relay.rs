//! The outbox relay (`orchestrator::bus::relay`) against a real store and the
//! local NATS server: commands committed through the writer are published
//! without waiting for a scan of the table (the scan only takes rows older
//! than two seconds), and their rows are deleted; rows that did not come
//! through the hand-off are found by the scan. (That a round due for a scan
//! also takes the handed-over rows is a unit test in `relay.rs`.)

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
        let (db, store) = common::store(Backend::Sqlite).await;
        let ns = skald_testkit::namespace();
        let driver = common::driver(&store, &[BENCH], ns.clone(), common::PARTITIONS).await;
        let url = skald_testkit::nats_url();
        let client = async_nats::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must run at {url}: {e}"));
        let js = async_nats::jetstream::new(client.clone());
        skald_transport::streams::ensure_streams(&js, &ns).await.unwrap();
        let commands = client.subscribe(format!("{}.cmd.>", ns.prefix())).await.unwrap();
        client.flush().await.unwrap();
        let stop = CancellationToken::new();
        let parts = orchestrator::bus::relay::RelayParts {
            store: store.clone(),
            ownership: driver.ownership().clone(),
            publisher: orchestrator::bus::Wire::jetstream(js).publisher,
        };
        let relay = tokio::spawn(orchestrator::bus::relay::run(parts, stop.clone()));
        Self { store, driver, commands, stop, relay, client, ns, db }
    }

    /// The next command published, within `within`.
    async fn next_command(&mut self, within: Duration) -> Option<serde_json::Value> {
        let msg = tokio::time::timeout(within, self.commands.next()).await.ok()??;
        Some(serde_json::from_slice(&msg.payload).unwrap())
    }

    async fn outbox_rows(&self) -> u64 {
        outbox::Entity::find().count(self.store.db()).await.unwrap()
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
    let mut left = s.outbox_rows().await;
    for _ in 0..20 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = s.outbox_rows().await;
    }
    assert_eq!(left, 0, "published rows are deleted");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_behind_the_writers_back_are_found_by_the_scan() {
    let mut s = Setup::new().await;
    // As another instance would leave it: a committed row never handed over.
    let body = json!({ "from": "elsewhere" }).to_string();
    outbox::Entity::insert(outbox::ActiveModel {
        saga_id: Set("elsewhere".into()),
        subject: Set(format!("{}.cmd.bench.step1", s.ns.prefix())),
        msg_id: Set("elsewhere.one.do/1".into()),
        body: Set(body),
        created_at_ms: Set(0),
        partition: Set(0),
        ..Default::default()
    })
    .exec(s.store.db())
    .await
    .unwrap();
    let command = s
        .next_command(Duration::from_secs(5))
        .await
        .expect("the periodic scan publishes a row older than its age limit");
    assert_eq!(command["from"], "elsewhere");
    s.finish().await;
}
