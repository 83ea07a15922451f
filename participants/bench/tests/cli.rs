//! The `bench-participant` binary against real NATS: clear start-up errors,
//! the answers of the bench saga with injected faults, graceful SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use futures::StreamExt;
use sagas::UnixMillis;
use sagas::protocol::{
    Command, HEADER_MSG_ID, Kind, Namespace, Outcome, Reply, command_id, msg_id,
};
use serde_json::json;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bench-participant");
const NATS_URL: &str = "nats://127.0.0.1:4222";

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[test]
fn unreachable_nats_is_a_clear_error() {
    let out = Process::new(BIN).args(["--nats-url", "nats://127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach NATS at nats://127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("nats-server -js"), "{stderr}");
}

#[test]
fn unreachable_database_is_a_clear_error_without_the_password() {
    let out = Process::new(BIN)
        .args(["--nats-url", NATS_URL, "--database-url", "postgres://bench:s3cret@127.0.0.1:1/db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the database at postgres://bench:***@127.0.0.1:1/db"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// Kills the child if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn answers_the_bench_saga_with_injected_faults_and_stops_on_sigterm() {
    let ns = Namespace::new(&format!("t{}", random_hex())).unwrap();
    let db = std::env::temp_dir().join(format!("bench-{}.db", random_hex()));
    let nats = async_nats::connect(NATS_URL).await.unwrap();
    let js = jetstream::new(nats);
    let (_, replies) = skald_participant::streams::ensure_streams(&js, &ns).await.unwrap();
    let mut replies = replies
        .create_consumer(pull::Config {
            durable_name: Some("test".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();

    let mut child = Running(
        Process::new(BIN)
            .args(["--nats-url", NATS_URL, "--prefix", ns.prefix(), "--fail-step", "2"])
            .args(["--fail-undo", "3", "--concurrency", "4"])
            .arg("--database-url")
            .arg(format!("sqlite://{}?mode=rwc", db.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let mut ask = async |step: u8, kind: Kind| -> Outcome {
        let action = match kind {
            Kind::Do => format!("step{step}"),
            Kind::Undo => format!("undo{step}"),
        };
        let name = format!("s{step}");
        let command = Command {
            command_id: command_id("saga-1", &name, kind),
            saga_id: "saga-1".into(),
            saga_type: "bench".into(),
            step: name,
            kind,
            action: action.clone(),
            attempt: 1,
            payload: json!({ "saga": "saga-1" }),
            deadline_unix_ms: UnixMillis(u64::MAX / 2),
            reply_subject: ns.reply_subject(0),
        };
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, msg_id(&command.command_id, 1).as_str());
        let body = serde_json::to_vec(&command).unwrap();
        js.publish_with_headers(ns.command_subject("bench", &action), headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .expect("the bench participant answers")
            .unwrap()
            .unwrap();
        msg.ack().await.unwrap();
        let reply: Reply = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(reply.command_id, command.command_id);
        reply.outcome
    };

    assert_eq!(
        ask(1, Kind::Do).await,
        Outcome::Ok { output: json!({"step": 1, "saga": "saga-1"}) }
    );
    assert!(
        matches!(ask(2, Kind::Do).await, Outcome::Failed { code, .. } if code == "bench_refused")
    );
    assert!(matches!(ask(3, Kind::Do).await, Outcome::Ok { .. }));
    assert!(
        matches!(ask(3, Kind::Undo).await, Outcome::Retry { code, .. } if code == "bench_unavailable")
    );
    assert_eq!(ask(1, Kind::Undo).await, Outcome::Ok { output: json!({"undone": 1}) });

    let pid = child.0.id().to_string();
    assert!(Process::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");

    let _ = js.delete_stream(ns.commands_stream()).await;
    let _ = js.delete_stream(ns.replies_stream()).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
