//! The real `skald` binary, run as a user would: exit status, stdout and stderr.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const DEFINITIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sagas/definitions");

fn skald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skald")).args(args).output().expect("the skald binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// A file in a fresh directory of its own, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "skald-cli-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        Self { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn validating_the_shipped_definitions_succeeds() {
    let files: Vec<String> = ["topup", "payout", "bench"]
        .iter()
        .map(|n| Path::new(DEFINITIONS_DIR).join(format!("{n}.yaml")).to_str().unwrap().to_owned())
        .collect();
    let args: Vec<&str> =
        ["definitions", "validate"].into_iter().chain(files.iter().map(String::as_str)).collect();
    let output = skald(&args);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, (file, name)) in
        lines.iter().zip([(&files[0], "topup"), (&files[1], "payout"), (&files[2], "bench")])
    {
        let prefix = format!("ok  {file}  {name} v1 (3 steps, hash ");
        assert!(line.starts_with(&prefix), "{line:?} does not start with {prefix:?}");
        let hash = line.trim_start_matches(&prefix).trim_end_matches(')');
        assert_eq!(hash.len(), 12, "{line}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    }
}

#[test]
fn validating_a_bad_file_fails_and_names_file_step_and_field() {
    let bad = TempFile::new(
        "bad.yaml",
        "name: bad
version: 1
input_schema: { type: object }
steps:
  - name: hold
    participant: ledger
    action: hold
    compensaton: void
",
    );
    let output = skald(&["definitions", "validate", bad.path()]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let expected = format!("{}: step `hold`, field `compensaton`: ", bad.path());
    assert!(stderr.starts_with(&expected), "{stderr:?} does not start with {expected:?}");
    assert!(stderr.contains("did you mean `compensation`"), "{stderr}");
}

#[test]
fn one_bad_file_among_good_ones_fails_the_run() {
    let bad = TempFile::new("empty.yaml", "");
    let good = format!("{DEFINITIONS_DIR}/bench.yaml");
    let output = skald(&["definitions", "validate", &good, bad.path()]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with(&format!("ok  {good}  bench v1")), "{stdout}");
    assert!(stderr.contains(&format!("{}: field `(file)`: is empty", bad.path())), "{stderr}");
    assert!(stderr.contains("1 of 2 definition files are invalid"), "{stderr}");
}

#[test]
fn validating_a_missing_file_fails_with_a_clear_message() {
    let missing = std::env::temp_dir().join("skald-cli-no-such-dir/missing.yaml");
    let missing = missing.to_str().unwrap();
    let output = skald(&["definitions", "validate", missing]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{missing}: field `(file)`: cannot be read")), "{stderr}");
    assert!(stderr.contains("Fix: check the path"), "{stderr}");
}

#[test]
fn validate_without_files_is_a_usage_error() {
    let output = skald(&["definitions", "validate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("Usage: skald definitions validate <FILE>..."));
}

#[test]
fn validate_help_explains_usage_and_exit_status() {
    let output = skald(&["definitions", "validate", "--help"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.contains("Usage: skald definitions validate <FILE>..."), "{stdout}");
    assert!(stdout.contains("Examples:"), "{stdout}");
    assert!(stdout.contains("Exit status: 0 when every file is valid"), "{stdout}");
}

#[test]
fn show_prints_the_step_table() {
    let file = format!("{DEFINITIONS_DIR}/topup.yaml");
    let output = skald(&["definitions", "show", &file]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.starts_with("topup v1 (3 steps, hash "), "{stdout}");
    let charge = stdout.lines().find(|l| l.starts_with("2 ")).unwrap_or_default();
    let cells: Vec<&str> = charge.split_whitespace().collect();
    assert_eq!(cells, ["2", "charge", "payment", "charge", "refund", "10s", "3", "no"]);
}
