//! Crashes: `kill -9` of the orchestrator process mid-run, and a NATS server
//! killed and restarted mid-run. Every saga must still end, exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::load::Starter;
use common::on_each_backend;
use common::processes::skald_serve;
use futures::future::join_all;
use orchestrator::store::Store;
use sagas::protocol::{Namespace, Outcome};
use serde_json::json;
use skald_tests::process::{ChildGuard, NatsServer};
use skald_tests::{
    Backend, NATS_URL, PARTITIONS, RunningOrchestrator, Script, TestDb, definitions_dir,
    scripted_participant, three_steps, token,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn skald(db: &TestDb, prefix: &str, definitions: &Path) -> ChildGuard {
    let mut cmd = skald_serve(NATS_URL, prefix, &db.url, PARTITIONS, definitions);
    // The scripted participant takes its commands from JetStream.
    cmd.args(["--http-addr", "off", "--delivery", "jetstream"]).env("RUST_LOG", "warn");
    ChildGuard::spawn("skald", &mut cmd).unwrap()
}

/// A client whose start requests wait for an orchestrator up to 30 s.
fn starter(client: &async_nats::Client, ns: &Namespace) -> Starter {
    Starter::new(client, ns, Duration::from_secs(30))
}

/// Start saga `k{n}` of `three`.
async fn start(starter: &Starter, n: usize) -> String {
    starter.start("three", &format!("k{n}"), &json!({"n": n})).await
}

async fn ended_exactly_once(store: &Store, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    for id in ids {
        loop {
            let loaded = store.load(id).await.unwrap().expect("no saga lost");
            if loaded.row.status == "completed" {
                let terminal = loaded.events.iter().filter(|e| e.is_terminal()).count();
                assert_eq!(terminal, 1, "saga {id} ended {terminal} times");
                assert!(
                    loaded.events.last().unwrap().is_terminal(),
                    "events after the end of {id}"
                );
                assert_eq!(loaded.row.seq, loaded.events.len() as i64);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "saga {id} still {} after {within:?}",
                loaded.row.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn orchestrator_killed_mid_run(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let dir = definitions_dir(&[("three.yaml", &three_steps("1s", 10, 10))]).unwrap();
    let prefix = format!("t{}", token());
    let ns = Namespace::new(&prefix).unwrap();
    let client = async_nats::connect(NATS_URL).await.unwrap();
    let script: Script = Arc::new(|_| Some(Outcome::Ok { output: json!({}) }));
    let (_seen, stop) = scripted_participant(client.clone(), &ns, "p", script).await.unwrap();
    let starter = starter(&client, &ns);

    let mut first = skald(&db, &prefix, &dir);
    let ids: Vec<String> = join_all((0..300).map(|n| start(&starter, n))).await;
    let store = Store::connect(&db.url).await.unwrap();
    // Kill once some sagas are done and the rest are somewhere in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = store.count_by_status().await.unwrap();
        if counts.iter().any(|(s, n)| s == "completed" && *n >= 20) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill9();

    let counts = store.count_by_status().await.unwrap();
    let open: i64 = counts.iter().filter(|(s, _)| s != "completed").map(|(_, n)| n).sum();
    println!("at kill -9: {counts:?}");
    assert!(open > 0, "the crash should hit sagas in flight: {counts:?}");
    let mut second = skald(&db, &prefix, &dir);
    // Starts accepted before the crash are still there, under the same ids.
    for (n, id) in ids.iter().enumerate().step_by(37) {
        assert_eq!(&start(&starter, n).await, id, "idempotent start after restart");
    }
    ended_exactly_once(&store, &ids, Duration::from_secs(90)).await;
    let status = second.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "skald exited with {status} on SIGTERM");
    stop.cancel();
    skald_tests::delete_streams(&client, &ns).await;
}

on_each_backend!(
    orchestrator_killed_mid_run:
    orchestrator_killed_mid_run_sqlite,
    orchestrator_killed_mid_run_postgres
);

async fn nats_restarted_mid_run(backend: Backend) {
    let mut nats = NatsServer::start().unwrap();
    let db = TestDb::new(backend).await.unwrap();
    let dir = definitions_dir(&[("three.yaml", &three_steps("1s", 20, 20))]).unwrap();
    let prefix = format!("t{}", token());
    let mut o = RunningOrchestrator::start_on(&nats.url(), &db, &prefix, dir).await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let script: Script = Arc::new(|_| Some(Outcome::Ok { output: json!({}) }));
    let (_seen, stop) = scripted_participant(client.clone(), &o.ns, "p", script).await.unwrap();
    let starter = starter(&client, &o.ns);
    let ids: Vec<String> = join_all((0..100).map(|n| start(&starter, n))).await;

    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().unwrap();

    ended_exactly_once(&o.store, &ids, Duration::from_secs(90)).await;
    stop.cancel();
    o.stop().await;
}

on_each_backend!(
    nats_restarted_mid_run:
    nats_restarted_mid_run_sqlite,
    nats_restarted_mid_run_postgres
);
