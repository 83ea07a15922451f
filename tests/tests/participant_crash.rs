//! A participant process dies between committing an effect and publishing its
//! reply. After it restarts, the saga finishes and the effect happened once:
//! with JetStream delivery the command comes back from the stream; with
//! direct delivery the orchestrator's outbox sends it again, and the
//! restarted participant answers from its inbox.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::on_each_backend;
use common::processes::{assert_bench_effects_once, bench_effects};
use sagas::protocol::StartResponse;
use serde_json::json;
use skald_testkit::fixtures::SHIPPED_DIR;
use skald_tests::process::ChildGuard;
use skald_tests::{Backend, Delivery, NATS_URL, RunningOrchestrator, TestDb, token};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn participant(
    prefix: &str,
    db_url: &str,
    crash_after_commit_step: Option<u8>,
    delivery: Delivery,
) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_participant-e2e"));
    cmd.args(["--prefix", prefix, "--nats-url", NATS_URL, "--database-url", db_url])
        .args(["--delivery", delivery.as_str()])
        .env("RUST_LOG", "error");
    if let Some(k) = crash_after_commit_step {
        cmd.args(["--crash-after-commit-step", &k.to_string()]);
    }
    ChildGuard::spawn("bench-participant", &mut cmd).unwrap()
}

async fn participant_killed_between_commit_and_reply(backend: Backend) {
    killed_between_commit_and_reply(backend, Delivery::JetStream).await;
}

async fn participant_killed_between_commit_and_reply_direct(backend: Backend) {
    killed_between_commit_and_reply(backend, Delivery::Direct).await;
}

async fn killed_between_commit_and_reply(backend: Backend, delivery: Delivery) {
    let db = TestDb::new(backend).await.unwrap();
    let participant_store = TestDb::new(backend).await.unwrap();
    let prefix = format!("t{}", token());
    // The shipped `bench` saga with a retry budget that outlasts a slow
    // restart of the participant (its three 2 s attempts could run out
    // before a loaded machine has the second process answering).
    let bench = std::fs::read_to_string(PathBuf::from(SHIPPED_DIR).join("bench.yaml")).unwrap();
    let patient = bench.replace("retry: { attempts: 3,", "retry: { attempts: 30,");
    assert_ne!(patient, bench, "the shipped bench saga's retry policy changed; update this test");
    let dir = skald_tests::definitions_dir(&[("bench.yaml", &patient)]).unwrap();
    let mut o =
        RunningOrchestrator::start_delivering(NATS_URL, &db, &prefix, dir, delivery).await.unwrap();
    let participant_db = match backend {
        Backend::Sqlite => format!("{}?mode=rwc", participant_store.url),
        Backend::Postgres => participant_store.url.clone(),
    };

    let mut first = participant(&prefix, &participant_db, Some(2), delivery);
    let StartResponse::Started { saga_id, .. } =
        o.start_saga("bench", "once", json!({})).await.unwrap()
    else {
        panic!("start refused")
    };

    // The participant aborts right after committing step two.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the participant never reached the crash point");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "expected a crash, got {status}");
    let two = format!("{saga_id}.two.do");
    assert_eq!(
        bench_effects(&participant_db).await.iter().find(|(id, _)| *id == two).map(|(_, n)| *n),
        Some(1),
        "step two committed its effect before the crash"
    );

    let mut second = participant(&prefix, &participant_db, None, delivery);
    o.wait_ended(std::slice::from_ref(&saga_id), Duration::from_secs(60)).await.unwrap();
    let (status, _) = o.history(&saga_id).await.unwrap();
    assert_eq!(status, "completed");
    // One effect per step.
    assert_bench_effects_once(&participant_db, 3).await;
    assert!(second.terminate(Duration::from_secs(20)).unwrap().success());
    o.stop().await;
}

on_each_backend!(
    participant_killed_between_commit_and_reply:
    participant_killed_between_commit_and_reply_sqlite,
    participant_killed_between_commit_and_reply_postgres
);

on_each_backend!(
    participant_killed_between_commit_and_reply_direct:
    participant_killed_between_commit_and_reply_direct_sqlite,
    participant_killed_between_commit_and_reply_direct_postgres
);
