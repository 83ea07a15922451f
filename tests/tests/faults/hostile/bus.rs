//! A hostile bus: well-formed messages published where they do not belong.

use crate::common::cluster::wait_owners;
use crate::invariants::count;
use crate::tally::Tally;
use crate::world::{BENCH_DELAYED, FLOW_FILE, FlowRun, TURN, World, sagas};
use async_nats::jetstream;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use skald_tests::{NATS_URL, PARTITIONS};
use skald_transport::consumers::{REPLY_ACK_PENDING_MAX, reply_consumer_name};
use std::time::{Duration, Instant};

/// Replies of sagas on one instance's partitions flood a partition of the
/// other instance: the other instance does not own those sagas, so no
/// redelivery could ever apply them. They are terminated (and counted), not
/// left pending until the partition's consumer stops delivering: the sagas
/// of the flooded partition all end, and its consumer is drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_partition_reply_flood() {
    let _turn = TURN.lock().await;
    let n = sagas(150, 1_000);
    let run = FlowRun::new(World::new("cross_partition_flood", NATS_URL, &[FLOW_FILE]).await).await;
    let _bench = run.w.bench_ready(BENCH_DELAYED).await;
    let _o0 = run.skald_ready("o-0", &[]).await;
    let _o1 = run.skald_ready("o-1", &[]).await;
    wait_owners(&run.store, PARTITIONS, &["o-0", "o-1"], Duration::from_secs(30)).await.unwrap();
    let load = run.load(n, n / 4).await;
    let leases = run.store.leases().await.unwrap();
    let flooded = leases.iter().find(|l| l.owner == "o-0").map(|l| l.partition).unwrap();
    let elsewhere: Vec<i32> =
        leases.iter().filter(|l| l.owner == "o-1").map(|l| l.partition).collect();
    assert!(!elsewhere.is_empty(), "o-1 owns no partition");
    let list = elsewhere.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let db = run.store.db();
    let victims: Vec<String> = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT saga_id FROM sagas WHERE partition IN ({list}) LIMIT 20"),
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "saga_id").unwrap())
        .collect();
    assert!(!victims.is_empty(), "no saga on o-1's partitions yet");

    // Twice as many as the consumer may hold unacknowledged. An attempt
    // never sent: even an owner applying them would change nothing.
    let flood = 2 * usize::try_from(REPLY_ACK_PENDING_MAX).unwrap();
    let js = jetstream::new(run.client.clone());
    let subject = run.w.ns.reply_subject(u32::try_from(flooded).unwrap(), "bench");
    let mut tally = Tally::default();
    for i in 0..flood {
        let saga = &victims[i % victims.len()];
        let body = json!({
            "command_id": format!("{saga}.one.do"),
            "attempt": 1_000 + i,
            "outcome": {"status": "ok"},
        });
        let published = async { js.publish(subject.clone(), body.to_string().into()).await?.await };
        if let Err(e) = published.await {
            tally.fail(format!("cannot publish a misplaced reply: {e}"));
        }
    }
    let what = format!(
        "{flood} replies of o-1's sagas published on partition {flooded} (o-0's) with {} in flight",
        run.in_flight().await
    );
    let healed = Instant::now();
    println!("{what}");
    let begun = load.finish().await;
    let heal = run.ended(&begun, healed, &mut tally).await;

    // Sagas of the flooded partition ran to their end through the flood.
    let on_flooded = count(
        run.store.db(),
        &format!("SELECT count(*) AS n FROM sagas WHERE partition = {flooded}"),
    )
    .await;
    tally.expect(on_flooded.as_ref().is_ok_and(|n| *n > 0), || {
        format!("no saga ran on the flooded partition {flooded}: {on_flooded:?}")
    });
    // And nothing stays pending on its consumer.
    let stream = js.get_stream(run.w.ns.replies_stream()).await.unwrap();
    let name = reply_consumer_name(u32::try_from(flooded).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = stream.consumer_info(&name).await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            tally.violation(format!(
                "partition {flooded}'s consumer still holds {} unacknowledged and {} undelivered replies",
                info.num_ack_pending, info.num_pending
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.finish(tally, heal).await;
}
