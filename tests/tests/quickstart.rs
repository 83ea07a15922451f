//! The README's first command: `skald up` runs the whole stack with a batch of
//! sample sagas (declines, provider faults) and the console; `--exit` says
//! whether everything ended as expected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skald_tests::process::ChildGuard;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `skald up` with the suites' binaries, in `dir`, on the shared NATS.
fn up(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skald-e2e"));
    cmd.arg("up")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .args(["--ledger-bin", env!("CARGO_BIN_EXE_ledger-e2e")])
        .args(["--payment-bin", env!("CARGO_BIN_EXE_payment-e2e")])
        .args(["--psp-sim-bin", env!("CARGO_BIN_EXE_psp-sim-e2e")])
        .env("NATS_URL", skald_tests::NATS_URL);
    cmd
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("skald-up-{}", skald_tests::token()))
}

/// The parent of process `pid`, while it is alive (a zombie counts as dead).
fn live_parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (name) state ppid ...`: the name may hold spaces, so read after the last `)`.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    (state != "Z").then(|| fields.next()?.parse().ok()).flatten()
}

/// Live processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| live_parent(*p) == Some(pid))
        .collect()
}

fn alive(pid: u32) -> bool {
    live_parent(pid).is_some()
}

/// `skald up` serving its console after a small batch, with the children it started.
fn serving(dir: &Path) -> (ChildGuard, Vec<u32>) {
    let mut cmd = up(dir, &["--sagas", "6", "--http-addr", "127.0.0.1:0"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut guard = ChildGuard::spawn("skald up", &mut cmd).unwrap();
    let stdout = guard.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Ctrl-C stops everything") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("skald up serves its console");
    let children = children_of(guard.pid());
    // psp-sim and payment at least (and nats-server when it started one).
    assert!(children.len() >= 2, "skald up started {children:?}");
    (guard, children)
}

/// Which of `pids` are still running after `within`; those are killed, so a
/// failing test leaves nothing behind either.
fn gone_within(pids: &[u32], within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            for pid in &left {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM (as a service manager sends) stops `skald up` and every process
/// it started; so does SIGHUP (the terminal closed).
#[test]
fn up_stops_every_process_it_started_on_sigterm_and_sighup() {
    for signal in ["-TERM", "-HUP"] {
        let dir = temp_dir();
        let (mut guard, children) = serving(&dir);
        let sent = Command::new("kill").args([signal, &guard.pid().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while guard.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "skald up outlived {signal} by 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = gone_within(&children, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(left.is_empty(), "after kill {signal}, still running: {left:?} of {children:?}");
    }
}

/// Killed outright (SIGKILL: no handler runs), `skald up` still takes its
/// children with it: each got a parent-death signal when it started.
#[test]
fn up_killed_outright_leaves_no_process_behind() {
    let dir = temp_dir();
    let (mut guard, children) = serving(&dir);
    guard.kill9();
    let left = gone_within(&children, Duration::from_secs(15));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(left.is_empty(), "after kill -9, still running: {left:?} of {children:?}");
}

/// Two `skald up` at once in different directories, on one NATS server and
/// with their default prefixes and addresses: both batches end as expected.
#[test]
fn two_ups_in_different_directories_do_not_interfere() {
    let dirs = [temp_dir(), temp_dir()];
    let runs: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let mut cmd = up(dir, &["--exit", "--json", "--sagas", "30"]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (run, dir) in runs.into_iter().zip(&dirs) {
        let out = run.wait_with_output().unwrap();
        let prefix = std::fs::read_to_string(dir.join("prefix")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(prefix.starts_with("quickstart-"), "the directory keeps its prefix: {prefix:?}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(summary["ok"], true, "{summary}");
    }
}

#[test]
fn up_runs_the_sample_sagas_serves_the_console_and_the_ledger_stays_sound() {
    let dir = temp_dir();
    let prefix = format!("t{}", skald_tests::token());
    let args =
        ["--exit", "--json", "--sagas", "60", "--http-addr", "127.0.0.1:0", "--prefix", &prefix];
    let out = up(&dir, &args).output().unwrap();
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
    // Every saga agrees across services with what its participants recorded.
    assert_eq!(summary["audit"]["checked"], 60, "{summary}");
    assert_eq!(summary["audit"]["agreeing"], 60, "{summary}");
    assert!(summary["console_url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert!(token.trim().starts_with("skald_"), "an admin token was made: {token:?}");
    assert!(stderr.contains("console"), "set-up lines go to stderr with --json: {stderr}");
}
