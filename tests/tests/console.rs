#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The web console in headless Chromium: an orchestrator with its HTTP API on
//! a free port, sagas in several states made by a scripted participant, and
//! `tests/browser/console.mjs` (playwright-core) signing in, browsing,
//! filtering and aborting a saga, with a screenshot of every page in
//! `target/console-screenshots/`.
//!
//! Needs Node.js (20 or later) and Debian's `chromium` (or `$CHROMIUM`);
//! runs `npm ci` in `tests/browser` when its `node_modules` is missing.

use orchestrator::api::{Role, Tokens};
use sagas::protocol::{Kind, Outcome, StartResponse};
use serde_json::json;
use skald_tests::{
    Backend, RunningOrchestrator, Script, TestDb, definitions_dir, scripted_participant,
    three_steps, token,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;

const TOKEN: &str = "skald_console_browser_test_token";
/// The longest the browser script may take.
const BROWSER_RUN_MAX: Duration = Duration::from_secs(180);

fn chromium() -> PathBuf {
    let path =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        path.exists(),
        "no Chromium at {}: install Debian's `chromium` package (apt-get install -y chromium) \
         or point $CHROMIUM at a Chromium binary",
        path.display()
    );
    path
}

/// `tests/browser` with its `node_modules` (running `npm ci` if needed).
async fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .await
            .expect("npm runs (install Node.js 20 or later)");
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// The participant's answers, by the saga's input `n`:
/// 1 completes; 2 fails at s2 and is compensated; 3 never gets an answer to s1
/// (running, for the browser to abort; its undo is answered); 5 fails at s2
/// and the undo of s1 is refused, so it parks.
fn script() -> Script {
    Arc::new(|cmd| {
        let n = cmd.payload["n"]
            .as_i64()
            .or_else(|| cmd.payload["n"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        let ok = Some(Outcome::Ok { output: json!({ "ok": true, "by": "scripted" }) });
        let refuse = |code: &str| Some(Outcome::Failed { code: code.into(), message: "no".into() });
        match (n, cmd.kind, cmd.action.as_str()) {
            (3, Kind::Do, "a1") => None,
            (2 | 5, Kind::Do, "a2") => refuse("declined"),
            (5, Kind::Undo, "u1") => refuse("already_settled"),
            _ => ok,
        }
    })
}

async fn wait_for_status(o: &RunningOrchestrator, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = o.store.load(id).await.unwrap().unwrap().row.status;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "saga {id} is {status}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_headless_chromium() {
    let chromium = chromium();
    let browser = browser_dir().await;

    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let defs = definitions_dir(&[("three.yaml", &three_steps("30s", 3, 2))]).unwrap();
    let tokens = Tokens::single("ci-operator", Role::Operator, TOKEN);
    let mut o = RunningOrchestrator::start_with_http(&db, &format!("t{}", token()), defs, tokens)
        .await
        .unwrap();
    let addr = o.http_addr.expect("the HTTP API is on");
    let (_seen, stop) = scripted_participant(o.client.clone(), &o.ns, "p", script()).await.unwrap();

    let mut ids = Vec::new();
    for n in [1, 2, 5, 3] {
        let input = json!({ "n": n, "note": "<script>window.pwned = 1</script>" });
        match o.start_saga("three", &format!("console-{n}"), input).await.unwrap() {
            StartResponse::Started { saga_id, .. } => ids.push(saga_id),
            other => panic!("start refused: {other:?}"),
        }
    }
    for (id, want) in ids.iter().zip(["completed", "compensated", "parked", "running"]) {
        wait_for_status(&o, id, want).await;
    }
    let running = &ids[3];

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let run = Command::new("node")
        .arg(browser.join("console.mjs"))
        .arg(format!("http://{addr}"))
        .arg(TOKEN)
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BROWSER_RUN_MAX, run)
        .await
        .expect("the browser test finished in time")
        .expect("node runs (install Node.js 20 or later)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "the browser test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(&format!("saga {running} aborted")), "{stdout}");

    for name in [
        "01-login",
        "02-overview",
        "03-stuck",
        "04-list",
        "05-list-parked",
        "06-saga",
        "07-saga-repaired",
        "08-saga-after",
    ] {
        let file = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1_000, "screenshot {} is missing or empty", file.display());
    }

    // The abort the browser made is in the saga's history, with who and why.
    let history = o.store.history(running).await.unwrap();
    let text: Vec<&str> = history.iter().map(|e| e.event.as_str()).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("browser test: customer cancelled") && e.contains("ci-operator")),
        "no operator abort in {text:#?}"
    );
    let status = o.store.load(running).await.unwrap().unwrap().row.status;
    assert!(["compensating", "compensated"].contains(&status.as_str()), "{status}");

    stop.cancel();
    o.stop().await;
}
