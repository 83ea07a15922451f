//! The real `skald` binary, run as a user would: exit status, stdout and stderr.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/engine.rs"]
mod engine;

use engine::Engine;
use orchestrator::api::{Role, Tokens};
use serde_json::Value;
use skald_testkit::{Backend, fixtures};
use std::path::PathBuf;
use std::process::{Command, Output};
use tokio_util::sync::CancellationToken;

fn skald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skald")).args(args).output().expect("the skald binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// A shipped definition's path, as text for the command line.
fn shipped(name: &str) -> String {
    fixtures::shipped(name).to_str().expect("a UTF-8 path").to_owned()
}

/// A file in a fresh directory of its own, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let dir = fixtures::definitions_dir(&[(name, contents)]).unwrap();
        Self { path: dir.join(name), dir }
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
    let files: Vec<String> =
        ["topup", "payout", "bench"].iter().map(|n| shipped(&format!("{n}.yaml"))).collect();
    let args: Vec<&str> =
        ["definitions", "validate"].into_iter().chain(files.iter().map(String::as_str)).collect();
    let output = skald(&args);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, (file, name)) in lines.iter().zip([
        (&files[0], "topup v3"),
        (&files[1], "payout v3"),
        (&files[2], "bench v1"),
    ]) {
        let prefix = format!("ok  {file}  {name} (3 steps, hash ");
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
    let good = shipped("bench.yaml");
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
    let file = shipped("topup.yaml");
    let output = skald(&["definitions", "show", &file]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.starts_with("topup v3 (3 steps, hash "), "{stdout}");
    let charge = stdout.lines().find(|l| l.starts_with("2 ")).unwrap_or_default();
    let cells: Vec<&str> = charge.split_whitespace().collect();
    assert_eq!(cells, ["2", "charge", "payment", "charge", "refund", "10s", "3", "no", "-"]);
}

// ---- The operator commands against a real API server ----

/// Two steps on one participant; NATS is never needed: commands stay in the outbox.
const SAGA_YAML: &str = include_str!("fixtures/t.yaml");
/// Two waiting steps: an approval by saga id, then a payment by order number.
const WAIT_YAML: &str = include_str!("fixtures/w.yaml");

const OPERATOR_TOKEN: &str = "tok";
const ADMIN_TOKEN: &str = "admin-tok";

/// The real API router on 127.0.0.1:0 with a fresh SQLite database, stopped
/// (and the database removed) on drop.
struct Server {
    url: String,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Self {
        Self::start_with(&[SAGA_YAML])
    }

    /// The server with the definitions `yamls`.
    fn start_with(yamls: &[&'static str]) -> Self {
        let definitions = yamls.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let engine = Engine::new(Backend::Sqlite, &definitions).await;
                let mut tokens = Tokens::single("ann", Role::Operator, OPERATOR_TOKEN);
                tokens.insert("root", Role::Admin, ADMIN_TOKEN, None);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, engine.router(tokens, "test"))
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv().expect("the test server starts");
        Self { url: format!("http://{addr}"), shutdown, thread: Some(thread) }
    }

    /// `skald ARGS` against this server, with the URL and token from the environment.
    fn skald_as(&self, token: &str, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_skald"))
            .args(args)
            .env("SKALD_API_URL", &self.url)
            .env("SKALD_TOKEN", token)
            .output()
            .expect("the skald binary runs");
        Run::from(output)
    }

    fn skald(&self, args: &[&str]) -> Run {
        self.skald_as(OPERATOR_TOKEN, args)
    }

    fn start_saga(&self, key: &str) -> String {
        let run =
            self.skald(&["sagas", "start", "t", "--key", key, "--input", r#"{"n": 1}"#, "--json"]);
        assert_eq!(run.code, 0, "{run:?}");
        run.json()["saga_id"].as_str().unwrap().to_owned()
    }

    fn status_of(&self, saga_id: &str) -> String {
        let run = self.skald(&["sagas", "show", saga_id, "--json"]);
        assert_eq!(run.code, 0, "{run:?}");
        run.json()["status"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a `skald` run left: exit status, stdout and stderr.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: text(&o.stdout),
            stderr: text(&o.stderr),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The stderr is exactly one line.
    fn one_error_line(&self) -> &str {
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        self.stderr.trim_end()
    }
}

#[test]
fn start_is_idempotent_and_list_and_show_print_the_saga() {
    let server = Server::start();
    let first =
        server.skald(&["sagas", "start", "t", "--key", "order-1", "--input", r#"{"n": 1}"#]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.starts_with("started t saga "), "{first:?}");
    let id = first.stdout.split_whitespace().nth(3).unwrap().to_owned();
    assert_eq!(id.len(), 36, "ids are printed in full: {first:?}");

    let again =
        server.skald(&["sagas", "start", "t", "--key", "order-1", "--input", r#"{"n": 1}"#]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        again.stdout,
        format!("t saga {id} was already started with key order-1; nothing new started\n")
    );
    let json = server.skald(&[
        "sagas",
        "start",
        "t",
        "--key",
        "order-1",
        "--input",
        r#"{"n":1}"#,
        "--json",
    ]);
    assert_eq!(json.json(), serde_json::json!({"saga_id": id, "created": false}));
    let conflict =
        server.skald(&["sagas", "start", "t", "--key", "order-1", "--input", r#"{"n": 2}"#]);
    assert_eq!(conflict.code, 1, "{conflict:?}");
    assert!(conflict.one_error_line().ends_with("(409 idempotency_conflict)"), "{conflict:?}");
    let input = TempFile::new("input.json", r#"{"n": 7}"#);
    let other = server.skald(&[
        "sagas",
        "start",
        "t",
        "--key",
        "order-2",
        "--input",
        &format!("@{}", input.path()),
    ]);
    assert_eq!(other.code, 0, "{other:?}");

    let table = server.skald(&["sagas", "list", "--key", "order-1"]);
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<Vec<&str>> =
        table.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 2, "{table:?}");
    assert_eq!(lines[0], ["saga", "type", "status", "step", "attempt", "started", "key", "stuck"]);
    assert_eq!(lines[1][..5], [id.as_str(), "t", "running", "one", "1/3"], "{table:?}");
    assert_eq!(lines[1][6..], ["order-1", "-"], "{table:?}");
    let header = table.stdout.lines().next().unwrap();
    let row = table.stdout.lines().nth(1).unwrap();
    assert_eq!(header.find("type"), row.find(" t ").map(|i| i + 1), "columns line up:\n{table:?}");

    let listed = server.skald(&["sagas", "list", "--json", "--limit", "1"]);
    let page = listed.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{listed:?}");
    assert!(page["next_cursor"].is_string(), "{listed:?}");
    assert!(listed.stderr.contains("more sagas match: add --cursor"), "{listed:?}");
    let all = server.skald(&["sagas", "list", "--json", "--limit", "1", "--all"]);
    assert_eq!(all.json()["items"].as_array().unwrap().len(), 2, "{all:?}");
    let none = server.skald(&["sagas", "list", "--status", "failed"]);
    assert_eq!((none.code, none.stdout.as_str()), (0, ""), "{none:?}");

    let show = server.skald(&["sagas", "show", &id]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.starts_with(&format!("saga     {id}\ntype     t v1 (hash ")), "{show:?}");
    assert!(show.stdout.contains("\nstatus   running\n"), "{show:?}");
    assert!(show.stdout.contains("\nstep     one (do), attempt 1 of 3\n"), "{show:?}");
    assert!(show.stdout.contains("\ninput    {\"n\":1}\n"), "{show:?}");
    let step_one: Vec<&str> =
        show.stdout.lines().find(|l| l.starts_with("1  one")).unwrap().split_whitespace().collect();
    assert_eq!(step_one[..9], ["1", "one", "p", "do1", "undo1", "pending", "open", "1/3", "0/10"]);
    assert!(show.stdout.contains("reply to do until"), "{show:?}");
    let events: Vec<&str> = show
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("seq"))
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(events, ["saga_started", "command_sent"], "{show:?}");

    let missing = server.skald(&["sagas", "show", "no-such-saga"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(missing.one_error_line(), "skald: saga no-such-saga not found (404 not_found)");
}

#[test]
fn repairs_need_what_the_api_asks_for() {
    let server = Server::start();
    let id = server.start_saga("order-1");

    let no_reason = server.skald(&["sagas", "abort", &id]);
    assert_eq!(no_reason.code, 1, "{no_reason:?}");
    assert_eq!(no_reason.one_error_line(), "skald: `abort` needs a reason (422 invalid)");
    assert_eq!(server.status_of(&id), "running");

    let abort_args =
        ["sagas", "abort", &id, "--reason", "customer cancelled", "--request-id", "r-1"];
    let abort = server.skald(&abort_args);
    assert_eq!(abort.code, 0, "{abort:?}");
    assert!(
        abort.stdout.starts_with(&format!("abort {id}: now compensating; recorded ")),
        "{abort:?}"
    );
    assert!(abort.stdout.contains("compensation_started"), "{abort:?}");
    assert_eq!(server.status_of(&id), "compensating");

    let again = server.skald(&abort_args);
    assert_eq!(again.code, 0, "the same request id answers as the first time: {again:?}");
    assert!(again.stdout.contains("request r-1 was already done"), "{again:?}");

    let twice = server.skald(&["sagas", "abort", &id, "--reason", "again"]);
    assert_eq!(twice.code, 1, "{twice:?}");
    assert!(twice.one_error_line().ends_with("(409 not_now)"), "{twice:?}");

    let resolve =
        server.skald(&["sagas", "resolve", &id, "--outcome", "completed", "--evidence", "x"]);
    assert_eq!(resolve.code, 1, "only a parked saga can be resolved: {resolve:?}");
    let bad = server.skald(&["sagas", "resolve", &id, "--outcome", "won", "--evidence", "x"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    let no_evidence = server.skald(&["sagas", "resolve", &id, "--outcome", "failed"]);
    assert_eq!(no_evidence.code, 2, "{no_evidence:?}");
    assert!(no_evidence.stderr.contains("--evidence <TEXT>"), "{no_evidence:?}");
}

#[test]
fn signal_sends_an_event_by_saga_id_or_by_its_key() {
    let server = Server::start_with(&[WAIT_YAML]);
    let started = server.skald(&[
        "sagas",
        "start",
        "w",
        "--key",
        "w-1",
        "--input",
        r#"{"order": "o-1"}"#,
        "--json",
    ]);
    assert_eq!(started.code, 0, "{started:?}");
    let id = started.json()["saga_id"].as_str().unwrap().to_owned();
    let approve = ["sagas", "signal", &id, "approval", "--event-id", "e1", "--payload"];
    let taken = server.skald(&[&approve[..], &[r#"{"by": "ann"}"#]].concat());
    assert_eq!(taken.code, 0, "{taken:?}");
    assert_eq!(
        taken.stdout,
        format!(
            "event `approval` (e1) for saga {id} was taken by the step waiting for it; \
             the saga is running\n"
        )
    );
    let again = server.skald(&[&approve[..], &[r#"{"by": "ann"}"#]].concat());
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("(e1) for saga")
            && again.stdout.contains("was sent before; nothing changed"),
        "{again:?}"
    );

    let no_key = server.skald(&["sagas", "signal", "-", "paid", "--event-id", "p1"]);
    assert_eq!(no_key.code, 2, "{no_key:?}");
    assert!(no_key.stderr.contains("give --key"), "{no_key:?}");
    let other_key =
        server.skald(&["sagas", "signal", "-", "paid", "--key", "o-2", "--event-id", "p1"]);
    assert_eq!(other_key.code, 1, "no saga waits for that key: {other_key:?}");
    assert!(other_key.stderr.contains("404"), "{other_key:?}");
    let by_key =
        server.skald(&["sagas", "signal", "-", "paid", "--key", "o-1", "--event-id", "p1"]);
    assert_eq!(by_key.code, 0, "{by_key:?}");
    assert!(by_key.stdout.contains(&format!("for saga {id} was taken")), "{by_key:?}");
    assert!(by_key.stdout.ends_with("the saga is completed\n"), "{by_key:?}");
    assert_eq!(server.status_of(&id), "completed");

    let ended = server.skald(&["sagas", "signal", &id, "approval", "--event-id", "e2"]);
    assert_eq!(ended.code, 1, "{ended:?}");
    assert!(ended.one_error_line().ends_with("(409 ended)"), "{ended:?}");
    let not_json = server.skald(&[&approve[..], &["{"]].concat());
    assert_eq!(not_json.code, 2, "{not_json:?}");
}

#[test]
fn tokens_and_urls_that_do_not_work_say_what_to_do() {
    let server = Server::start();
    let bad = server.skald_as("forged", &["sagas", "list"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    let line = bad.one_error_line();
    assert!(line.contains("(401 unauthorized)"), "{line}");
    assert!(line.contains("set --token or SKALD_TOKEN"), "{line}");

    let flags = Command::new(env!("CARGO_BIN_EXE_skald"))
        .args(["sagas", "list", "--api-url", &server.url, "--token", OPERATOR_TOKEN, "--json"])
        .env_remove("SKALD_API_URL")
        .env_remove("SKALD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        Run::from(flags).json()["items"],
        serde_json::json!([]),
        "flags work like the environment"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let run = Run::from(
        Command::new(env!("CARGO_BIN_EXE_skald"))
            .args(["sagas", "list", "--api-url", &url])
            .env_remove("SKALD_TOKEN")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 3, "{run:?}");
    let line = run.one_error_line();
    assert!(line.starts_with(&format!("skald: cannot reach the Skald API at {url}: ")), "{line}");
    assert!(line.ends_with("is `skald serve` running? set --api-url or SKALD_API_URL"), "{line}");

    let not_a_url = server.skald(&["sagas", "list", "--api-url", "localhost:8080"]);
    assert_eq!(not_a_url.code, 2, "{not_a_url:?}");
    assert!(not_a_url.one_error_line().contains("--api-url `localhost:8080`"), "{not_a_url:?}");
    let bad_input = server.skald(&["sagas", "start", "t", "--key", "k", "--input", "{n: 1"]);
    assert_eq!(bad_input.code, 2, "{bad_input:?}");
}

#[test]
fn bulk_previews_then_repairs_every_matching_saga() {
    let server = Server::start();
    let ids: Vec<String> = (1..=3).map(|i| server.start_saga(&format!("bulk-{i}"))).collect();
    let other = server.start_saga("keep-1");
    let filter = ["--filter", "type=t", "--filter", "status=running", "--filter", "key=bulk-"];
    let args = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = vec!["sagas", "bulk", "abort"];
        a.extend(filter);
        a.extend(extra);
        a
    };

    let dry = server.skald(&args(&["--reason", "outage", "--dry-run"]));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.starts_with(
            "dry run: abort on 3 matching sagas: 3 would change, 0 would be refused; nothing was changed\n"
        ),
        "{dry:?}"
    );
    for id in &ids {
        assert!(dry.stdout.contains(id.as_str()), "{dry:?}");
        assert_eq!(server.status_of(id), "running", "a dry run changes nothing");
    }
    let dry_no_reason = server.skald(&args(&["--dry-run", "--json"]));
    let preview = dry_no_reason.json();
    assert_eq!(preview["would_fail"].as_array().unwrap().len(), 3, "{dry_no_reason:?}");
    assert!(preview["would_fail"][0]["error"].as_str().unwrap().contains("needs a reason"));

    let real =
        server.skald(&args(&["--reason", "outage", "--rate", "50", "--request-id", "job-1"]));
    assert_eq!(real.code, 0, "{real:?}");
    assert!(real.stderr.starts_with("bulk job job-1: abort on 3 sagas;"), "{real:?}");
    assert!(
        real.stderr.trim_end().ends_with(
            "bulk job job-1: 3/3 done (3 succeeded, 0 already done, 0 failed), finished"
        ),
        "{real:?}"
    );
    assert_eq!(real.stdout, "bulk abort job-1: 3 sagas, 3 succeeded, 0 already done, 0 failed\n");
    for id in &ids {
        assert_eq!(server.status_of(id), "compensating");
    }
    assert_eq!(server.status_of(&other), "running", "sagas outside the filter are untouched");

    let follow = server.skald(&args(&["--reason", "outage", "--request-id", "job-1", "--json"]));
    assert_eq!(follow.code, 0, "the same job id follows the job: {follow:?}");
    assert_eq!(follow.json()["succeeded"], 3, "{follow:?}");

    let filter_all =
        ["sagas", "bulk", "skip", "--filter", "key=bulk-", "--reason", "r", "--rate", "50"];
    let refused = server.skald(&filter_all);
    assert_eq!(refused.code, 1, "any failed saga fails the run: {refused:?}");
    assert!(refused.stdout.contains("3 failed\nfailed:\n"), "{refused:?}");

    let usage =
        server.skald(&["sagas", "bulk", "abort", "--filter", "colour=red", "--reason", "r"]);
    assert_eq!(usage.code, 2, "{usage:?}");
    assert!(usage.one_error_line().contains("unknown key `colour`"), "{usage:?}");
    let unfiltered = server.skald(&["sagas", "bulk", "abort", "--reason", "r"]);
    assert_eq!(unfiltered.code, 2, "a bulk repair needs a filter: {unfiltered:?}");
}

#[test]
fn definitions_list_show_and_apply_through_the_api() {
    let server = Server::start();
    let list = server.skald(&["definitions", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let rows: Vec<Vec<&str>> =
        list.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["name", "version", "newest", "steps", "hash", "description"]);
    assert_eq!(rows[1][..4], ["t", "1", "yes", "2"], "{list:?}");

    let show = server.skald(&["definitions", "show", "t"]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.starts_with("t v1 (2 steps, hash "), "{show:?}");
    assert!(show.stdout.contains(&format!("source:   {} (the newest", server.url)), "{show:?}");
    assert!(
        show.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["2", "two", "p", "do2", "undo2", "30s", "3", "no", "-"]),
        "{show:?}"
    );

    let v2 = TempFile::new("t2.yaml", &SAGA_YAML.replace("version: 1", "version: 2"));
    let forbidden = server.skald(&["definitions", "apply", v2.path()]);
    assert_eq!(forbidden.code, 1, "{forbidden:?}");
    assert_eq!(
        forbidden.one_error_line(),
        "skald: this needs the admin role; your token has operator (403 forbidden); \
         use a token with that role"
    );
    let applied = server.skald_as(ADMIN_TOKEN, &["definitions", "apply", v2.path()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(applied.stdout.starts_with("registered t v2 (hash "), "{applied:?}");
    let again = server.skald_as(ADMIN_TOKEN, &["definitions", "apply", v2.path()]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.ends_with("was already registered; nothing changed\n"), "{again:?}");
    let changed_v1 = TempFile::new("t1.yaml", &SAGA_YAML.replace("A test saga.", "Changed."));
    let older = server.skald_as(ADMIN_TOKEN, &["definitions", "apply", changed_v1.path()]);
    assert_eq!(older.code, 1, "v1 with other content is not newer: {older:?}");
    assert!(older.one_error_line().ends_with("(409 version_conflict)"), "{older:?}");
    let invalid = TempFile::new("bad.yaml", "name: t\nversion: 3\n");
    let refused = server.skald_as(ADMIN_TOKEN, &["definitions", "apply", invalid.path()]);
    assert_eq!(refused.code, 1, "checked locally first: {refused:?}");
    assert!(refused.stderr.starts_with(invalid.path()), "{refused:?}");

    let listed = server.skald(&["definitions", "list", "--json"]).json();
    let mut versions: Vec<(u64, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["version"].as_u64().unwrap(), d["newest"].as_bool().unwrap()))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, [(1, false), (2, true)]);
    let old = server.skald(&["definitions", "show", "t", "--version", "1"]);
    assert!(old.stdout.starts_with("t v1 "), "{old:?}");
    assert!(old.stdout.contains("(not the newest)"), "{old:?}");
    let missing = server.skald(&["definitions", "show", "nope"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(missing.one_error_line(), "skald: definition `nope` not found (404 not_found)");
}

#[test]
fn token_new_prints_a_token_and_the_line_that_grants_it() {
    let run = Run::from(
        Command::new(env!("CARGO_BIN_EXE_skald"))
            .args(["token", "new", "--name", "ann", "--role", "operator"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    let token = lines[0];
    let hash = orchestrator::api::auth::hash_token(token);
    assert_eq!(lines[1], format!("  - {{name: ann, role: operator, sha256: {hash}}}"));
    let tokens = Tokens::parse("tokens.yaml", &format!("tokens:\n{}\n", lines[1])).unwrap();
    let caller = tokens.check(token, std::time::SystemTime::now()).unwrap();
    assert_eq!((caller.name.as_str(), caller.role), ("ann", Role::Operator));
    assert!(run.stderr.contains("shown only now"), "{run:?}");

    let expiring = Run::from(
        Command::new(env!("CARGO_BIN_EXE_skald"))
            .args(["token", "new", "--name", "ci", "--role", "viewer"])
            .args(["--expires-at", "2999-01-01T00:00:00Z"])
            .output()
            .unwrap(),
    );
    assert!(expiring.stdout.contains("expires_at: 2999-01-01T00:00:00Z}"), "{expiring:?}");
    let past = skald(&[
        "token",
        "new",
        "--name",
        "x",
        "--role",
        "admin",
        "--expires-at",
        "2001-01-01T00:00:00Z",
    ]);
    assert_eq!(past.status.code(), Some(2));
}

#[test]
fn every_operator_command_has_examples_in_its_help() {
    for command in [
        &["sagas", "list"][..],
        &["sagas", "show"],
        &["sagas", "start"],
        &["sagas", "retry"],
        &["sagas", "skip"],
        &["sagas", "abort"],
        &["sagas", "resume"],
        &["sagas", "resolve"],
        &["sagas", "signal"],
        &["sagas", "bulk"],
        &["definitions", "list"],
        &["definitions", "show"],
        &["definitions", "apply"],
        &["definitions", "diff"],
        &["definitions", "check"],
        &["sagas", "migrate"],
        &["sagas", "export"],
        &["token", "new"],
    ] {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let output = skald(&args);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{command:?}");
        assert!(stdout.contains(&format!("skald {}", command.join(" "))), "{command:?}:\n{stdout}");
        assert!(stdout.contains("Example"), "{command:?}:\n{stdout}");
    }
    let help = text(&skald(&["sagas", "list", "--help"]).stdout);
    assert!(help.contains("[env: SKALD_API_URL"), "{help}");
    assert!(help.contains("[env: SKALD_TOKEN]"), "the token's value is never shown: {help}");
}

#[test]
fn definitions_diff_check_and_migrate_from_the_command_line() {
    let three = "  - name: three\n    participant: p\n    action: do3\n    compensation: undo3\n";
    let v1 = TempFile::new("t1.yaml", SAGA_YAML);
    let v2 = TempFile::new(
        "t2.yaml",
        &format!("{}{three}", SAGA_YAML.replace("version: 1", "version: 2")),
    );
    let same = Run::from(skald(&["definitions", "diff", v1.path(), v1.path()]));
    assert_eq!(same.code, 0, "{same:?}");
    let diff = Run::from(skald(&["definitions", "diff", v1.path(), v2.path()]));
    assert_eq!(diff.code, 1, "{diff:?}");
    assert!(diff.stdout.starts_with("t v1 → t v2\n"), "{diff:?}");
    assert!(diff.stdout.contains("\n+ step #3 `three` (p.do3)\n"), "{diff:?}");

    let server = Server::start();
    let started = server.skald(&["sagas", "start", "t", "--key", "evolve", "--input", "{}"]);
    let id = started.stdout.split_whitespace().nth(3).unwrap().to_owned();
    let checked = server.skald(&["definitions", "check", v2.path(), "--running"]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(checked.stdout.starts_with("t v2: 1 running, 1 examined: 1 could move"), "{checked:?}");
    let applied = server.skald_as(ADMIN_TOKEN, &["definitions", "apply", v2.path()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(applied.stdout.contains("1 could move to v2"), "{applied:?}");
    let dry =
        server.skald(&["sagas", "migrate", &id, "--to-version", "2", "--reason", "r", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("could be done"), "{dry:?}");
    let moved =
        server.skald(&["sagas", "migrate", &id, "--to-version", "2", "--reason", "add three"]);
    assert_eq!(moved.code, 0, "{moved:?}");
    assert!(moved.stdout.ends_with("recorded definition_changed\n"), "{moved:?}");
    let again = server.skald(&["sagas", "migrate", &id, "--to-version", "2", "--reason", "again"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.one_error_line().ends_with("(409 incompatible)"), "{again:?}");
}

#[test]
fn export_writes_sagas_whole_to_compressed_json_lines() {
    let server = Server::start();
    for key in ["x-1", "x-2"] {
        let started = server.skald(&["sagas", "start", "t", "--key", key, "--input", "{}"]);
        assert_eq!(started.code, 0, "{started:?}");
    }
    let dir = std::env::temp_dir().join(format!("skald-export-{}", std::process::id()));
    let out = dir.display().to_string();
    let exported = server.skald(&["sagas", "export", "--out", &out, "--type", "t"]);
    assert_eq!(exported.code, 0, "{exported:?}");
    assert!(exported.stdout.starts_with(&format!("exported 2 sagas to {out}")), "{exported:?}");
    let lines = fixtures::gz_json_lines(&dir);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["events"][0]["event"]["type"] == "saga_started"), "{lines:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
