//! Direct delivery (`--delivery direct`): commands and replies on core NATS,
//! the outbox sending again what is not answered.
//!
//! A load of sagas, each compensating two steps (the third is refused), runs while the orchestrator is
//! stopped and started again: the replies sent while it was away are lost
//! (nothing stores them on the bus), so the new instance's relay sends the
//! unanswered commands again and the participant answers them from its
//! inbox. Every saga ends as it should and every effect happened once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::on_each_backend;
use common::processes::{bench_effects, bench_participant};
use sagas::protocol::StartResponse;
use serde_json::json;
use skald_testkit::fixtures::SHIPPED_DIR;
use skald_tests::process::ChildGuard;
use skald_tests::{Backend, Delivery, NATS_URL, RunningOrchestrator, TestDb, token};
use std::path::PathBuf;
use std::time::Duration;

const SAGAS: usize = 40;

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
    // The shipped `bench` saga with a retry budget that outlasts the
    // participant's start (what it misses meanwhile costs attempts).
    let bench = std::fs::read_to_string(PathBuf::from(SHIPPED_DIR).join("bench.yaml")).unwrap();
    let patient = bench.replace("retry: { attempts: 3,", "retry: { attempts: 30,");
    assert_ne!(patient, bench, "the shipped bench saga's retry policy changed; update this test");
    let dir = skald_tests::definitions_dir(&[("bench.yaml", &patient)]).unwrap();
    let participant_db = match backend {
        Backend::Sqlite => format!("{}?mode=rwc", participant_store.url),
        Backend::Postgres => participant_store.url.clone(),
    };
    let mut cmd = bench_participant(NATS_URL, &prefix, &participant_db, 16);
    cmd.args(["--delivery", "direct", "--delay-ms", "20", "--fail-step", "3"])
        .env("RUST_LOG", "error");
    let mut participant = ChildGuard::spawn("bench-participant", &mut cmd).unwrap();

    let mut o = RunningOrchestrator::start_delivering(&db, &prefix, dir.clone(), Delivery::Direct)
        .await
        .unwrap();
    let mut ids = start(&o, 0, SAGAS / 2).await;
    // Stopped with commands and replies in flight.
    o.stop().await;
    let o =
        RunningOrchestrator::start_delivering(&db, &prefix, dir, Delivery::Direct).await.unwrap();
    ids.extend(start(&o, SAGAS / 2, SAGAS).await);
    o.wait_ended(&ids, Duration::from_secs(60)).await.unwrap();

    for id in &ids {
        let (status, events) = o.history(id).await.unwrap();
        assert_eq!(status, "compensated", "saga {id}: {events:#?}");
    }
    let effects = bench_effects(&participant_db).await;
    // Steps one and two and their compensations; the third step was refused.
    assert_eq!(effects.len(), SAGAS * 4, "{effects:?}");
    assert!(effects.iter().all(|(_, n)| *n == 1), "an effect happened twice: {effects:?}");
    assert!(participant.terminate(Duration::from_secs(20)).unwrap().success());
    let mut o = o;
    o.stop().await;
}

on_each_backend!(
    sagas_survive_an_orchestrator_restart:
    sagas_survive_an_orchestrator_restart_sqlite,
    sagas_survive_an_orchestrator_restart_postgres
);
