//! The fault suite: Skald under load on PostgreSQL while things break, each
//! scenario checked against DESIGN.md's invariants 1-6 once it has healed.
//!
//! One test per scenario: `kill -9` of an orchestrator, of each participant
//! (bench, ledger, payment) and of psp-sim; PostgreSQL stopped with
//! `-m immediate` and started again; nats-server killed and restarted; commands
//! and replies dropped, duplicated, delayed and reordered by the orchestrator's
//! seeded fault layer (`SKALD_FAULTS`); a participant that answers twice or
//! after the step timed out; a poison command whose handler panics every time;
//! oversized payloads; malformed JSON on every subject and API route; hostile
//! strings (SQL, NUL, 64 KiB) in every input; calls without a token, with an
//! expired or forged one, and a viewer's repair.
//!
//! After each, [`verify`] checks invariants 1 (one saga per accepted start and
//! key, no saga lost or added), 2 (every saga ended; parked only with a
//! reason), 5 (seq 1..n without gaps, one terminal event and nothing after it,
//! one recorded success and compensation per step, and at the participant one
//! effect per command, matching how the saga ended) and 6 (a write under a
//! stale epoch or by another owner is rejected, probed on every partition);
//! the money scenario also checks 3 (`ledger verify`, and each saga's hold
//! posted or voided as it ended) and 4 (the provider's charges). A panic in any
//! process's log fails the scenario too. Each test prints one line
//! `FAULT-ROW scenario|sagas run|terminal|parked (reasons)|violations|heal ms`
//! that `tests/fault-suite` turns into a table; "heal" runs from the moment
//! the fault was removed until every saga had ended.
//!
//! Sizes are small by default (CI); `FAULTS_FULL=1` runs the full ones. The
//! tests take turns (one lock), so `cargo test` may run them on any number of
//! threads. Child processes write their logs under `$TMPDIR/skald-faults/`,
//! kept when a test fails; `FAULTS_SKALD_LOG=info` raises the orchestrators'
//! level (default `warn`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_nats::jetstream::{self, AckKind, consumer::pull};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::StreamExt;
use orchestrator::api::{self, ApiState, Role, Tokens};
use orchestrator::driver::Driver;
use orchestrator::partitions::Ownership;
use orchestrator::registry::Registry;
use orchestrator::store::{Append, Fence, Projection, Store, StoreError};
use payment::api::ChargeList;
use sagas::machine::{CompensationCause, SagaEvent};
use sagas::protocol::{
    Command, HEADER_MSG_ID, Kind, Namespace, Outcome, Reply, StartRequest, StartResponse,
};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};
use skald_participant::{HandlerCtx, HandlerError, HandlerResult, Participant};
use skald_tests::process::{ChildGuard, NatsServer, free_port, wait_port};
use skald_tests::{
    Backend, NATS_URL, PARTITIONS, RunningOrchestrator, Script, TestDb, definitions_dir,
    delete_streams, scripted_participant, token,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

// ---------------------------------------------------------------------------
// Sizes, turns, and the row each scenario prints
// ---------------------------------------------------------------------------

/// `FAULTS_FULL=1`: the full sizes.
fn full() -> bool {
    std::env::var("FAULTS_FULL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Sagas of load: `ci` by default, `full_size` with `FAULTS_FULL=1`.
fn sagas(ci: usize, full_size: usize) -> usize {
    if full() { full_size } else { ci }
}

/// The scenarios take turns: each starts processes and loads the machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long every saga may take to end once a fault has healed.
const HEAL_MAX: Duration = Duration::from_secs(180);
/// Lease TTL of the `skald` processes: a killed instance's partitions move after about this long.
const LEASE_TTL_MS: &str = "2000";

/// At most 300 characters of `s` (hostile inputs are long).
fn short(s: &str) -> String {
    if s.chars().count() <= 300 {
        return s.to_owned();
    }
    let head: String = s.chars().take(300).collect();
    format!("{head}…")
}

/// What a scenario found.
#[derive(Debug, Default)]
struct Tally {
    run: usize,
    terminal: usize,
    by_status: BTreeMap<String, usize>,
    parked: BTreeMap<String, usize>,
    /// Broken invariants of DESIGN.md (1-6): must stay empty.
    violations: Vec<String>,
    /// Other expectations of the scenario that did not hold.
    failures: Vec<String>,
}

impl Tally {
    fn violation(&mut self, v: String) {
        self.violations.push(short(&v));
    }

    fn fail(&mut self, f: String) {
        self.failures.push(short(&f));
    }

    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(short(&what()));
        }
    }

    /// Print the scenario's row, then fail the test if anything broke.
    fn finish(self, scenario: &str, heal: Duration) {
        let parked_total: usize = self.parked.values().sum();
        let parked = if parked_total == 0 {
            "0".to_owned()
        } else {
            let reasons: Vec<String> =
                self.parked.iter().map(|(r, n)| format!("{r}={n}")).collect();
            format!("{parked_total} ({})", reasons.join(", "))
        };
        println!("{scenario}: {:?}", self.by_status);
        for v in self.violations.iter().take(20) {
            println!("  VIOLATION {v}");
        }
        for f in self.failures.iter().take(20) {
            println!("  FAILED {f}");
        }
        println!(
            "FAULT-ROW {scenario}|{}|{}|{parked}|{}|{}",
            self.run,
            self.terminal,
            self.violations.len(),
            heal.as_millis()
        );
        assert!(
            self.violations.is_empty() && self.failures.is_empty(),
            "{scenario}: {} invariant violations {:?}; {} failed expectations {:?}",
            self.violations.len(),
            self.violations.iter().take(5).collect::<Vec<_>>(),
            self.failures.len(),
            self.failures.iter().take(5).collect::<Vec<_>>(),
        );
    }
}

// ---------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------

/// Three compensable steps on the bench participant; the input's `note`
/// travels in every command.
const FLOW: &str = r#"
name: flow
version: 1
description: Three compensable steps on the bench participant, for the fault suite.
input_schema:
  type: object
  required: [note]
  properties:
    note: { type: string }
steps:
  - name: one
    participant: bench
    action: step1
    compensation: undo1
    timeout: 1s
    retry: { attempts: 10, initial_backoff: 100ms, max_backoff: 1s }
    compensation_retry: { attempts: 30, initial_backoff: 100ms, max_backoff: 1s }
    input: { saga: "{{saga.id}}", note: "{{input.note}}" }
  - name: two
    participant: bench
    action: step2
    compensation: undo2
    timeout: 1s
    retry: { attempts: 10, initial_backoff: 100ms, max_backoff: 1s }
    compensation_retry: { attempts: 30, initial_backoff: 100ms, max_backoff: 1s }
    input: { saga: "{{saga.id}}", note: "{{input.note}}" }
  - name: three
    participant: bench
    action: step3
    compensation: undo3
    timeout: 1s
    retry: { attempts: 10, initial_backoff: 100ms, max_backoff: 1s }
    compensation_retry: { attempts: 30, initial_backoff: 100ms, max_backoff: 1s }
    input: { saga: "{{saga.id}}", note: "{{input.note}}" }
"#;
const FLOW_STEPS: [&str; 3] = ["one", "two", "three"];

/// One step on a participant that never answers its `do` (so the saga waits
/// for an operator's abort) and answers its `undo`.
const HELD: &str = r#"
name: held
version: 1
description: Waits on a step that is never answered, for repairs.
input_schema: { type: object }
steps:
  - name: wait
    participant: slowp
    action: wait
    compensation: unwait
    timeout: 5m
    retry: { attempts: 1, initial_backoff: 1s, max_backoff: 1s }
    compensation_retry: { attempts: 10, initial_backoff: 50ms, max_backoff: 500ms }
    input: { saga: "{{saga.id}}" }
"#;

/// A participant (`lp`) that answers twice, or late.
const LATE: &str = r#"
name: late
version: 1
description: Steps whose answers come twice or after the timeout.
input_schema: { type: object, required: [n], properties: { n: { type: integer } } }
steps:
  - name: s1
    participant: lp
    action: a1
    compensation: u1
    timeout: 1s
    retry: { attempts: 3, initial_backoff: 50ms, max_backoff: 200ms }
    compensation_retry: { attempts: 10, initial_backoff: 50ms, max_backoff: 500ms }
    input: { n: "{{input.n}}" }
  - name: s2
    participant: lp
    action: a2
    compensation: u2
    timeout: 1s
    retry: { attempts: 1, initial_backoff: 50ms, max_backoff: 200ms }
    compensation_retry: { attempts: 10, initial_backoff: 50ms, max_backoff: 500ms }
    input: { n: "{{input.n}}" }
  - name: s3
    participant: lp
    action: a3
    compensation: u3
    timeout: 1s
    retry: { attempts: 3, initial_backoff: 50ms, max_backoff: 200ms }
    compensation_retry: { attempts: 10, initial_backoff: 50ms, max_backoff: 500ms }
    input: { n: "{{input.n}}" }
"#;
/// When `lp` answers late: well after its steps' 1 s timeout.
const LATE_BY: Duration = Duration::from_secs(3);

/// Two steps on an SDK participant (`pz`) whose handlers panic on poison.
const POISON: &str = r#"
name: poison
version: 1
description: Two steps; `poison` makes a handler panic every time.
input_schema:
  type: object
  required: [n, poison]
  properties:
    n: { type: integer }
    poison: { type: string }
steps:
  - name: s1
    participant: pz
    action: a1
    compensation: u1
    timeout: 2s
    retry: { attempts: 6, initial_backoff: 20ms, max_backoff: 200ms }
    compensation_retry: { attempts: 6, initial_backoff: 20ms, max_backoff: 200ms }
    input: { n: "{{input.n}}", poison: "{{input.poison}}" }
  - name: s2
    participant: pz
    action: a2
    compensation: u2
    timeout: 2s
    retry: { attempts: 6, initial_backoff: 20ms, max_backoff: 200ms }
    compensation_retry: { attempts: 6, initial_backoff: 20ms, max_backoff: 200ms }
    input: { n: "{{input.n}}", poison: "{{input.poison}}" }
"#;
const POISON_STEPS: [&str; 2] = ["s1", "s2"];

/// Two steps on a scripted participant (`p`); `pad` goes into the first
/// command, the first step's `blob` output into the second.
const BIG: &str = r#"
name: big
version: 1
description: Payloads near and over the limits.
input_schema:
  type: object
  required: [n, pad, big_output]
  properties:
    n: { type: integer }
    pad: { type: string }
    big_output: { type: boolean }
steps:
  - name: s1
    participant: p
    action: a1
    compensation: u1
    timeout: 2s
    retry: { attempts: 3, initial_backoff: 20ms, max_backoff: 100ms }
    compensation_retry: { attempts: 10, initial_backoff: 20ms, max_backoff: 100ms }
    input: { n: "{{input.n}}", pad: "{{input.pad}}", big_output: "{{input.big_output}}" }
  - name: s2
    participant: p
    action: a2
    compensation: u2
    timeout: 2s
    retry: { attempts: 3, initial_backoff: 20ms, max_backoff: 100ms }
    compensation_retry: { attempts: 10, initial_backoff: 20ms, max_backoff: 100ms }
    input: { blob: "{{steps.s1.output.blob}}" }
"#;

// ---------------------------------------------------------------------------
// A test's world: databases, prefix, definitions, processes
// ---------------------------------------------------------------------------

struct World {
    prefix: String,
    ns: Namespace,
    defs: PathBuf,
    nats_url: String,
    /// The orchestrator's database.
    db_url: String,
    /// The (first) participant's database.
    pdb_url: String,
    dbs: Vec<TestDb>,
    logs: PathBuf,
    /// `--lease-ttl-ms` of the `skald` processes.
    lease_ttl_ms: &'static str,
}

impl World {
    /// Two fresh databases on the machine's PostgreSQL.
    async fn new(scenario: &str, nats_url: &str, definitions: &[(&str, &str)]) -> Self {
        let db = TestDb::new(Backend::Postgres).await.unwrap();
        let pdb = TestDb::new(Backend::Postgres).await.unwrap();
        let (db_url, pdb_url) = (db.url.clone(), pdb.url.clone());
        Self::on(scenario, nats_url, db_url, pdb_url, definitions, vec![db, pdb])
    }

    fn on(
        scenario: &str,
        nats_url: &str,
        db_url: String,
        pdb_url: String,
        definitions: &[(&str, &str)],
        dbs: Vec<TestDb>,
    ) -> Self {
        let prefix = format!("x{}", token());
        let logs = std::env::temp_dir().join("skald-faults").join(format!("{scenario}-{prefix}"));
        std::fs::create_dir_all(&logs).unwrap();
        Self {
            ns: Namespace::new(&prefix).unwrap(),
            prefix,
            defs: definitions_dir(definitions).unwrap(),
            nats_url: nats_url.to_owned(),
            db_url,
            pdb_url,
            dbs,
            logs,
            lease_ttl_ms: LEASE_TTL_MS,
        }
    }

    fn log(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .unwrap()
    }

    /// A `skald serve` process; `envs` may set `RUST_LOG`.
    fn skald(&self, instance: &str, envs: &[(&str, &str)]) -> ChildGuard {
        let mut cmd = Process::new(env!("CARGO_BIN_EXE_skald-e2e"));
        cmd.args(["serve", "--partitions", &PARTITIONS.to_string(), "--prefix", &self.prefix])
            .args(["--database-url", &self.db_url, "--instance", instance])
            .args(["--lease-ttl-ms", self.lease_ttl_ms, "--http-addr", "off"])
            .arg("--definitions")
            .arg(&self.defs)
            .env("NATS_URL", &self.nats_url)
            .env("RUST_LOG", std::env::var("FAULTS_SKALD_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(self.log(instance));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        ChildGuard::spawn(instance, &mut cmd).unwrap()
    }

    /// The bench participant, on the participant database.
    fn bench(&self, args: &[&str]) -> ChildGuard {
        let mut cmd = Process::new(env!("CARGO_BIN_EXE_participant-e2e"));
        cmd.args(["--prefix", &self.prefix, "--database-url", &self.pdb_url])
            .args(["--concurrency", "128"])
            .args(args)
            .env("NATS_URL", &self.nats_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(self.log("bench"));
        ChildGuard::spawn("bench", &mut cmd).unwrap()
    }

    /// A `skald serve` process, once it has joined the cluster (heartbeat in
    /// `members`); started again when it gave up at start-up (a busy database).
    async fn skald_ready(
        &self,
        store: &Store,
        instance: &str,
        envs: &[(&str, &str)],
    ) -> ChildGuard {
        for _ in 0..3 {
            let since = orchestrator::clock::to_db(orchestrator::clock::now());
            let mut child = self.skald(instance, envs);
            let sql = format!(
                "SELECT count(*) AS n FROM members WHERE instance = '{instance}' \
                 AND heartbeat_at_ms >= {since}"
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if count(store.db(), &sql).await == Ok(1) {
                    return child;
                }
                if matches!(child.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("{instance} did not start; see {}", self.logs.display());
    }

    /// The bench participant, once it is ready (its table exists); started again
    /// when it gave up at start-up (a database too busy to answer in time).
    async fn bench_ready(&self, args: &[&str]) -> ChildGuard {
        for _ in 0..3 {
            let mut child = self.bench(args);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if table_exists(&self.pdb_url, "bench_effects").await {
                    return child;
                }
                if matches!(child.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("the bench participant did not start; see {}", self.logs.display());
    }

    /// A program of the money scenario, logging to its own file.
    fn program(&self, name: &str, bin: &str, args: &[&str], envs: &[(&str, &str)]) -> ChildGuard {
        let mut cmd = Process::new(bin);
        cmd.args(args).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(self.log(name));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        ChildGuard::spawn(name, &mut cmd).unwrap()
    }

    async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.nats_url).await.unwrap()
    }

    async fn store(&self) -> Store {
        Store::connect(&self.db_url).await.unwrap()
    }
}

impl World {
    /// Fail on any panic a process logged (a debug assertion that did not
    /// break an invariant still shows a bug), then print the row.
    fn finish(&self, mut tally: Tally, scenario: &str, heal: Duration) {
        for entry in std::fs::read_dir(&self.logs).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("panicked at")) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let next = text.lines().skip_while(|l| !l.contains("panicked at")).nth(1);
                tally.fail(format!("{name}: {line} {}", next.unwrap_or_default()));
            }
        }
        tally.finish(scenario, heal);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.defs);
        if std::thread::panicking() {
            eprintln!("logs of the processes are kept in {}", self.logs.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

/// Whether `table` exists in the database at `url` (false while it cannot be reached).
async fn table_exists(url: &str, table: &str) -> bool {
    let Ok(db) = Database::connect(url).await else { return false };
    let found = db
        .query_one(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM information_schema.tables WHERE table_name = $1",
            [table.into()],
        ))
        .await
        .is_ok_and(|r| r.is_some());
    let _ = db.close().await;
    found
}

/// A PostgreSQL server this test owns, so it may stop it: `initdb` into a
/// temporary directory, `pg_ctl` to start and stop (as the `postgres` user
/// when the test runs as root, since PostgreSQL refuses to run as root).
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("skald-pg-{}", token()));
        std::fs::create_dir_all(&dir).unwrap();
        let uid = Process::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres {
            let chown = Process::new("chown").arg("postgres:postgres").arg(&dir).status().unwrap();
            assert!(chown.success(), "cannot hand {} to the postgres user", dir.display());
        }
        let pg = Self { dir, port: free_port().unwrap(), as_postgres };
        let dir = pg.dir.display().to_string();
        pg.run("initdb", &["-D", &dir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .unwrap();
        pg.up();
        pg
    }

    fn bin(tool: &str) -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect())
            .unwrap_or_default();
        versions.sort();
        versions
            .into_iter()
            .rev()
            .map(|b| b.join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(tool))
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = if self.as_postgres {
            let mut c = Process::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Self::bin(tool));
            c
        } else {
            Process::new(Self::bin(tool))
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn up(&self) {
        let dir = self.dir.display().to_string();
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port
        );
        let log = format!("{dir}/postgres.log");
        self.run("pg_ctl", &["-D", &dir, "-l", &log, "-w", "-t", "60", "-o", &options, "start"])
            .unwrap();
    }

    fn stop_immediate(&self) {
        let dir = self.dir.display().to_string();
        self.run("pg_ctl", &["-D", &dir, "-m", "immediate", "-w", "stop"]).unwrap();
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    async fn create_database(&self, name: &str) -> String {
        let admin = Database::connect(self.url("postgres")).await.unwrap();
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
        admin.close().await.unwrap();
        self.url(name)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &dir, "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Load: sagas started over NATS, as clients would
// ---------------------------------------------------------------------------

/// A saga a client had accepted.
#[derive(Debug, Clone)]
struct Begun {
    saga_type: String,
    key: String,
    id: String,
    input: Value,
}

/// The i-th saga of a load: (type, idempotency key, input).
type Make = Arc<dyn Fn(usize) -> (String, String, Value) + Send + Sync>;

fn flow_load() -> Make {
    Arc::new(|i| ("flow".to_owned(), format!("k{i}"), json!({ "note": format!("note {i}") })))
}

/// Sagas of `flow` started after a barrage of junk.
fn after_load() -> Make {
    Arc::new(|i| ("flow".to_owned(), format!("after-{i}"), json!({ "note": "after" })))
}

/// `total` sagas started `concurrency` at a time; a start no orchestrator
/// answers (or answers `unavailable`) is sent again with the same key.
struct Load {
    begun: Arc<Mutex<Vec<Begun>>>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(
        client: &async_nats::Client,
        ns: &Namespace,
        total: usize,
        concurrency: usize,
        make: Make,
    ) -> Self {
        let begun = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let count = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (client, ns, make) = (client.clone(), ns.clone(), make.clone());
            let (begun, count, next) = (begun.clone(), count.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    let (saga_type, key, input) = make(i);
                    let id = start_one(&client, &ns, &saga_type, &key, &input).await;
                    begun.lock().unwrap().push(Begun { saga_type, key, id, input });
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let task = tokio::spawn(async move {
            for w in workers {
                w.await.unwrap();
            }
        });
        Self { begun, count, task }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    async fn until(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.count() < n {
            assert!(!self.task.is_finished(), "the load stopped after {} starts", self.count());
            assert!(Instant::now() < deadline, "only {} of {n} sagas started", self.count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn some_id(&self) -> String {
        self.begun.lock().unwrap().first().map(|b| b.id.clone()).unwrap()
    }

    async fn finish(self) -> Vec<Begun> {
        self.task.await.unwrap();
        self.begun.lock().unwrap().clone()
    }
}

async fn start_one(
    client: &async_nats::Client,
    ns: &Namespace,
    saga_type: &str,
    key: &str,
    input: &Value,
) -> String {
    let body =
        serde_json::to_vec(&StartRequest { idempotency_key: key.to_owned(), input: input.clone() })
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match start_request(client, ns, saga_type, body.clone()).await {
            Some(StartResponse::Started { saga_id } | StartResponse::Existing { saga_id }) => {
                return saga_id;
            }
            Some(StartResponse::Refused { code, .. }) if code == "unavailable" => {}
            None => {}
            Some(other) => panic!("start of {key} refused: {other:?}"),
        }
        assert!(Instant::now() < deadline, "no orchestrator accepted the start of {key}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One start request; `None` when nobody answered in time.
async fn start_request(
    client: &async_nats::Client,
    ns: &Namespace,
    saga_type: &str,
    body: Vec<u8>,
) -> Option<StartResponse> {
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(ns.start_subject(saga_type), body.into()),
    )
    .await;
    match answer {
        Ok(Ok(msg)) => Some(
            serde_json::from_slice(&msg.payload)
                .unwrap_or_else(|e| panic!("a start answer that is not a StartResponse: {e}")),
        ),
        _ => None,
    }
}

/// Wait until no saga is running or compensating (or `HEAL_MAX` passed:
/// [`verify`] then reports the ones still open). Returns how long it took.
async fn wait_ended(store: &Store) -> Duration {
    let started = Instant::now();
    loop {
        let open = store.count_by_status().await.map(|counts| {
            counts
                .iter()
                .filter(|(s, _)| s == "running" || s == "compensating")
                .map(|(_, n)| *n)
                .sum::<i64>()
        });
        if open.as_ref().is_ok_and(|n| *n == 0) || started.elapsed() > HEAL_MAX {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until every partition has a live lease and exactly `instances` hold them.
async fn wait_owners(store: &Store, instances: &[&str], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let now = orchestrator::clock::to_db(orchestrator::clock::now());
        let leases = store.leases().await.map_err(|e| e.to_string())?;
        let live: Vec<&str> = leases
            .iter()
            .filter(|l| !l.owner.is_empty() && l.expires_at_ms > now)
            .map(|l| l.owner.as_str())
            .collect();
        let owners: BTreeSet<&str> = live.iter().copied().collect();
        if live.len() == PARTITIONS as usize && owners == instances.iter().copied().collect() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "partitions not held by {instances:?} within {within:?}: {live:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sagas not yet ended.
async fn in_flight(store: &Store) -> i64 {
    store
        .count_by_status()
        .await
        .map(|c| {
            c.iter().filter(|(s, _)| s == "running" || s == "compensating").map(|(_, n)| *n).sum()
        })
        .unwrap_or(-1)
}

// ---------------------------------------------------------------------------
// The invariants
// ---------------------------------------------------------------------------

/// `f`, tried again a few times on an error: the checks must not mistake a
/// busy database (a pool timeout while other tests run) for a broken invariant.
async fn retried<T, E, F, Fut>(mut f: F) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = String::new();
    for pause_ms in [100, 300, 1_000, 3_000, 0] {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
    Err(last)
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> Result<i64, String> {
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .map_err(|e| e.to_string())?;
    row.map_or(Ok(0), |r| r.try_get::<i64>("", "n").map_err(|e| e.to_string()))
}

/// Invariants 1, 2, 5 and 6 over the orchestrator's database; each saga's status.
async fn verify(store: &Store, begun: &[Begun], tally: &mut Tally) -> HashMap<String, String> {
    tally.run = begun.len();
    // 1. No saga lost: every accepted start exists once per (type, key), and nothing else does.
    let mut keys = HashSet::new();
    for b in begun {
        if !keys.insert((b.saga_type.as_str(), b.key.as_str())) {
            tally.fail(format!("the test started key {:?} twice", b.key));
        }
        match retried(|| store.find_by_key(&b.saga_type, &b.key)).await {
            Ok(Some(row)) if row.saga_id == b.id => {}
            Ok(Some(row)) => tally.violation(format!(
                "1: key {:?} names saga {}, but its start answered {}",
                b.key, row.saga_id, b.id
            )),
            Ok(None) => tally.violation(format!("1: saga {} (key {:?}) is lost", b.id, b.key)),
            Err(e) => tally.violation(format!("1: cannot look up key {:?}: {e}", b.key)),
        }
    }
    match retried(|| count(store.db(), "SELECT count(*) AS n FROM sagas")).await {
        Ok(n) if n == begun.len() as i64 => {}
        Ok(n) => {
            tally.violation(format!("1: {n} sagas stored for {} accepted starts", begun.len()))
        }
        Err(e) => tally.violation(format!("1: cannot count sagas: {e}")),
    }
    let mut statuses = HashMap::new();
    for b in begun {
        // 5. `load` asserts seq 1..n without gaps.
        let loaded = match retried(|| store.load(&b.id)).await {
            Ok(Some(l)) => l,
            Ok(None) => continue, // reported above
            Err(e) => {
                tally.violation(format!("5: history of {} unreadable: {e}", b.id));
                continue;
            }
        };
        let (row, events) = (&loaded.row, &loaded.events);
        if row.seq != events.len() as i64 {
            tally.violation(format!(
                "5: {}: projection seq {} but {} events",
                b.id,
                row.seq,
                events.len()
            ));
        }
        let terminal: Vec<usize> =
            events.iter().enumerate().filter(|(_, e)| e.is_terminal()).map(|(i, _)| i).collect();
        let status = row.status.clone();
        match status.as_str() {
            "completed" | "compensated" | "failed" => {
                tally.terminal += 1;
                if terminal != [events.len() - 1] {
                    tally.violation(format!(
                        "5: {} ended {status} with terminal events at {terminal:?} of {}",
                        b.id,
                        events.len()
                    ));
                }
            }
            "parked" => {
                let parked_event = events.iter().rev().find_map(|e| match e {
                    SagaEvent::SagaParked { reason, .. } => Some(reason.as_str().to_owned()),
                    _ => None,
                });
                let reason = row.park_reason.clone().filter(|r| !r.is_empty());
                match (parked_event, reason) {
                    (Some(_), Some(reason)) => *tally.parked.entry(reason).or_default() += 1,
                    _ => tally.violation(format!("2: {} parked without a reason", b.id)),
                }
                if !terminal.is_empty() {
                    tally.violation(format!("5: {} parked after a terminal event", b.id));
                }
            }
            other => tally.violation(format!("2: {} did not end: {other}", b.id)),
        }
        // 5, as the orchestrator records it: one success and one compensation per step.
        let mut succeeded: HashMap<&str, usize> = HashMap::new();
        let mut compensated: HashMap<&str, usize> = HashMap::new();
        for e in events {
            match e {
                SagaEvent::StepSucceeded { step, .. } => *succeeded.entry(step).or_default() += 1,
                SagaEvent::StepCompensated { step, .. } => {
                    *compensated.entry(step).or_default() += 1;
                }
                _ => {}
            }
        }
        for (step, n) in succeeded.iter().chain(compensated.iter()) {
            if *n > 1 {
                tally.violation(format!("5: {}: step {step} recorded {n} times", b.id));
            }
        }
        *tally.by_status.entry(status.clone()).or_default() += 1;
        statuses.insert(b.id.clone(), status);
    }
    probe_fencing(store, tally).await;
    statuses
}

/// Invariant 6: on every partition, a write under the epoch before the
/// current one, or by an instance that does not hold the lease, is rejected.
async fn probe_fencing(store: &Store, tally: &mut Tally) {
    let leases = match retried(|| store.leases()).await {
        Ok(l) => l,
        Err(e) => return tally.violation(format!("6: cannot read the leases: {e}")),
    };
    if leases.len() != PARTITIONS as usize {
        tally.violation(format!("6: {} lease rows for {PARTITIONS} partitions", leases.len()));
    }
    let now = orchestrator::clock::now();
    for lease in leases {
        let probes = [
            (lease.owner.clone(), lease.epoch - 1, "the previous epoch"),
            (format!("{}-impostor", lease.owner), lease.epoch, "another instance"),
        ];
        for (owner, epoch, what) in probes {
            let saga_id = format!("fence-probe-{}", token());
            let events = [SagaEvent::SagaCompleted { at: now }];
            let projection = Projection {
                saga_type: "fence_probe".into(),
                definition_hash: String::new(),
                status: "completed".into(),
                current_step: None,
                partition: lease.partition,
                idempotency_key: saga_id.clone(),
                input_hash: String::new(),
                next_deadline_ms: None,
                last_error: None,
                current_kind: None,
                attempt: 0,
                deadline_at_ms: None,
                park_reason: None,
            };
            let fence = Fence { partition: lease.partition, owner, epoch };
            let written = store
                .append(Append {
                    saga_id: &saga_id,
                    expected_seq: 0,
                    events: &events,
                    projection: &projection,
                    outbox: &[],
                    now_ms: orchestrator::clock::to_db(now),
                    repair: None,
                    fence: Some(&fence),
                })
                .await;
            match written {
                Err(StoreError::Fenced { .. }) => {}
                Ok(()) => tally.violation(format!(
                    "6: a write under {what} (epoch {epoch}) on partition {} was accepted",
                    lease.partition
                )),
                Err(e) => tally.violation(format!("6: fencing probe failed: {e}")),
            }
        }
    }
}

/// Invariant 5 at a participant that records one row per effect in `table`
/// (`command_id`, `action`): no command took effect twice, and the effects
/// match how each saga ended — a completed saga did every step and undid
/// none; a compensated or failed one undid every step it did; nothing was
/// undone that was not done.
async fn verify_effects(
    url: &str,
    table: &str,
    steps: &[&str],
    statuses: &HashMap<String, String>,
    tally: &mut Tally,
) {
    let db = Database::connect(url).await.unwrap();
    let sql = format!("SELECT command_id, count(*) AS n FROM {table} GROUP BY command_id");
    let rows =
        match retried(|| db.query_all(Statement::from_string(DbBackend::Postgres, &sql))).await {
            Ok(rows) => rows,
            Err(e) => return tally.violation(format!("5: cannot read the effects: {e}")),
        };
    let mut done: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut undone: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in rows {
        let command_id: String = r.try_get("", "command_id").unwrap();
        let n: i64 = r.try_get("", "n").unwrap();
        if n > 1 {
            tally.violation(format!("5: command {command_id} took effect {n} times"));
        }
        let mut parts = command_id.rsplitn(3, '.');
        let (Some(kind), Some(step), Some(saga)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let into = if kind == "undo" { &mut undone } else { &mut done };
        into.entry(saga.to_owned()).or_default().insert(step.to_owned());
    }
    let every: BTreeSet<String> = steps.iter().map(|s| (*s).to_owned()).collect();
    for (saga, status) in statuses {
        let d = done.remove(saga).unwrap_or_default();
        let u = undone.remove(saga).unwrap_or_default();
        let sound = match status.as_str() {
            "completed" => d == every && u.is_empty(),
            "compensated" | "failed" => d == u,
            _ => u.is_subset(&d),
        };
        if !sound {
            tally.violation(format!(
                "5: saga {saga} ended {status} with steps done {d:?} and undone {u:?}"
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// The HTTP API through its router
// ---------------------------------------------------------------------------

const VIEWER: &str = "fault-viewer-token";
const OPERATOR: &str = "fault-operator-token";
const ADMIN: &str = "fault-admin-token";
const EXPIRED: &str = "fault-expired-token";
/// The viewer's name: it must never appear as the author of a repair.
const VIEWER_NAME: &str = "vera";

struct Api {
    app: axum::Router,
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    json: Option<Value>,
    text: String,
    www_authenticate: bool,
    /// The request could not be built (a URI over 64 KiB).
    unsendable: bool,
}

impl Answer {
    /// `{"error": {"code": "...", "message": "..."}}`.
    fn is_error_shape(&self) -> bool {
        self.json.as_ref().is_some_and(|v| {
            v["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                && v["error"]["message"].as_str().is_some_and(|m| !m.is_empty())
        })
    }

    /// Not a server fault, and JSON: the error shape for a refusal.
    fn is_sound(&self) -> bool {
        if self.unsendable {
            return true;
        }
        if self.status.is_server_error() {
            return false;
        }
        if self.status.is_client_error() { self.is_error_shape() } else { self.json.is_some() }
    }

    fn brief(&self) -> String {
        let text: String = self.text.chars().take(200).collect();
        format!("{} {text}", self.status)
    }
}

impl Api {
    /// The API over the orchestrator's database, with a viewer, an operator,
    /// an admin and an expired admin token.
    async fn new(w: &World) -> Self {
        let store = w.store().await;
        let registry = Registry::load(&store, &w.defs).await.unwrap();
        let driver = Driver::new(store, Arc::new(registry), w.ns.clone(), PARTITIONS);
        let mut tokens = Tokens::none();
        tokens.insert(VIEWER_NAME, Role::Viewer, VIEWER, None);
        tokens.insert("otto", Role::Operator, OPERATOR, None);
        tokens.insert("ada", Role::Admin, ADMIN, None);
        let past = SystemTime::now() - Duration::from_secs(1);
        tokens.insert("old", Role::Admin, EXPIRED, Some(past));
        let state = ApiState::new(driver, tokens, Ownership::all(PARTITIONS), "faults".into());
        Self { app: api::app(state) }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = match req.body(Body::from(body)) {
            Ok(req) => req,
            // Not even sendable (a URI over 64 KiB): an HTTP server refuses it as 414.
            Err(_) => {
                return Answer {
                    status: StatusCode::URI_TOO_LONG,
                    json: None,
                    text: String::new(),
                    www_authenticate: false,
                    unsendable: true,
                };
            }
        };
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let www_authenticate = res.headers().contains_key(header::WWW_AUTHENTICATE);
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20).await.unwrap();
        Answer {
            status,
            json: serde_json::from_slice(&bytes).ok(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
            www_authenticate,
            unsendable: false,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send("GET", path, Some(&format!("Bearer {token}")), None, Vec::new()).await
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        let auth = format!("Bearer {token}");
        self.send("POST", path, Some(&auth), Some("application/json"), body.to_string().into())
            .await
    }
}

/// Percent-encode everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Bodies that are not what anything expects.
fn junk() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "}",
        "null",
        "true",
        "[]",
        "42",
        "\"text\"",
        "{\"a\":}",
        "{'single': 'quotes'}",
        "NaN",
        "\u{feff}{}",
        "{\"idempotency_key\": 5, \"input\": {}}",
        "{\"idempotency_key\": \"k\", \"input\": {}, \"extra\": 1}",
        "{\"command_id\": null, \"attempt\": \"one\"}",
        "{\"command_id\": \"x\", \"attempt\": -1, \"outcome\": {\"status\": \"ok\"}}",
        "{\"command_id\": \"x\", \"attempt\": 1, \"outcome\": {\"status\": \"maybe\"}}",
        "{\"command_id\": \"x\", \"attempt\": 99999999999, \"outcome\": {\"status\": \"ok\"}}",
        "{\"saga_id\": 1e999}",
        "name: [unclosed\n  - : :",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    bodies.push(vec![0xff, 0xfe, 0xfd, 0x00]); // not UTF-8
    bodies.push(vec![0; 16]); // NUL bytes
    bodies.push("[".repeat(100_000).into_bytes()); // nesting no parser should follow
    let deep = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    bodies.push(format!("{{\"idempotency_key\": \"k\", \"input\": {deep}}}").into_bytes());
    bodies
}

fn show(body: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(body).chars().take(40).collect();
    format!("{s:?} ({} bytes)", body.len())
}

/// Strings that try to break whatever stores or renders them.
fn hostile() -> Vec<(&'static str, String)> {
    vec![
        ("sql", "'; DROP TABLE sagas;--".to_owned()),
        ("sql-double-quote", "\"; DROP TABLE sagas; --".to_owned()),
        ("sql-tautology", "1' OR '1'='1".to_owned()),
        ("nul", "\u{0}".to_owned()),
        ("nul-inside", "ab\u{0}cd'; DROP TABLE sagas;--\u{0}".to_owned()),
        ("like-wildcards", "%_\\".to_owned()),
        ("template", "{{saga.id}}{{input.note}}".to_owned()),
        ("html", "<script>alert(1)</script>".to_owned()),
        ("unicode", "\u{202e}ǝɯɐu 😀 \u{fffd}".to_owned()),
        ("control", "\r\n\t\u{1b}[31m".to_owned()),
        ("64KiB", "x".repeat(64 * 1024)),
        ("64KiB-sql", "'; DROP TABLE sagas;--".repeat(3_000)),
    ]
}

// ---------------------------------------------------------------------------
// In-test participants
// ---------------------------------------------------------------------------

/// Publish a reply to `cmd`, tagged so JetStream keeps every copy.
async fn answer(js: &jetstream::Context, cmd: &Command, outcome: Outcome, tag: &str) {
    let reply = Reply { command_id: cmd.command_id.clone(), attempt: cmd.attempt, outcome };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_MSG_ID, format!("{}/{}/{tag}", cmd.command_id, cmd.attempt).as_str());
    let body = serde_json::to_vec(&reply).unwrap();
    if let Ok(ack) = js.publish_with_headers(cmd.reply_subject.clone(), headers, body.into()).await
    {
        let _ = ack.await;
    }
}

/// Participant `lp` of [`LATE`]: answers `ok` to every command twice, except
/// that it answers once and [`LATE_BY`] late to `s2` of odd `n`, and to the
/// first attempt of `s1` when `n % 4 == 2`. Returns every command it saw.
async fn late_and_double_participant(
    client: async_nats::Client,
    ns: &Namespace,
) -> (Arc<Mutex<Vec<Command>>>, CancellationToken) {
    let js = jetstream::new(client);
    let (commands, _) = orchestrator::bus::ensure_streams(&js, ns).await.unwrap();
    let consumer = commands
        .get_or_create_consumer(
            "lp",
            pull::Config {
                durable_name: Some("lp".to_owned()),
                filter_subject: ns.participant_filter("lp"),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let (seen2, stop2) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        while !stop2.is_cancelled() {
            let Ok(messages) = consumer.messages().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut messages = Box::pin(messages.take_until(stop2.clone().cancelled_owned()));
            while let Some(msg) = messages.next().await {
                let Ok(msg) = msg else { continue };
                let Ok(cmd) = serde_json::from_slice::<Command>(&msg.payload) else {
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                };
                seen2.lock().unwrap().push(cmd.clone());
                let n = cmd.payload.get("n").and_then(Value::as_i64).unwrap_or(0);
                let late = cmd.kind == Kind::Do
                    && ((cmd.step == "s2" && n % 2 == 1)
                        || (cmd.step == "s1" && n % 4 == 2 && cmd.attempt == 1));
                let js = js.clone();
                tokio::spawn(async move {
                    let ok = || Outcome::Ok { output: json!({ "n": n }) };
                    if late {
                        tokio::time::sleep(LATE_BY).await;
                        answer(&js, &cmd, ok(), "late").await;
                    } else {
                        answer(&js, &cmd, ok(), "first").await;
                        answer(&js, &cmd, ok(), "again").await;
                    }
                });
                let _ = msg.ack().await;
            }
        }
    });
    (seen, stop)
}

fn poison_of<'a>(ctx: &HandlerCtx<'a>) -> &'a str {
    ctx.payload().get("poison").and_then(Value::as_str).unwrap_or("")
}

/// The effect of a `pz` command: one row, in the SDK's transaction.
async fn pz_record(ctx: &HandlerCtx<'_>) -> Result<(), HandlerError> {
    let tx = ctx.tx().await?;
    let command = ctx.command();
    tx.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO pz_effects (command_id, action) VALUES ($1, $2)",
        [command.command_id.clone().into(), command.action.clone().into()],
    ))
    .await?;
    Ok(())
}

async fn pz_a1(ctx: HandlerCtx<'_>) -> HandlerResult {
    pz_record(&ctx).await?;
    Ok(json!({}))
}

async fn pz_a2(ctx: HandlerCtx<'_>) -> HandlerResult {
    match poison_of(&ctx) {
        "do" => panic!("poison command {}", ctx.command().command_id),
        "undo" => Err(HandlerError::failed("refused", "refused so that step s1 is undone")),
        _ => {
            pz_record(&ctx).await?;
            Ok(json!({}))
        }
    }
}

async fn pz_u1(ctx: HandlerCtx<'_>) -> HandlerResult {
    if poison_of(&ctx) == "undo" {
        panic!("poison command {}", ctx.command().command_id);
    }
    pz_record(&ctx).await?;
    Ok(json!({}))
}

async fn pz_u2(ctx: HandlerCtx<'_>) -> HandlerResult {
    pz_record(&ctx).await?;
    Ok(json!({}))
}

/// Keep the poison handlers' panics out of the test output (the SDK reports
/// them); every other panic is printed as usual.
fn quiet_poison_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with("poison command") {
                default(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------
// Crashes: kill -9 of processes
// ---------------------------------------------------------------------------

/// A `skald` instance dies (`kill -9`) with sagas in flight and comes back;
/// its partitions move to the other instance meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let w = World::new("orchestrator_kill9", NATS_URL, &[("flow.yaml", FLOW)]).await;
    let store = w.store().await;
    let _bench = w.bench_ready(&[]).await;
    let mut o0 = w.skald_ready(&store, "o-0", &[]).await;
    let _o1 = w.skald_ready(&store, "o-1", &[]).await;
    wait_owners(&store, &["o-0", "o-1"], Duration::from_secs(30)).await.unwrap();
    let client = w.client().await;
    let load = Load::start(&client, &w.ns, n, 16, flow_load());
    load.until(n * 2 / 5).await;
    let held: Vec<(i32, i64)> = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.owner == "o-0")
        .map(|l| (l.partition, l.epoch))
        .collect();
    o0.kill9();
    let open = in_flight(&store).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _o0 = w.skald("o-0", &[]);
    let healed = Instant::now();
    println!("orchestrator o-0 killed with {open} sagas in flight, restarted 500 ms later");
    let begun = load.finish().await;
    wait_ended(&store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    let statuses = verify(&store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    // What o-0 held was taken again (by o-1, or by o-0 after its restart) at a new epoch.
    let after: HashMap<i32, i64> =
        store.leases().await.unwrap().into_iter().map(|l| (l.partition, l.epoch)).collect();
    tally.expect(!held.is_empty(), || "o-0 held no partition when it was killed".into());
    for (partition, epoch) in &held {
        tally.expect(after.get(partition).is_some_and(|e| e > epoch), || {
            format!("partition {partition} of o-0 still at epoch {epoch} after the kill")
        });
    }
    delete_streams(&client, &w.ns).await;
    w.finish(tally, "orchestrator_kill9", heal);
}

/// An instance dies (`kill -9`) holding every partition, before it could hand
/// any over to a second instance that has just joined, and restarts under the
/// same name: the leases it held that now hash to the other instance must
/// reach it (the restarted instance does not drive them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_restarted_under_its_name() {
    let _turn = TURN.lock().await;
    let n = sagas(150, 1_000);
    let mut w = World::new("orchestrator_same_name", NATS_URL, &[("flow.yaml", FLOW)]).await;
    // Long enough that the restarted instance renews the old leases before they expire.
    w.lease_ttl_ms = "6000";
    let store = w.store().await;
    let _bench = w.bench_ready(&[]).await;
    let mut o0 = w.skald_ready(&store, "o-0", &[]).await;
    wait_owners(&store, &["o-0"], Duration::from_secs(30)).await.unwrap();
    let client = w.client().await;
    let load = Load::start(&client, &w.ns, n, 16, flow_load());
    load.until(n / 4).await;
    o0.kill9();
    let open = in_flight(&store).await;
    let _o1 = w.skald("o-1", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(store.db(), "SELECT count(*) AS n FROM members WHERE instance = 'o-1'").await
        != Ok(1)
    {
        assert!(Instant::now() < deadline, "o-1 never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _o0 = w.skald("o-0", &[]);
    let healed = Instant::now();
    println!(
        "o-0 killed holding every partition with {open} sagas in flight; o-1 joined; o-0 back"
    );
    let begun = load.finish().await;
    wait_ended(&store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    let statuses = verify(&store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    if let Err(e) = wait_owners(&store, &["o-0", "o-1"], Duration::from_secs(20)).await {
        tally.fail(e);
    }
    delete_streams(&client, &w.ns).await;
    w.finish(tally, "orchestrator_same_name", heal);
}

/// The bench participant dies (`kill -9`) mid-run and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participant_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let w = World::new("participant_kill9", NATS_URL, &[("flow.yaml", FLOW)]).await;
    let store = w.store().await;
    let mut bench = w.bench_ready(&["--delay-ms", "20"]).await;
    let _o = w.skald_ready(&store, "o-0", &[]).await;
    let client = w.client().await;
    let load = Load::start(&client, &w.ns, n, 16, flow_load());
    load.until(n * 2 / 5).await;
    bench.kill9();
    let open = in_flight(&store).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _bench = w.bench(&["--delay-ms", "20"]);
    let healed = Instant::now();
    println!("bench participant killed with {open} sagas in flight, restarted 500 ms later");
    let begun = load.finish().await;
    wait_ended(&store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    let statuses = verify(&store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    tally.expect(open > 0, || "the kill hit no saga in flight".into());
    delete_streams(&client, &w.ns).await;
    w.finish(tally, "participant_kill9", heal);
}

/// Run the ledger CLI once.
fn ledger_cli(db_url: &str, args: &[&str]) -> Result<String, String> {
    let out = Process::new(env!("CARGO_BIN_EXE_ledger-e2e"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "error")
        .output()
        .map_err(|e| e.to_string())?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(format!("ledger {args:?}: {text}")) }
}

async fn charges(http: &reqwest::Client, psp_url: &str) -> Result<ChargeList, String> {
    let res = http
        .get(format!("{psp_url}/v1/charges?limit=1000"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    res.json().await.map_err(|e| e.to_string())
}

/// Money sagas (`topup`, `payout`) across `skald`, `ledger`, `payment` and
/// `psp-sim` processes; psp-sim, then the ledger, then payment die (`kill -9`)
/// and come back, under load. Invariants 3 (`ledger verify`) and 4 (the
/// provider's charges) are checked too.
///
/// psp-sim keeps its books in memory, so a killed one forgets every charge
/// made before: invariant 4 is checked on the books of the restarted
/// provider (each reference charged at most once; its charged minus
/// refunded equals the completed top-ups it charged) and on the last view of
/// the first one before the kill (each reference charged at most once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_and_provider_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(150, 1_000);
    const WALLETS: usize = 10;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sagas/definitions");
    let topup = std::fs::read_to_string(shipped.join("topup.yaml")).unwrap();
    let payout = std::fs::read_to_string(shipped.join("payout.yaml")).unwrap();
    let w =
        World::new("money_kill9", NATS_URL, &[("topup.yaml", &topup), ("payout.yaml", &payout)])
            .await;
    let payment_db = TestDb::new(Backend::Postgres).await.unwrap();
    let ledger_url = w.pdb_url.clone();
    let store = w.store().await;

    let psp_port = free_port().unwrap().to_string();
    let psp_args = [
        "--port",
        &psp_port,
        "--failure-rate",
        "0.05",
        "--drop-after-charge-rate",
        "0.02",
        "--seed",
        "7",
    ];
    let psp_bin = env!("CARGO_BIN_EXE_psp-sim-e2e");
    let mut psp = w.program("psp-sim", psp_bin, &psp_args, &[]);
    wait_port(psp_port.parse().unwrap(), Duration::from_secs(20)).unwrap();
    let psp_url = format!("http://127.0.0.1:{psp_port}");

    ledger_cli(&ledger_url, &["accounts", "create", "psp_clearing", "--currency", "EUR"]).unwrap();
    ledger_cli(&ledger_url, &["accounts", "create", "payout_clearing", "--currency", "EUR"])
        .unwrap();
    for i in 0..WALLETS {
        let wallet = format!("wallet_{i}");
        let flags = "debits_must_not_exceed_credits";
        ledger_cli(
            &ledger_url,
            &["accounts", "create", &wallet, "--currency", "EUR", "--flags", flags],
        )
        .unwrap();
        let args = [
            "transfer",
            &format!("opening_{i}"),
            "--debit",
            "psp_clearing",
            "--credit",
            &wallet,
            "--amount",
            "20000",
            "--currency",
            "EUR",
        ];
        ledger_cli(&ledger_url, &args).unwrap();
    }

    let _skald = w.skald_ready(&store, "o-0", &[]).await;
    let ledger_args = ["serve", "--prefix", &w.prefix, "--nats-url", NATS_URL];
    let ledger_bin = env!("CARGO_BIN_EXE_ledger-e2e");
    let ledger_env = [("DATABASE_URL", ledger_url.as_str())];
    let mut ledger = w.program("ledger", ledger_bin, &ledger_args, &ledger_env);
    let payment_args = [
        "serve",
        "--prefix",
        &w.prefix,
        "--nats-url",
        NATS_URL,
        "--database-url",
        &payment_db.url,
        "--psp-url",
        &psp_url,
        "--psp-timeout-ms",
        "1000",
        "--reconcile-interval-ms",
        "500",
        "--reconcile-grace-ms",
        "2000",
    ];
    let payment_bin = env!("CARGO_BIN_EXE_payment-e2e");
    let mut payment = w.program("payment", payment_bin, &payment_args, &[]);

    let make: Make = Arc::new(|i| {
        let wallet = format!("wallet_{}", i % WALLETS);
        if i % 10 < 7 {
            let card = match i % 20 {
                3 | 13 => "tok_decline",
                5 => "tok_insufficient",
                _ => "tok_visa",
            };
            let amount = 100 + (i as i64 * 37) % 900;
            let input = json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                               "amount": amount, "currency": "EUR", "card_token": card});
            ("topup".to_owned(), format!("topup-{i}"), input)
        } else {
            let amount = 500 + (i as i64 * 53) % 3_000;
            let input = json!({"wallet_account": wallet, "payout_account": "payout_clearing",
                               "amount": amount, "currency": "EUR",
                               "bank_account": format!("DE{i:020}")});
            ("payout".to_owned(), format!("payout-{i}"), input)
        }
    });
    let client = w.client().await;
    let http = reqwest::Client::new();
    let load = Load::start(&client, &w.ns, n, 16, make);

    // Kill the provider once it has charged a few cards.
    load.until(n * 15 / 100).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let list = charges(&http, &psp_url).await.unwrap();
        if list.charges.len() >= 5 || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    psp.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    psp = w.program("psp-sim", psp_bin, &psp_args, &[]);
    wait_port(psp_port.parse().unwrap(), Duration::from_secs(20)).unwrap();
    println!("psp-sim killed after {} charges and restarted", before.charges.len());

    load.until(n * 40 / 100).await;
    ledger.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ledger = w.program("ledger", ledger_bin, &ledger_args, &ledger_env);
    println!("ledger killed and restarted");

    load.until(n * 65 / 100).await;
    payment.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    payment = w.program("payment", payment_bin, &payment_args, &[]);
    let healed = Instant::now();
    println!("payment killed and restarted");

    let begun = load.finish().await;
    wait_ended(&store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    let statuses = verify(&store, &begun, &mut tally).await;
    for kind in ["topup", "payout"] {
        let completed = begun
            .iter()
            .filter(|b| {
                b.saga_type == kind && statuses.get(&b.id).is_some_and(|s| s == "completed")
            })
            .count();
        tally.expect(completed > 0, || format!("no {kind} completed"));
    }

    // 3. The ledger balances (`ledger verify` replays it; holds are checked below: a
    // parked saga may keep its hold pending for the operator); a completed saga's hold is
    // posted, a compensated or failed saga's voided (or never made).
    if let Err(e) = ledger_cli(&ledger_url, &["verify", "--pending-older-than", "24h"]) {
        tally.violation(format!("3: {e}"));
    }
    let ledger_db = Database::connect(&ledger_url).await.unwrap();
    let transfers: HashMap<String, String> = ledger_db
        .query_all(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id, state FROM transfers".to_owned(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.try_get("", "id").unwrap(), r.try_get("", "state").unwrap()))
        .collect();
    for b in &begun {
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let hold = transfers.get(&format!("{}-{}", b.id, b.saga_type)).map(String::as_str);
        let sound = match status {
            "completed" => hold == Some("posted"),
            "compensated" | "failed" => matches!(hold, None | Some("voided")),
            _ => true,
        };
        if !sound {
            tally.violation(format!(
                "3: {} {} ended {status} with its hold {hold:?}",
                b.saga_type, b.id
            ));
        }
    }

    // 4. At most one charge per saga; charged minus refunded is what the completed
    // top-ups took (on the restarted provider's books, see above).
    let mut per_reference: HashMap<&str, usize> = HashMap::new();
    for c in &before.charges {
        *per_reference.entry(c.reference.as_str()).or_default() += 1;
    }
    if let Some((r, k)) = per_reference.iter().find(|(_, k)| **k > 1) {
        tally.violation(format!("4: saga {r} was charged {k} times by the first provider"));
    }
    let amounts: HashMap<&str, (i64, &str)> = begun
        .iter()
        .filter(|b| b.saga_type == "topup")
        .map(|b| {
            let status = statuses.get(&b.id).map_or("?", String::as_str);
            (b.id.as_str(), (b.input["amount"].as_i64().unwrap_or(0), status))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = charges(&http, &psp_url).await.unwrap();
        let mut per_reference: HashMap<&str, usize> = HashMap::new();
        for c in &list.charges {
            *per_reference.entry(c.reference.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = per_reference.iter().filter(|(_, k)| **k > 1).collect();
        let strays: Vec<&str> =
            per_reference.keys().filter(|r| !amounts.contains_key(*r)).copied().collect();
        let expected: i64 = per_reference
            .keys()
            .filter_map(|r| amounts.get(r))
            .filter(|(_, status)| *status == "completed")
            .map(|(amount, _)| amount)
            .sum();
        let eur = list.totals.get("EUR").cloned().unwrap_or_default();
        let net = eur.charged - eur.refunded;
        let sound = twice.is_empty() && strays.is_empty() && list.count == list.charges.len();
        if sound && net == expected {
            println!("provider after restart: {} charges, net {net}", list.charges.len());
            tally.expect(!list.charges.is_empty(), || {
                "the restarted provider charged nobody".into()
            });
            break;
        }
        // The payment reconciler may still be refunding a charge whose answer was lost.
        if Instant::now() > deadline {
            tally.violation(format!(
                "4: provider net {net} != completed top-ups {expected}; charged twice {twice:?}; \
                 unknown references {strays:?}; {} of {} listed",
                list.charges.len(),
                list.count
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop((psp, ledger, payment));
    delete_streams(&client, &w.ns).await;
    w.finish(tally, "money_kill9", heal);
}

// ---------------------------------------------------------------------------
// Infrastructure: PostgreSQL and NATS go away
// ---------------------------------------------------------------------------

/// PostgreSQL (a private server, both the orchestrator's and the
/// participant's databases) stopped with `-m immediate` mid-run, then started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_immediately() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let pg = PrivatePostgres::start();
    let db_url = pg.create_database("skald").await;
    let pdb_url = pg.create_database("bench").await;
    let w = World::on(
        "postgres_stop_immediate",
        NATS_URL,
        db_url,
        pdb_url,
        &[("flow.yaml", FLOW)],
        vec![],
    );
    let store = w.store().await;
    let mut bench = w.bench_ready(&["--delay-ms", "20"]).await;
    let mut skald = w.skald_ready(&store, "o-0", &[]).await;
    let client = w.client().await;
    let load = Load::start(&client, &w.ns, n, 16, flow_load());
    load.until(n * 2 / 5).await;
    let open = in_flight(&store).await;
    pg.stop_immediate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.up();
    let healed = Instant::now();
    println!("PostgreSQL stopped (immediate) with {open} sagas in flight, started 2 s later");
    let begun = load.finish().await;
    wait_ended(&store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    for (name, child) in [("skald", &mut skald), ("bench", &mut bench)] {
        let exited = child.child.try_wait().unwrap();
        tally.expect(exited.is_none(), || format!("{name} exited during the outage: {exited:?}"));
    }
    let statuses = verify(&store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    tally.expect(open > 0, || "the outage hit no saga in flight".into());
    drop((skald, bench));
    delete_streams(&client, &w.ns).await;
    w.finish(tally, "postgres_stop_immediate", heal);
}

/// nats-server killed (`kill -9`) mid-run and restarted on its store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let mut nats = NatsServer::start().unwrap();
    let w = World::new("nats_kill9", &nats.url(), &[("flow.yaml", FLOW)]).await;
    let store = w.store().await;
    let _bench = w.bench_ready(&["--delay-ms", "20"]).await;
    let _skald = w.skald_ready(&store, "o-0", &[]).await;
    let client = w.client().await;
    let load = Load::start(&client, &w.ns, n, 16, flow_load());
    load.until(n * 2 / 5).await;
    let open = in_flight(&store).await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().unwrap();
    let healed = Instant::now();
    println!("nats-server killed with {open} sagas in flight, restarted 1 s later");
    let begun = load.finish().await;
    wait_ended(&store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    let statuses = verify(&store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    tally.expect(open > 0, || "the kill hit no saga in flight".into());
    w.finish(tally, "nats_kill9", heal);
}

// ---------------------------------------------------------------------------
// Messages dropped, duplicated, delayed and reordered (SKALD_FAULTS)
// ---------------------------------------------------------------------------

const FAULTS: &str = "drop=0.05,dup=0.05,delay=0.2,delay_ms=200,reorder=0.05,seed=42";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_dropped_duplicated_delayed_reordered() {
    let _turn = TURN.lock().await;
    // A setting that does not parse stops the start, naming the variable.
    let unused = std::env::temp_dir().join(format!("skald-faults-{}.db", token()));
    let out = Process::new(env!("CARGO_BIN_EXE_skald-e2e"))
        .args(["serve", "--http-addr", "off", "--database-url"])
        .arg(format!("sqlite://{}", unused.display()))
        .env("SKALD_FAULTS", "drop=2")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut tally = Tally::default();
    let _ = std::fs::remove_file(&unused);
    let stderr = String::from_utf8_lossy(&out.stderr);
    tally.expect(!out.status.success() && stderr.contains("SKALD_FAULTS"), || {
        format!("a bad SKALD_FAULTS did not stop skald clearly: {} {stderr}", out.status)
    });

    let n = sagas(200, 1_500);
    let w = World::new("message_faults", NATS_URL, &[("flow.yaml", FLOW)]).await;
    let store = w.store().await;
    let _bench = w.bench_ready(&[]).await;
    let env = [("SKALD_FAULTS", FAULTS), ("RUST_LOG", "warn,orchestrator::faults=info")];
    let _skald = w.skald_ready(&store, "o-0", &env).await;
    let client = w.client().await;
    let load = Load::start(&client, &w.ns, n, 16, flow_load());
    let begun = load.finish().await;
    let healed = Instant::now();
    wait_ended(&store).await;
    let heal = healed.elapsed();
    let statuses = verify(&store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;

    // The faults happened, and were recovered by retries.
    let log = std::fs::read_to_string(w.logs.join("o-0.log")).unwrap_or_default();
    tally.expect(log.contains("FAULT INJECTION IS ON"), || "no loud start-up warning".into());
    let mut injected = BTreeMap::new();
    for (what, line) in [
        ("commands dropped", "command dropped"),
        ("commands duplicated", "command published twice"),
        ("commands held", "command held"),
        ("replies lost", "reply lost"),
        ("replies applied twice", "reply applied twice"),
        ("replies held", "reply held"),
    ] {
        let k = log.matches(line).count();
        tally.expect(k > 0, || format!("no {what}"));
        injected.insert(what, k);
    }
    injected.insert("batches reordered", log.matches("batch reordered").count());
    println!("injected: {injected:?}");
    let mut timed_out = 0;
    for b in &begun {
        if let Ok(Some(l)) = store.load(&b.id).await
            && l.events
                .iter()
                .any(|e| matches!(e, SagaEvent::AttemptFailed { timed_out: true, .. }))
        {
            timed_out += 1;
        }
    }
    tally.expect(timed_out > 0, || "no step timed out: were the losses recovered?".into());
    delete_streams(&client, &w.ns).await;
    w.finish(tally, "message_faults", heal);
}

// ---------------------------------------------------------------------------
// Misbehaving participants
// ---------------------------------------------------------------------------

/// A participant answers every command twice, and some only after the step
/// timed out: duplicates are absorbed, a late answer to a retried step is
/// absorbed, a step given up on before its late answer is compensated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_twice_or_after_the_timeout() {
    let _turn = TURN.lock().await;
    let n = sagas(120, 600);
    let w = World::new("late_and_double_answers", NATS_URL, &[("late.yaml", LATE)]).await;
    let mut o = RunningOrchestrator::start(&w.dbs[0], &w.prefix, w.defs.clone()).await.unwrap();
    let (seen, stop) = late_and_double_participant(o.client.clone(), &w.ns).await;
    let make: Make = Arc::new(|i| ("late".to_owned(), format!("k{i}"), json!({ "n": i })));
    let load = Load::start(&o.client, &w.ns, n, 16, make);
    let begun = load.finish().await;
    let healed = Instant::now();
    wait_ended(&o.store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    // The late answers come in after the sagas ended; all must be settled.
    tokio::time::sleep(LATE_BY).await;
    if let Err(e) = o.wait_replies_settled(Duration::from_secs(30)).await {
        tally.fail(format!("late replies not settled: {e}"));
    }
    let statuses = verify(&o.store, &begun, &mut tally).await;
    let seen = seen.lock().unwrap().clone();
    for b in &begun {
        let i = b.input["n"].as_i64().unwrap();
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let want = if i % 2 == 1 { "compensated" } else { "completed" };
        tally.expect(status == want, || format!("saga n={i} ended {status}, not {want}"));
        if want == "compensated" {
            let undos: Vec<&str> = seen
                .iter()
                .filter(|c| c.saga_id == b.id && c.kind == Kind::Undo)
                .map(|c| c.step.as_str())
                .collect();
            let first = |s: &str| undos.iter().position(|u| *u == s);
            tally.expect(matches!((first("s2"), first("s1")), (Some(a), Some(b)) if a < b), || {
                format!("saga n={i}: undos sent {undos:?}, not s2 then s1")
            });
        }
    }
    stop.cancel();
    o.stop().await;
    w.finish(tally, "late_and_double_answers", heal);
}

/// A command whose handler panics every time: the SDK answers `retry`, then
/// refuses it (`handler_panicked`); the saga compensates, or parks with its
/// reason when the poison is in a compensation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_command() {
    let _turn = TURN.lock().await;
    quiet_poison_panics();
    let n = sagas(100, 600);
    let w = World::new("poison_command", NATS_URL, &[("poison.yaml", POISON)]).await;
    let pdb = Database::connect(&w.pdb_url).await.unwrap();
    pdb.execute_unprepared(
        "CREATE TABLE pz_effects (command_id TEXT NOT NULL, action TEXT NOT NULL)",
    )
    .await
    .unwrap();
    let mut o = RunningOrchestrator::start(&w.dbs[0], &w.prefix, w.defs.clone()).await.unwrap();
    let stop = CancellationToken::new();
    let participant = Participant::new("pz")
        .action("a1", pz_a1)
        .action("a2", pz_a2)
        .compensation("u1", pz_u1)
        .compensation("u2", pz_u2);
    let config = skald_participant::Config::new(o.client.clone(), w.ns.clone(), pdb);
    let running = tokio::spawn(participant.run(config, stop.clone()));
    let poison = |i: usize| match i % 10 {
        3 => "do",
        7 => "undo",
        _ => "",
    };
    let make: Make = Arc::new(move |i| {
        ("poison".to_owned(), format!("k{i}"), json!({ "n": i, "poison": poison(i) }))
    });
    let load = Load::start(&o.client, &w.ns, n, 16, make);
    let begun = load.finish().await;
    let healed = Instant::now();
    wait_ended(&o.store).await;
    let heal = healed.elapsed();
    let mut tally = Tally::default();
    let statuses = verify(&o.store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "pz_effects", &POISON_STEPS, &statuses, &mut tally).await;
    for b in &begun {
        let i = b.input["n"].as_u64().unwrap() as usize;
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let want = match poison(i) {
            "do" => "compensated",
            "undo" => "parked",
            _ => "completed",
        };
        tally.expect(status == want, || format!("saga n={i} ended {status}, not {want}"));
        if poison(i) == "do" {
            let events = o.store.load(&b.id).await.unwrap().unwrap().events;
            let refused = events.iter().any(|e| {
                matches!(e, SagaEvent::StepFailed { step, code, .. }
                    if step == "s2" && code == "handler_panicked")
            });
            tally.expect(refused, || format!("saga n={i}: s2 not refused as handler_panicked"));
        }
    }
    tally.expect(tally.parked.get("compensation_failed").is_some_and(|k| *k > 0), || {
        "no saga parked for its poisoned compensation".into()
    });
    stop.cancel();
    let _ = running.await;
    o.stop().await;
    w.finish(tally, "poison_command", heal);
}

// ---------------------------------------------------------------------------
// Hostile input: oversized, malformed, injected; authentication
// ---------------------------------------------------------------------------

/// Payloads over the limits: a start request over 512 KiB is refused; an
/// input too large to send as a command fails its step; an output too large
/// to feed the next step compensates; an API body over 1 MiB is refused; a
/// message over the stream's limit is refused by JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_payloads() {
    let _turn = TURN.lock().await;
    let n = sagas(100, 600);
    let w = World::new("oversized_payloads", NATS_URL, &[("big.yaml", BIG)]).await;
    let mut o = RunningOrchestrator::start(&w.dbs[0], &w.prefix, w.defs.clone()).await.unwrap();
    let script: Script = Arc::new(|cmd| {
        let big = cmd.action == "a1" && cmd.payload["big_output"] == json!(true);
        let blob = if big { "b".repeat(300 * 1024) } else { String::new() };
        Some(Outcome::Ok { output: json!({ "blob": blob }) })
    });
    let (_seen, stop) = scripted_participant(o.client.clone(), &w.ns, "p", script).await.unwrap();
    let api = Api::new(&w).await;
    let mut tally = Tally::default();
    // Every 10th saga carries a 300 KiB input, every 10th (offset 5) makes a 300 KiB output.
    let make: Make = Arc::new(|i| {
        let pad = if i % 10 == 0 { "p".repeat(300 * 1024) } else { String::new() };
        let input = json!({ "n": i, "pad": pad, "big_output": i % 10 == 5 });
        ("big".to_owned(), format!("k{i}"), input)
    });
    let load = Load::start(&o.client, &w.ns, n, 8, make);
    load.until(n / 4).await;

    let huge = format!(
        "{{\"idempotency_key\": \"huge\", \"input\": {{\"n\": 1, \"pad\": \"{}\", \"big_output\": false}}}}",
        "h".repeat(600 * 1024)
    );
    let answer = start_request(&o.client, &w.ns, "big", huge.clone().into_bytes()).await;
    tally.expect(
        matches!(&answer, Some(StartResponse::Refused { code, .. }) if code == "bad_request"),
        || format!("a 600 KiB start request was answered {answer:?}"),
    );
    let body = json!({"type": "big", "idempotency_key": "huge-api",
                      "input": {"n": 1, "pad": "h".repeat(2 << 20), "big_output": false}});
    let a = api.post("/v1/sagas", OPERATOR, &body).await;
    tally.expect(a.status == StatusCode::PAYLOAD_TOO_LARGE && a.is_error_shape(), || {
        format!("a 2 MiB API body was answered {}", a.brief())
    });
    // Under the API's limit, but too large for a command: accepted, then its step fails.
    let body = json!({"type": "big", "idempotency_key": "large-api",
                      "input": {"n": 1, "pad": "l".repeat(600 * 1024), "big_output": false}});
    let a = api.post("/v1/sagas", OPERATOR, &body).await;
    let large_api = a.json.as_ref().and_then(|v| v["saga_id"].as_str()).map(str::to_owned);
    tally.expect(a.status == StatusCode::CREATED && large_api.is_some(), || {
        format!("a 600 KiB input through the API was answered {}", a.brief())
    });
    let js = jetstream::new(o.client.clone());
    for subject in [w.ns.reply_subject(0), w.ns.command_subject("p", "a1")] {
        let published = async {
            js.publish(subject.clone(), vec![b'x'; 600 * 1024].into()).await?.await?;
            Ok::<_, anyhow::Error>(())
        };
        tally.expect(published.await.is_err(), || format!("JetStream took 600 KiB on {subject}"));
    }

    let mut begun = load.finish().await;
    if let Some(id) = large_api {
        let input = json!({"n": 1, "pad": "l".repeat(600 * 1024), "big_output": false});
        begun.push(Begun { saga_type: "big".into(), key: "large-api".into(), id, input });
    }
    let healed = Instant::now();
    wait_ended(&o.store).await;
    let heal = healed.elapsed();
    let statuses = verify(&o.store, &begun, &mut tally).await;
    for b in &begun {
        let i = b.input["n"].as_u64().unwrap_or(0);
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let want = if b.key == "large-api" || i % 10 == 0 {
            "failed"
        } else if i % 10 == 5 {
            "compensated"
        } else {
            "completed"
        };
        tally.expect(status == want, || format!("saga {} ended {status}, not {want}", b.key));
        if want != "completed" {
            let events = o.store.load(&b.id).await.unwrap().unwrap().events;
            let unrenderable = events.iter().any(
                |e| matches!(e, SagaEvent::StepFailed { code, .. } if code == "input_unrenderable"),
            );
            tally.expect(unrenderable, || format!("saga {}: no input_unrenderable", b.key));
        }
    }
    stop.cancel();
    o.stop().await;
    w.finish(tally, "oversized_payloads", heal);
}

/// Junk on the start, reply and command subjects and on every API route:
/// every start is refused, every reply and command settled, every API answer
/// a JSON error (never a 5xx), and the load goes on to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_json_everywhere() {
    let _turn = TURN.lock().await;
    let n = sagas(100, 600);
    let w = World::new("malformed_json", NATS_URL, &[("flow.yaml", FLOW)]).await;
    let _bench = w.bench_ready(&["--delay-ms", "20"]).await;
    let mut o = RunningOrchestrator::start(&w.dbs[0], &w.prefix, w.defs.clone()).await.unwrap();
    let api = Api::new(&w).await;
    let client = o.client.clone();
    let load = Load::start(&client, &w.ns, n, 8, flow_load());
    load.until(n / 4).await;
    let real = load.some_id();
    let mut tally = Tally::default();
    let js = jetstream::new(client.clone());

    // Start requests: refused, never started, never "unavailable".
    for body in junk() {
        let answer = start_request(&client, &w.ns, "flow", body.clone()).await;
        let refused = matches!(&answer, Some(StartResponse::Refused { code, .. })
            if code == "bad_request" || code == "invalid_input");
        tally.expect(refused, || format!("start with {} answered {answer:?}", show(&body)));
    }
    let answer = start_request(&client, &w.ns, "no_such_type", b"{}".to_vec()).await;
    tally.expect(matches!(&answer, Some(StartResponse::Refused { .. })), || {
        format!("a start of an unknown type answered {answer:?}")
    });
    // Replies: junk on every partition's subject, and well-formed replies naming no command.
    let forged = [
        json!({"command_id": "no-such-saga.one.do", "attempt": 1, "outcome": {"status": "ok"}}),
        json!({"command_id": format!("{real}.nope.do"), "attempt": 1, "outcome": {"status": "ok"}}),
        json!({"command_id": format!("{real}.one.do"), "attempt": 999, "outcome": {"status": "ok"}}),
        json!({"command_id": format!("{real}.one.sideways"), "attempt": 1, "outcome": {"status": "ok"}}),
        json!({"command_id": "", "attempt": 0, "outcome": {"status": "failed", "code": "", "message": ""}}),
    ];
    for p in 0..PARTITIONS {
        let bodies = junk().into_iter().chain(forged.iter().map(|f| f.to_string().into_bytes()));
        for body in bodies {
            let published = async { js.publish(w.ns.reply_subject(p), body.into()).await?.await };
            if let Err(e) = published.await {
                tally.fail(format!("cannot publish a junk reply: {e}"));
            }
        }
    }
    // Commands: junk to the participant's subjects.
    for action in ["step1", "undo2", "nope"] {
        for body in junk() {
            let subject = w.ns.command_subject("bench", action);
            let published = async { js.publish(subject, body.into()).await?.await };
            if let Err(e) = published.await {
                tally.fail(format!("cannot publish a junk command: {e}"));
            }
        }
    }
    // The API: junk to every route, with and without a JSON content type.
    let admin = format!("Bearer {ADMIN}");
    let mut posts = vec![
        "/v1/sagas".to_owned(),
        "/v1/bulk".to_owned(),
        "/v1/definitions".to_owned(),
        "/v1/definitions/validate".to_owned(),
        "/v1/sagas/no-such-saga/abort".to_owned(),
    ];
    for action in ["retry", "skip", "abort", "resume", "resolve", "explode"] {
        posts.push(format!("/v1/sagas/{real}/{action}"));
    }
    for path in &posts {
        for body in junk() {
            for ct in [Some("application/json"), Some("application/yaml"), Some("text/plain"), None]
            {
                let a = api.send("POST", path, Some(&admin), ct, body.clone()).await;
                tally.expect(a.is_sound(), || {
                    format!("POST {path} ({ct:?}) {} answered {}", show(&body), a.brief())
                });
            }
        }
    }
    let gets = [
        "/v1/sagas?limit=abc",
        "/v1/sagas?limit=-1",
        "/v1/sagas?limit=0",
        "/v1/sagas?limit=99999999999999999999999",
        "/v1/sagas?status=nonsense",
        "/v1/sagas?status=,,,",
        "/v1/sagas?older_than=forever",
        "/v1/sagas?newer_than=-5m",
        "/v1/sagas?older_than=99999999999999d",
        "/v1/sagas?stuck=x",
        "/v1/sagas?cursor=..%2F..",
        "/v1/sagas?unknown=1",
        "/v1/sagas?type=a&type=b",
        "/v1/sagas?%FF=%FE",
        "/v1/sagas/%FF%FE",
        "/v1/sagas/..%2F..%2Fetc%2Fpasswd",
        "/v1/bulk/nope",
        "/v1/bulk/%00",
        "/v1/definitions/%7B%7D",
        "/v1/definitions/flow?version=x",
        "/v1/definitions/flow?version=-1",
        "/v1/nope",
        "/v1/sagas/x/y/z",
    ];
    for path in gets {
        let a = api.send("GET", path, Some(&admin), None, Vec::new()).await;
        tally.expect(a.is_sound(), || format!("GET {path} answered {}", a.brief()));
    }
    for (method, path) in
        [("DELETE", "/v1/sagas"), ("PUT", "/v1/definitions"), ("PATCH", "/v1/bulk")]
    {
        let a = api.send(method, path, Some(&admin), None, Vec::new()).await;
        tally.expect(a.status.is_client_error() && a.is_error_shape(), || {
            format!("{method} {path} answered {}", a.brief())
        });
    }
    // It still works: sagas started after the junk end too.
    let barrage_over = Instant::now();
    let mut begun = load.finish().await;
    begun.extend(Load::start(&client, &w.ns, n / 5, 8, after_load()).finish().await);
    wait_ended(&o.store).await;
    let heal = barrage_over.elapsed();
    if let Err(e) = o.wait_replies_settled(Duration::from_secs(30)).await {
        tally.fail(format!("junk replies not settled: {e}"));
    }
    // The participant settled every junk command (terminated, not left to redeliver).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let consumer: Result<jetstream::consumer::PullConsumer, _> =
            js.get_consumer_from_stream("bench", w.ns.commands_stream()).await;
        let unsettled = match consumer {
            Ok(mut c) => c
                .info()
                .await
                .map(|i| i.num_pending + i.num_ack_pending as u64)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if unsettled == Ok(0) {
            break;
        }
        if Instant::now() > deadline {
            tally.fail(format!("the participant left junk commands unsettled: {unsettled:?}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let statuses = verify(&o.store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    o.stop().await;
    w.finish(tally, "malformed_json", heal);
}

/// SQL, NUL bytes, templates and 64 KiB strings in saga inputs, idempotency
/// keys, repair reasons and request ids, filter values and paths: each is
/// stored exactly as sent or refused with a JSON error, never a 5xx; the
/// `sagas` table is intact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_strings_everywhere() {
    let _turn = TURN.lock().await;
    let n = sagas(100, 600);
    let w =
        World::new("hostile_strings", NATS_URL, &[("flow.yaml", FLOW), ("held.yaml", HELD)]).await;
    let _bench = w.bench_ready(&["--delay-ms", "20"]).await;
    let mut o = RunningOrchestrator::start(&w.dbs[0], &w.prefix, w.defs.clone()).await.unwrap();
    let script: Script =
        Arc::new(|cmd| (cmd.kind == Kind::Undo).then(|| Outcome::Ok { output: json!({}) }));
    let (_seen, stop) =
        scripted_participant(o.client.clone(), &w.ns, "slowp", script).await.unwrap();
    let api = Api::new(&w).await;
    let client = o.client.clone();
    let load = Load::start(&client, &w.ns, n, 8, flow_load());
    let mut tally = Tally::default();
    let mut extra: Vec<Begun> = Vec::new();
    let hostile = hostile();
    let start_body = |key: &str, input: &Value| {
        serde_json::to_vec(&StartRequest { idempotency_key: key.to_owned(), input: input.clone() })
            .unwrap()
    };

    // Saga inputs, over NATS: stored as sent, and sent on as sent (no template re-rendering).
    let mut inputs = Vec::new();
    for (label, h) in &hostile {
        let key = format!("input-{label}");
        let input = json!({ "note": h });
        match start_request(&client, &w.ns, "flow", start_body(&key, &input)).await {
            Some(StartResponse::Started { saga_id }) => {
                inputs.push((label, h.clone(), saga_id.clone()));
                extra.push(Begun { saga_type: "flow".into(), key, id: saga_id, input });
            }
            other => tally.fail(format!("a {label} input was answered {other:?}")),
        }
    }
    // Idempotency keys, over NATS and the API: stored exactly (the same key finds the same
    // saga) or refused as a bad request; never "unavailable".
    for (label, h) in &hostile {
        let input = json!({ "note": format!("key {label}") });
        match start_request(&client, &w.ns, "flow", start_body(h, &input)).await {
            Some(StartResponse::Started { saga_id }) => {
                let again = start_request(&client, &w.ns, "flow", start_body(h, &input)).await;
                let same =
                    matches!(&again, Some(StartResponse::Existing { saga_id: s }) if *s == saga_id);
                tally.expect(same, || format!("the {label} key again answered {again:?}"));
                extra.push(Begun { saga_type: "flow".into(), key: h.clone(), id: saga_id, input });
            }
            Some(StartResponse::Refused { code, .. }) if code == "bad_request" => {}
            other => tally.fail(format!("a {label} key over NATS was answered {other:?}")),
        }
        let key = format!("api-{h}");
        let input = json!({ "note": h });
        let body = json!({"type": "flow", "idempotency_key": key, "input": input});
        let a = api.post("/v1/sagas", OPERATOR, &body).await;
        match a.status {
            StatusCode::CREATED => {
                let id = a.json.as_ref().and_then(|v| v["saga_id"].as_str()).unwrap().to_owned();
                extra.push(Begun { saga_type: "flow".into(), key, id, input });
            }
            s if s.is_client_error() && a.is_error_shape() => {}
            _ => tally.fail(format!("a {label} key through the API was answered {}", a.brief())),
        }
        let body = json!({"type": h, "idempotency_key": "k", "input": {"note": ""}});
        let a = api.post("/v1/sagas", OPERATOR, &body).await;
        tally.expect(a.status == StatusCode::UNPROCESSABLE_ENTITY && a.is_error_shape(), || {
            format!("a {label} saga type was answered {}", a.brief())
        });
    }
    // Repairs: abort held sagas with hostile reasons, and with hostile request ids.
    for (label, h) in &hostile {
        for field in ["reason", "request_id"] {
            let key = format!("held-{field}-{label}");
            let id = start_one(&client, &w.ns, "held", &key, &json!({})).await;
            extra.push(Begun { saga_type: "held".into(), key, id: id.clone(), input: json!({}) });
            let body = if field == "reason" {
                json!({ "reason": h })
            } else {
                json!({ "reason": "hostile request id", "request_id": h })
            };
            let path = format!("/v1/sagas/{id}/abort");
            let a = api.post(&path, OPERATOR, &body).await;
            if a.status == StatusCode::OK && field == "reason" {
                let events = o.store.load(&id).await.unwrap().unwrap().events;
                let stored = events.iter().any(|e| matches!(e,
                    SagaEvent::CompensationStarted { cause: CompensationCause::Aborted { reason, .. }, .. }
                    if reason == h));
                tally.expect(stored, || format!("the {label} reason was not stored as sent"));
            } else if a.status != StatusCode::OK {
                tally.expect(a.status.is_client_error() && a.is_error_shape(), || {
                    format!("an abort with a {label} {field} was answered {}", a.brief())
                });
                // Still waiting: end it for the count.
                let a = api.post(&path, OPERATOR, &json!({ "reason": "cleanup" })).await;
                tally.expect(a.status == StatusCode::OK, || {
                    format!("cannot abort held saga {id}: {}", a.brief())
                });
            }
        }
    }
    // Filters and paths.
    for (label, h) in &hostile {
        let e = enc(h);
        for field in ["type", "status", "step", "key", "cursor", "older_than", "stuck"] {
            let a = api.get(&format!("/v1/sagas?{field}={e}"), VIEWER).await;
            tally.expect(a.is_sound(), || format!("filter {field}={label} answered {}", a.brief()));
            if field == "key" && a.status == StatusCode::OK {
                let items = a.json.as_ref().and_then(|v| v["items"].as_array()).cloned();
                let all_match = items.unwrap_or_default().iter().all(|it| {
                    it["idempotency_key"].as_str().is_some_and(|k| k.contains(h.as_str()))
                });
                tally.expect(all_match, || format!("key={label} listed keys without it"));
            }
        }
        let bulk = json!({"action": "abort", "filter": {"key": h, "type": h}, "reason": h,
                          "dry_run": true, "request_id": h});
        let a = api.post("/v1/bulk", OPERATOR, &bulk).await;
        tally.expect(a.is_sound(), || format!("a {label} bulk answered {}", a.brief()));
        for path in
            [format!("/v1/sagas/{e}"), format!("/v1/definitions/{e}"), format!("/v1/bulk/{e}")]
        {
            let a = api.get(&path, VIEWER).await;
            let refused = a.unsendable || (a.status == StatusCode::NOT_FOUND && a.is_error_shape());
            tally.expect(refused, || format!("GET {path:.60} answered {}", a.brief()));
        }
        let a = api.post(&format!("/v1/sagas/{e}/retry"), OPERATOR, &json!({})).await;
        let refused = a.unsendable || (a.status == StatusCode::NOT_FOUND && a.is_error_shape());
        tally.expect(refused, || format!("a repair of saga {label} answered {}", a.brief()));
    }

    // It still works: sagas started after the hostile ones end too.
    let barrage_over = Instant::now();
    let mut begun = load.finish().await;
    begun.extend(extra);
    begun.extend(Load::start(&client, &w.ns, n / 5, 8, after_load()).finish().await);
    wait_ended(&o.store).await;
    let heal = barrage_over.elapsed();
    let statuses = verify(&o.store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    for (label, h, id) in &inputs {
        let events = o.store.load(id).await.unwrap().unwrap().events;
        let input_kept = events.iter().any(
            |e| matches!(e, SagaEvent::SagaStarted { input, .. } if input["note"] == json!(h)),
        );
        let sent_as_is = events.iter().any(
            |e| matches!(e, SagaEvent::CommandSent { payload, .. } if payload["note"] == json!(h)),
        );
        tally.expect(input_kept && sent_as_is, || {
            format!("the {label} input was not kept ({input_kept}) or sent ({sent_as_is}) as is")
        });
        let status = statuses.get(id).map_or("?", String::as_str);
        tally.expect(status == "completed", || format!("the {label} input saga ended {status}"));
    }
    let db = o.store.db();
    let events = count(db, "SELECT count(*) AS n FROM saga_events").await;
    tally.expect(events.as_ref().is_ok_and(|n| *n > 0), || format!("saga_events: {events:?}"));
    stop.cancel();
    o.stop().await;
    w.finish(tally, "hostile_strings", heal);
}

/// No token, an expired one, forged ones: 401 on every route; a viewer's
/// repair, start, bulk or registration: 403; nothing is recorded in their name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_and_unauthorised_calls() {
    let _turn = TURN.lock().await;
    let n = sagas(100, 600);
    let w = World::new("auth", NATS_URL, &[("flow.yaml", FLOW)]).await;
    let _bench = w.bench_ready(&["--delay-ms", "20"]).await;
    let mut o = RunningOrchestrator::start(&w.dbs[0], &w.prefix, w.defs.clone()).await.unwrap();
    let api = Api::new(&w).await;
    let load = Load::start(&o.client, &w.ns, n, 8, flow_load());
    load.until(n / 4).await;
    let id = load.some_id();
    let mut tally = Tally::default();

    let flow = FLOW.to_owned();
    let start = json!({"type": "flow", "idempotency_key": "auth", "input": {"note": ""}});
    let bulk =
        json!({"action": "abort", "filter": {"type": "flow"}, "reason": "r", "dry_run": true});
    let routes: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/v1/sagas".into(), vec![]),
        ("GET", format!("/v1/sagas/{id}"), vec![]),
        ("GET", "/v1/overview".into(), vec![]),
        ("GET", "/v1/definitions".into(), vec![]),
        ("GET", "/metrics".into(), vec![]),
        ("POST", "/v1/sagas".into(), start.to_string().into_bytes()),
        ("POST", format!("/v1/sagas/{id}/abort"), b"{\"reason\": \"r\"}".to_vec()),
        ("POST", "/v1/bulk".into(), bulk.to_string().into_bytes()),
        ("POST", "/v1/definitions".into(), flow.clone().into_bytes()),
    ];
    let forged_hash = orchestrator::api::auth::hash_token(VIEWER);
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(format!("Bearer {EXPIRED}"))),
        ("forged", Some(format!("Bearer forged-{}", token()))),
        ("the stored hash", Some(format!("Bearer {forged_hash}"))),
        ("a longer token", Some(format!("Bearer {VIEWER}x"))),
        ("empty", Some("Bearer ".to_owned())),
        ("basic", Some("Basic dmVyYTpzZWNyZXQ=".to_owned())),
        ("2 KiB", Some(format!("Bearer {}", "a".repeat(2048)))),
    ];
    for (method, path, body) in &routes {
        let ct = if path.starts_with("/v1/definitions") {
            "application/yaml"
        } else {
            "application/json"
        };
        for (what, auth) in &refused {
            let a = api.send(method, path, auth.as_deref(), Some(ct), body.clone()).await;
            tally.expect(
                a.status == StatusCode::UNAUTHORIZED && a.is_error_shape() && a.www_authenticate,
                || format!("{method} {path} with {what} answered {}", a.brief()),
            );
        }
    }
    let viewer = format!("Bearer {VIEWER}");
    for action in ["retry", "skip", "abort", "resume", "resolve"] {
        let path = format!("/v1/sagas/{id}/{action}");
        let body = json!({"reason": "viewer tries", "outcome": "completed"});
        let a = api
            .send("POST", &path, Some(&viewer), Some("application/json"), body.to_string().into())
            .await;
        tally.expect(a.status == StatusCode::FORBIDDEN && a.is_error_shape(), || {
            format!("a viewer's {action} answered {}", a.brief())
        });
    }
    for (_, path, body) in routes.iter().filter(|(m, _, _)| *m == "POST") {
        let ct = if path.starts_with("/v1/definitions") {
            "application/yaml"
        } else {
            "application/json"
        };
        let a = api.send("POST", path, Some(&viewer), Some(ct), body.clone()).await;
        tally.expect(a.status == StatusCode::FORBIDDEN && a.is_error_shape(), || {
            format!("a viewer's POST {path} answered {}", a.brief())
        });
    }
    let a = api
        .send(
            "POST",
            "/v1/definitions",
            Some(&format!("Bearer {OPERATOR}")),
            Some("application/yaml"),
            flow.into_bytes(),
        )
        .await;
    tally.expect(a.status == StatusCode::FORBIDDEN, || {
        format!("an operator's registration answered {}", a.brief())
    });
    // The same tokens do work where they are allowed.
    let a = api.get("/v1/sagas", VIEWER).await;
    tally.expect(a.status == StatusCode::OK, || format!("the viewer cannot list: {}", a.brief()));
    let a = api.post(&format!("/v1/sagas/{id}/retry"), OPERATOR, &json!({})).await;
    tally.expect(a.status == StatusCode::OK || a.status == StatusCode::CONFLICT, || {
        format!("the operator's retry answered {}", a.brief())
    });

    let calls_over = Instant::now();
    let begun = load.finish().await;
    wait_ended(&o.store).await;
    let heal = calls_over.elapsed();
    let statuses = verify(&o.store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "bench_effects", &FLOW_STEPS, &statuses, &mut tally).await;
    let db = o.store.db();
    let by_viewer = count(
        db,
        &format!(
            "SELECT count(*) AS n FROM saga_events WHERE event LIKE '%\"by\":\"{VIEWER_NAME}\"%'"
        ),
    )
    .await;
    tally.expect(by_viewer == Ok(0), || format!("events recorded for the viewer: {by_viewer:?}"));
    let definitions = count(db, "SELECT count(*) AS n FROM definitions").await;
    tally.expect(definitions == Ok(1), || {
        format!("definitions after refused registrations: {definitions:?}")
    });
    o.stop().await;
    w.finish(tally, "auth", heal);
}
