//! The README's first command: `skald up` runs the whole stack with a batch of
//! sample sagas (declines, provider faults) and the console; `--exit` says
//! whether everything ended as expected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn up_runs_the_sample_sagas_serves_the_console_and_the_ledger_stays_sound() {
    let dir = std::env::temp_dir().join(format!("skald-up-{}", skald_tests::token()));
    let out = Command::new(env!("CARGO_BIN_EXE_skald-e2e"))
        .args([
            "up",
            "--exit",
            "--json",
            "--sagas",
            "60",
            "--http-addr",
            "127.0.0.1:0",
            "--prefix",
            &format!("t{}", skald_tests::token()),
            "--data-dir",
        ])
        .arg(&dir)
        .args(["--ledger-bin", env!("CARGO_BIN_EXE_ledger-e2e")])
        .args(["--payment-bin", env!("CARGO_BIN_EXE_payment-e2e")])
        .args(["--psp-sim-bin", env!("CARGO_BIN_EXE_psp-sim-e2e")])
        .env("NATS_URL", skald_tests::NATS_URL)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "skald up failed: {stdout}{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["sagas"], 60);
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["ledger_sound"], true);
    for status in ["completed", "compensated", "failed"] {
        assert!(summary["by_status"][status].as_u64().unwrap_or(0) > 0, "{summary}");
    }
    assert!(summary["unexpected"].as_array().unwrap().is_empty(), "{summary}");
    assert!(summary["console_url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert!(token.trim().starts_with("skald_"), "an admin token was made: {token:?}");
    assert!(stderr.contains("console"), "set-up lines go to stderr with --json: {stderr}");
}
