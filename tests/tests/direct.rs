//! Direct delivery (`--delivery direct`): commands and replies on core NATS,
//! the outbox sending again what is not answered.
//!
//! A load of sagas, each compensating two steps (the third is refused), runs while the orchestrator is
//! stopped and started again: the replies sent while it was away are lost
//! (nothing stores them on the bus), so the new instance's relay sends the
//! unanswered commands again and the participant answers them from its
//! inbox. Every saga ends as it should and every effect happened once.
//!
//! The same holds when NATS itself is killed and restarted mid-run: every
//! command and reply on the wire then is lost, and the re-sends bring them
//! back once the clients have reconnected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::load::Starter;
use common::on_each_backend;
use common::processes::{assert_bench_effects_once, bench_participant};
use futures::future::join_all;
use sagas::protocol::StartResponse;
use serde_json::json;
use skald_testkit::fixtures::SHIPPED_DIR;
use skald_tests::process::{ChildGuard, NatsServer};
use skald_tests::{Backend, Delivery, NATS_URL, RunningOrchestrator, TestDb, token};
use std::path::PathBuf;
use std::time::Duration;

const SAGAS: usize = 40;

/// The shipped `bench` saga with a retry budget that outlasts a participant's
/// start or a restart of NATS (what is missed meanwhile costs attempts).
fn patient_bench() -> PathBuf {
    let bench = std::fs::read_to_string(PathBuf::from(SHIPPED_DIR).join("bench.yaml")).unwrap();
    let patient = bench.replace("retry: { attempts: 3,", "retry: { attempts: 30,");
    assert_ne!(patient, bench, "the shipped bench saga's retry policy changed; update this test");
    skald_tests::definitions_dir(&[("bench.yaml", &patient)]).unwrap()
}

fn participant_url(backend: Backend, store: &TestDb) -> String {
    match backend {
        Backend::Sqlite => format!("{}?mode=rwc", store.url),
        Backend::Postgres => store.url.clone(),
    }
}

async fn start(o: &RunningOrchestrator, from: usize, to: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..to {
        match o.start_saga("bench", &format!("k{i}"), json!({})).await.unwrap() {
            StartResponse::Started { saga_id, .. } => ids.push(saga_id),
            other => panic!("start {i} refused: {other:?}"),
        }
    }
    ids
}

async fn sagas_survive_an_orchestrator_restart(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let participant_store = TestDb::new(backend).await.unwrap();
    let prefix = format!("t{}", token());
    let dir = patient_bench();
    let participant_db = participant_url(backend, &participant_store);
    let mut cmd = bench_participant(NATS_URL, &prefix, &participant_db, 16);
    cmd.args(["--delivery", "direct", "--delay-ms", "20", "--fail-step", "3"])
        .env("RUST_LOG", "error");
    let mut participant = ChildGuard::spawn("bench-participant", &mut cmd).unwrap();

    let mut o = RunningOrchestrator::start_delivering(
        NATS_URL,
        &db,
        &prefix,
        dir.clone(),
        Delivery::Direct,
    )
    .await
    .unwrap();
    let mut ids = start(&o, 0, SAGAS / 2).await;
    // Stopped with commands and replies in flight.
    o.stop().await;
    let o = RunningOrchestrator::start_delivering(NATS_URL, &db, &prefix, dir, Delivery::Direct)
        .await
        .unwrap();
    ids.extend(start(&o, SAGAS / 2, SAGAS).await);
    o.wait_ended(&ids, Duration::from_secs(60)).await.unwrap();

    o.assert_all_ended_as(&ids, "compensated").await;
    // Steps one and two and their compensations; the third step was refused.
    assert_bench_effects_once(&participant_db, SAGAS * 4).await;
    assert!(participant.terminate(Duration::from_secs(20)).unwrap().success());
    let mut o = o;
    o.stop().await;
}

on_each_backend!(
    sagas_survive_an_orchestrator_restart:
    sagas_survive_an_orchestrator_restart_sqlite,
    sagas_survive_an_orchestrator_restart_postgres
);

async fn sagas_survive_a_nats_restart(backend: Backend) {
    let mut nats = NatsServer::start().unwrap();
    let db = TestDb::new(backend).await.unwrap();
    let participant_store = TestDb::new(backend).await.unwrap();
    let participant_db = participant_url(backend, &participant_store);
    let prefix = format!("t{}", token());
    let mut cmd = bench_participant(&nats.url(), &prefix, &participant_db, 16);
    cmd.args(["--delivery", "direct", "--delay-ms", "10"]).env("RUST_LOG", "error");
    let mut participant = ChildGuard::spawn("bench-participant", &mut cmd).unwrap();
    let mut o = RunningOrchestrator::start_delivering(
        &nats.url(),
        &db,
        &prefix,
        patient_bench(),
        Delivery::Direct,
    )
    .await
    .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let starter = Starter::new(&client, &o.ns, Duration::from_secs(30));
    let starter = &starter;
    let ids: Vec<String> = join_all(
        (0..SAGAS)
            .map(|n| async move { starter.start("bench", &format!("k{n}"), &json!({})).await }),
    )
    .await;

    let mut open = 0;
    for id in &ids {
        let loaded = o.store.load(id).await.unwrap().expect("started");
        open += usize::from(loaded.row.status == "running");
    }
    nats.kill();
    assert!(open > 0, "NATS must be killed while sagas are running");
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().unwrap();

    o.wait_ended(&ids, Duration::from_secs(90)).await.unwrap();
    o.assert_all_ended_as(&ids, "completed").await;
    assert_bench_effects_once(&participant_db, SAGAS * 3).await;
    assert!(participant.terminate(Duration::from_secs(20)).unwrap().success());
    o.stop().await;
}

on_each_backend!(
    sagas_survive_a_nats_restart:
    sagas_survive_a_nats_restart_sqlite,
    sagas_survive_a_nats_restart_postgres
);
