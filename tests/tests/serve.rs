//! `skald serve` as a process: what it does on signals other than a stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::processes::skald_serve;
use orchestrator::api::auth::hash_token;
use sagas::protocol::Namespace;
use skald_tests::process::{ChildGuard, free_port, wait_port};
use skald_tests::{
    Backend, NATS_URL, PARTITIONS, TestDb, definitions_dir, delete_streams, three_steps, token,
};
use std::time::{Duration, Instant};

fn tokens_file(name: &str, token: &str) -> String {
    format!("tokens:\n  - {{name: {name}, role: viewer, sha256: {}}}\n", hash_token(token))
}

/// The HTTP status of `GET /v1/sagas` with `token`.
async fn status_with(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    let answer = http.get(format!("{base}/v1/sagas")).bearer_auth(token).send().await.unwrap();
    answer.status().as_u16()
}

/// SIGHUP loads the API tokens file again: a token added works, a token
/// removed stops working, without a restart; an invalid file leaves the
/// tokens in force as they were, and the process keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_loads_the_api_tokens_again() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let defs = definitions_dir(&[("three.yaml", &three_steps("2s", 3, 3))]).unwrap();
    let file = std::env::temp_dir().join(format!("skald-tokens-{}.yaml", token()));
    std::fs::write(&file, tokens_file("ann", "ann-secret")).unwrap();
    let port = free_port().unwrap();
    let prefix = format!("t{}", token());
    let mut cmd = skald_serve(NATS_URL, &prefix, &db.url, PARTITIONS, &defs);
    cmd.args(["--http-addr", &format!("127.0.0.1:{port}")])
        .arg("--api-tokens-file")
        .arg(&file)
        .env("RUST_LOG", "error");
    let mut skald = ChildGuard::spawn("skald", &mut cmd).unwrap();
    wait_port(port, Duration::from_secs(60)).unwrap();
    let (http, base) = (reqwest::Client::new(), format!("http://127.0.0.1:{port}"));
    assert_eq!(status_with(&http, &base, "ann-secret").await, 200);
    assert_eq!(status_with(&http, &base, "bob-secret").await, 401);

    let hangup = |pid: u32| {
        let sent = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status();
        assert!(sent.unwrap().success());
    };
    std::fs::write(&file, tokens_file("bob", "bob-secret")).unwrap();
    hangup(skald.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_with(&http, &base, "bob-secret").await != 200 {
        assert!(Instant::now() < deadline, "bob's token never worked after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_with(&http, &base, "ann-secret").await, 401, "ann's token still works");

    std::fs::write(&file, "tokens: [not a token line]\n").unwrap();
    hangup(skald.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_with(&http, &base, "bob-secret").await, 200, "a bad file took bob's token");
    assert!(skald.child.try_wait().unwrap().is_none(), "skald exited on SIGHUP");
    let status = skald.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "skald exited with {status} on SIGTERM");
    let _ = std::fs::remove_file(&file);
    let client = async_nats::connect(NATS_URL).await.unwrap();
    delete_streams(&client, &Namespace::new(&prefix).unwrap()).await;
}
