//! The `bench-participant` binary against real NATS: clear start-up errors,
//! the answers of the bench saga with injected faults, graceful SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sagas::protocol::{Command, Kind, Outcome};
use serde_json::json;
use skald_testkit::{ChildGuard, OrchestratorSide, TempDatabase, nats_url};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_bench-participant");

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
        .args([
            "--nats-url",
            &nats_url(),
            "--database-url",
            "postgres://bench:s3cret@127.0.0.1:1/db",
        ])
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

#[tokio::test]
async fn answers_the_bench_saga_with_injected_faults_and_stops_on_sigterm() {
    let mut wire =
        OrchestratorSide::open("bench", skald_participant::streams::ensure_streams).await.unwrap();
    let db = TempDatabase::new(skald_testkit::Backend::Sqlite).await.unwrap();
    let mut child = ChildGuard::spawn(
        "bench-participant",
        Process::new(BIN)
            .args(["--nats-url", &nats_url(), "--prefix", wire.ns.prefix(), "--fail-step", "2"])
            .args(["--fail-undo", "3", "--concurrency", "4"])
            .args(["--delivery", OrchestratorSide::DELIVERY.as_str()])
            .args(["--database-url", &db.connect_url()])
            .stderr(Stdio::null()),
    )
    .unwrap();

    let mut ask = async |step: u8, kind: Kind| -> Outcome {
        let action = match kind {
            Kind::Do => format!("step{step}"),
            Kind::Undo => format!("undo{step}"),
        };
        let command = wire.command("saga-1", &format!("s{step}"), kind, &action, 1);
        let command = Command { saga_type: "bench".into(), ..command };
        wire.ask(&command).await.outcome
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

    let status = child.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");
}
