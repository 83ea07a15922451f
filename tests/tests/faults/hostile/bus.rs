//! A hostile bus: well-formed messages published where they do not belong —
//! replies for another partition's sagas (an open bus), and on a secured bus
//! answers, starts and commands from an identity that may not send them.

use crate::common::cluster::wait_owners;
use crate::common::load::Load;
use crate::invariants::count;
use crate::tally::Tally;
use crate::world::{BENCH_DELAYED, FLOW_FILE, FLOW_STEPS, FlowRun, TURN, World, sagas};
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
    // About the replies stream's consumers: over JetStream.
    let world = World::new("cross_partition_flood", NATS_URL, &[FLOW_FILE]).await.jetstream();
    let run = FlowRun::new(world).await;
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
    let victims = sagas_where(&run, &format!("WHERE partition IN ({list}) ")).await;
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

/// After the forgeries (`what`): the rest of the load starts, every saga
/// ends, none parked (nothing a forger sent may hold one up), and the
/// invariants go into `tally`. The heal time.
async fn every_saga_ends(run: &FlowRun, what: &str, load: Load, tally: &mut Tally) -> Duration {
    let healed = Instant::now();
    println!("{what}");
    let begun = load.finish().await;
    let heal = run.ended(&begun, healed, tally).await;
    let parked = tally.parked.clone();
    tally.expect(parked.is_empty(), || format!("sagas parked: {parked:?}"));
    heal
}

/// Sagas of the scenario's store (at most 20; with `running`, only running
/// ones): whose steps a forger names.
async fn some_sagas(run: &FlowRun, running: bool) -> Vec<String> {
    sagas_where(run, if running { "WHERE status = 'running' " } else { "" }).await
}

/// At most 20 saga ids of the scenario's store that `filter` (a `WHERE`
/// clause, or nothing) lets through.
async fn sagas_where(run: &FlowRun, filter: &str) -> Vec<String> {
    let db = run.store.db();
    db.query_all(Statement::from_string(
        db.get_database_backend(),
        format!("SELECT saga_id FROM sagas {filter}LIMIT 20"),
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<String>("", "saga_id").unwrap())
    .collect()
}

/// Publish through JetStream and wait for the stream's ack (at most 2 s).
async fn stored(js: &jetstream::Context, subject: String, body: String) -> Result<(), String> {
    let published = async { js.publish(subject, body.into()).await?.await };
    match tokio::time::timeout(Duration::from_secs(2), published).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no ack".to_owned()),
    }
}

/// On a secured bus, another participant (`mallory`) forges `ok` answers to
/// the bench participant's commands while sagas run: published on the
/// bench's reply subjects they are refused by the bus; on its own subject the
/// bus takes them but the orchestrator does not (the command went to `bench`).
/// No saga moves on a forged answer: every one ends with the effects its end
/// says it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_replies() {
    let _turn = TURN.lock().await;
    let n = sagas(100, 600);
    // Refusals by the streams' acknowledgements: over JetStream.
    let world = World::secured("forged_replies", &[FLOW_FILE], &["mallory"]).await.jetstream();
    let run = FlowRun::new(world).await;
    let _bench = run.w.bench_ready(BENCH_DELAYED).await;
    let _o = run.skald_ready("o-0", &[]).await;
    let load = run.load(n, n / 4).await;
    let js = jetstream::new(run.w.client_as("mallory").await);
    let mut tally = Tally::default();
    let victims = some_sagas(&run, true).await;
    tally.expect(!victims.is_empty(), || "no saga was running".to_owned());
    let mut forged = Vec::new();
    for saga in &victims {
        let partition = sagas::hash::partition_of(saga, PARTITIONS);
        for step in FLOW_STEPS {
            let body = json!({
                "command_id": format!("{saga}.{step}.do"),
                "attempt": 1,
                "outcome": {"status": "ok", "output": {"forged": true}},
            })
            .to_string();
            forged.push((run.w.ns.reply_subject(partition, "bench"), body.clone(), false));
            forged.push((run.w.ns.reply_subject(partition, "mallory"), body, true));
        }
    }
    let results = futures::future::join_all(
        forged.iter().map(|(subject, body, _)| stored(&js, subject.clone(), body.clone())),
    )
    .await;
    for ((subject, _, permitted), result) in forged.iter().zip(results) {
        match (permitted, result) {
            (false, Ok(())) => tally.violation(format!("mallory published on {subject}")),
            (true, Err(e)) => {
                tally.fail(format!("mallory cannot publish on its own {subject}: {e}"))
            }
            _ => {}
        }
    }
    let what = format!(
        "mallory forged {} `ok` answers for {} running sagas ({} in flight)",
        forged.len(),
        victims.len(),
        run.in_flight().await
    );
    let heal = every_saga_ends(&run, &what, load, &mut tally).await;
    run.finish(tally, heal).await;
}

/// On a secured bus, while sagas run, a participant's identity (`mallory`)
/// tries what only others may: start a saga, send the bench participant a
/// command (an undo of a running saga's step), read the bench participant's
/// commands; and a client without an identity tries to connect. Each is
/// refused: no saga but the load's exists, and every saga ends with the
/// effects its end says it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_starts_and_commands() {
    let _turn = TURN.lock().await;
    let n = sagas(100, 600);
    // Refusals by the streams' acknowledgements: over JetStream.
    let world =
        World::secured("forged_starts_and_commands", &[FLOW_FILE], &["mallory"]).await.jetstream();
    let run = FlowRun::new(world).await;
    let _bench = run.w.bench_ready(BENCH_DELAYED).await;
    let _o = run.skald_ready("o-0", &[]).await;
    let load = run.load(n, n / 4).await;
    let mut tally = Tally::default();

    let in_flight = run.in_flight().await;
    let mallory = run.w.client_as("mallory").await;
    let js = jetstream::new(mallory.clone());
    let victims = some_sagas(&run, false).await;
    tally.expect(!victims.is_empty(), || "no saga to forge a command for".to_owned());
    let subject = run.w.ns.command_subject("bench", "undo1");
    let forged = victims.iter().map(|saga| {
        let partition = sagas::hash::partition_of(saga, PARTITIONS);
        let command = json!({
            "command_id": format!("{saga}.one.undo"), "saga_id": saga, "saga_type": "flow",
            "step": "one", "kind": "undo", "action": "undo1", "attempt": 1,
            "payload": {"saga": saga, "note": "forged"}, "deadline_unix_ms": u64::MAX / 2,
            "reply_subject": run.w.ns.reply_subject(partition, "bench"),
        });
        stored(&js, subject.clone(), command.to_string())
    });
    for result in futures::future::join_all(forged).await {
        if result.is_ok() {
            tally.violation(format!("mallory published a command on {subject}"));
        }
    }
    let anonymous = run.w.bus("nobody");
    let anonymous = skald_transport::BusOptions { nkey_file: None, ..anonymous };
    tally.expect(anonymous.connect("anonymous").await.is_err(), || {
        "a client without an identity connected".to_owned()
    });

    let start = json!({"idempotency_key": "forged", "input": {"note": "forged"}}).to_string();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        mallory.request(run.w.ns.start_subject("flow"), start.into()),
    )
    .await;
    tally.expect(!matches!(answer, Ok(Ok(_))), || {
        format!("mallory's start was answered: {answer:?}")
    });

    let reading = async {
        let stream = js.get_stream(run.w.ns.commands_stream()).await?;
        let config = skald_transport::consumers::participant_config(&run.w.ns, "bench");
        stream.get_or_create_consumer("bench", config).await?;
        Ok::<_, anyhow::Error>(())
    };
    let read = tokio::time::timeout(Duration::from_secs(5), reading).await;
    tally.expect(!matches!(read, Ok(Ok(()))), || {
        "mallory bound the bench participant's consumer".to_owned()
    });

    let what = format!(
        "mallory tried commands, a start and the bench participant's consumer (from {in_flight} in flight)"
    );
    let heal = every_saga_ends(&run, &what, load, &mut tally).await;
    let all = count(run.store.db(), "SELECT count(*) AS n FROM sagas").await;
    tally.expect(all == Ok(i64::try_from(n).unwrap()), || {
        format!("{all:?} sagas exist; the load started {n}")
    });
    run.finish(tally, heal).await;
}
