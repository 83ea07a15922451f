//! The README's first command: `skald quickstart` runs the whole stack with a
//! batch of sample sagas and says whether everything ended as expected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn quickstart_runs_the_sample_sagas_and_the_ledger_stays_sound() {
    let dir = std::env::temp_dir().join(format!("skald-qs-{}", skald_tests::token()));
    let out = Command::new(env!("CARGO_BIN_EXE_skald-e2e"))
        .args([
            "quickstart",
            "--sagas",
            "12",
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
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "quickstart failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ledger verify: sound"), "{stdout}");
    assert!(
        stdout.contains("compensated") && stdout.contains("completed") && stdout.contains("failed"),
        "{stdout}"
    );
}
