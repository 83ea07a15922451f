//! Horizontal scaling over real processes, PostgreSQL and NATS: several `skald
//! serve` instances share the partitions by leases; one is killed, one is
//! frozen past its lease, instances join and leave — all under load. After each,
//! every saga must end exactly once with a gapless history, the participant
//! must have applied each command at most once, and a deposed owner's writes
//! must all have been rejected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchestrator::store::Store;
use sagas::machine::SagaEvent;
use sagas::protocol::{Namespace, StartRequest, StartResponse};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use skald_tests::process::{ChildGuard, free_port};
use skald_tests::{Backend, NATS_URL, TestDb, definitions_dir, delete_streams, token};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 16;

/// The scenarios run one at a time: each runs several orchestrator processes
/// with a connection pool apiece, and together they would exceed the shared
/// PostgreSQL server's connection limit.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const LEASE_TTL_MS: &str = "3000";
const VIEWER_TOKEN: &str = "failover-viewer";

/// Three steps on the bench participant, patient enough to ride out a takeover.
const FLOW: &str = r#"
name: flow
version: 1
description: Three compensable steps for the failover tests.
deadline: 5m
input_schema: { type: object }
steps:
  - name: one
    participant: bench
    action: step1
    compensation: undo1
    timeout: 3s
    retry: { attempts: 6, initial_backoff: 200ms, max_backoff: 2s }
    compensation_retry: { attempts: 10, initial_backoff: 200ms, max_backoff: 2s }
    input: { saga: "{{saga.id}}" }
  - name: two
    participant: bench
    action: step2
    compensation: undo2
    timeout: 3s
    retry: { attempts: 6, initial_backoff: 200ms, max_backoff: 2s }
    compensation_retry: { attempts: 10, initial_backoff: 200ms, max_backoff: 2s }
    input: { saga: "{{saga.id}}" }
  - name: three
    participant: bench
    action: step3
    compensation: undo3
    timeout: 3s
    retry: { attempts: 6, initial_backoff: 200ms, max_backoff: 2s }
    compensation_retry: { attempts: 10, initial_backoff: 200ms, max_backoff: 2s }
    input: { saga: "{{saga.id}}" }
"#;

struct Node {
    child: ChildGuard,
    http_port: u16,
}

struct Cluster {
    db: TestDb,
    participant_db: TestDb,
    prefix: String,
    definitions: PathBuf,
    tokens_file: PathBuf,
    nodes: BTreeMap<usize, Node>,
    _participant: ChildGuard,
    client: async_nats::Client,
    store: Store,
}

fn instance(i: usize) -> String {
    format!("o-{i}")
}

impl Cluster {
    async fn new(participant_delay_ms: u64) -> Self {
        let db = TestDb::new(Backend::Postgres).await.unwrap();
        let participant_db = TestDb::new(Backend::Postgres).await.unwrap();
        let prefix = format!("f{}", token());
        let definitions = definitions_dir(&[("flow.yaml", FLOW)]).unwrap();
        let tokens_file = definitions.join("api-tokens.txt");
        std::fs::write(
            &tokens_file,
            format!(
                "tokens:\n  - {{name: test, role: viewer, sha256: {}}}\n",
                orchestrator::api::auth::hash_token(VIEWER_TOKEN)
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_participant-e2e"));
        cmd.args(["--prefix", &prefix, "--database-url", &participant_db.url])
            .args(["--delay-ms", &participant_delay_ms.to_string(), "--concurrency", "256"])
            .env("NATS_URL", NATS_URL)
            .env("RUST_LOG", "error");
        let participant = ChildGuard::spawn("participant", &mut cmd).unwrap();
        let client = async_nats::connect(NATS_URL).await.unwrap();
        // The schema exists once the first instance has started; connect after.
        let mut cluster = Self {
            store: Store::connect(&db.url).await.unwrap(),
            db,
            participant_db,
            prefix,
            definitions,
            tokens_file,
            nodes: BTreeMap::new(),
            _participant: participant,
            client,
        };
        cluster.wait_participant_ready().await;
        cluster.nodes.clear();
        cluster
    }

    async fn wait_participant_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let db = Database::connect(&self.participant_db.url).await.unwrap();
            let ready = db
                .query_one(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT 1 AS one FROM information_schema.tables WHERE table_name = 'bench_effects'",
                ))
                .await
                .unwrap()
                .is_some();
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the bench participant did not start");
    }

    fn start_node(&mut self, i: usize) {
        let http_port = free_port().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skald-e2e"));
        cmd.args(["serve", "--partitions", &PARTITIONS.to_string(), "--prefix", &self.prefix])
            .args(["--database-url", &self.db.url, "--instance", &instance(i)])
            .args(["--lease-ttl-ms", LEASE_TTL_MS])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .arg("--api-tokens-file")
            .arg(&self.tokens_file)
            .arg("--definitions")
            .arg(&self.definitions)
            .env("NATS_URL", NATS_URL)
            .env("RUST_LOG", "error");
        let child = ChildGuard::spawn(&instance(i), &mut cmd).unwrap();
        self.nodes.insert(i, Node { child, http_port });
    }

    /// Owner of each partition with a live lease.
    async fn owners(&self) -> BTreeMap<i32, (String, i64)> {
        let now = orchestrator::clock::to_db(orchestrator::clock::now());
        self.store
            .leases()
            .await
            .unwrap()
            .into_iter()
            .filter(|l| !l.owner.is_empty() && l.expires_at_ms > now)
            .map(|l| (l.partition, (l.owner, l.epoch)))
            .collect()
    }

    /// Wait until every partition is held, by exactly `instances`.
    async fn wait_owners(&self, instances: &[usize], within: Duration) -> Duration {
        let started = Instant::now();
        let want: HashSet<String> = instances.iter().map(|i| instance(*i)).collect();
        loop {
            let owners = self.owners().await;
            let have: HashSet<String> = owners.values().map(|(o, _)| o.clone()).collect();
            if owners.len() == PARTITIONS as usize && have == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "partitions not held by {want:?} within {within:?}: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, i: usize, name: &str) -> f64 {
        let port = self.nodes[&i].http_port;
        let text = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .bearer_auth(VIEWER_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn in_flight(&self) -> i64 {
        self.store
            .count_by_status()
            .await
            .unwrap()
            .into_iter()
            .filter(|(s, _)| s == "running" || s == "compensating")
            .map(|(_, n)| n)
            .sum()
    }

    /// Every started saga ended once, with a gapless history; no command
    /// took effect twice at the participant.
    async fn verify(&self, started: &[(String, String)]) {
        let keys: HashSet<&str> = started.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), started.len(), "each key started once");
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for (key, id) in started {
            let row = self.store.find_by_key("flow", key).await.unwrap().unwrap();
            assert_eq!(&row.saga_id, id, "one saga per key");
            // `load` asserts seq 1..n without gaps.
            let loaded = self.store.load(id).await.unwrap().unwrap();
            let terminal: Vec<usize> = loaded
                .events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.is_terminal())
                .map(|(i, _)| i)
                .collect();
            match loaded.row.status.as_str() {
                "completed" | "compensated" | "failed" => {
                    assert_eq!(terminal, vec![loaded.events.len() - 1], "{id}: one terminal, last");
                }
                "parked" => {
                    assert!(terminal.is_empty());
                    assert!(
                        loaded.events.iter().any(|e| matches!(e, SagaEvent::SagaParked { .. })),
                        "{id}: parked with a reason"
                    );
                }
                other => panic!("{id} did not end: {other}"),
            }
            *by_status.entry(loaded.row.status).or_default() += 1;
        }
        let db = Database::connect(&self.participant_db.url).await.unwrap();
        let twice = db
            .query_all(Statement::from_string(
                db.get_database_backend(),
                "SELECT command_id FROM bench_effects GROUP BY command_id HAVING count(*) > 1",
            ))
            .await
            .unwrap();
        assert!(twice.is_empty(), "{} commands took effect twice", twice.len());
        println!("{} sagas ended: {by_status:?}", started.len());
    }

    async fn wait_all_ended(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.in_flight().await > 0 {
            assert!(Instant::now() < deadline, "sagas still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.definitions);
    }
}

/// A steady load: start `total` sagas through NATS start requests, `concurrency`
/// at a time, spread over whichever instances answer (a queue group).
struct Load {
    started: Arc<Mutex<Vec<(String, String)>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: &async_nats::Client, prefix: &str, total: usize, concurrency: usize) -> Self {
        let started = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let ns = Namespace::new(prefix).unwrap();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (client, ns) = (client.clone(), ns.clone());
            let (started, count, stop, next) =
                (started.clone(), count.clone(), stop.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= total || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let key = format!("k{n}");
                    let id = start_one(&client, &ns, &key).await;
                    started.lock().unwrap().push((key, id));
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let task = tokio::spawn(async move {
            for w in workers {
                w.await.unwrap();
            }
        });
        Self { started, count, stop, task }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    async fn until(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n {
            assert!(Instant::now() < deadline, "only {} of {n} sagas started", self.count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<(String, String)> {
        self.task.await.unwrap();
        let _ = &self.stop;
        self.started.lock().unwrap().clone()
    }
}

/// Start one saga, retrying the same key while no instance answers.
async fn start_one(client: &async_nats::Client, ns: &Namespace, key: &str) -> String {
    let body =
        serde_json::to_vec(&StartRequest { idempotency_key: key.to_owned(), input: json!({}) })
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(ns.start_subject("flow"), body.clone().into()),
        )
        .await;
        if let Ok(Ok(msg)) = answer {
            match serde_json::from_slice(&msg.payload).unwrap() {
                StartResponse::Started { saga_id } | StartResponse::Existing { saga_id } => {
                    return saga_id;
                }
                other => panic!("start refused: {other:?}"),
            }
        }
        assert!(Instant::now() < deadline, "no instance answered the start of {key}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_instances_loses_no_saga() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(150).await;
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_owners(&[0, 1, 2], Duration::from_secs(30)).await;
    let load = Load::start(&cluster.client, &cluster.prefix, 2_500, 96);
    // Kill while at least 1,000 sagas are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_flight = 0;
    while in_flight < 1_000 {
        assert!(Instant::now() < deadline, "never 1,000 in flight (last {in_flight})");
        tokio::time::sleep(Duration::from_millis(20)).await;
        in_flight = cluster.in_flight().await;
    }
    let owned_by_victim =
        cluster.owners().await.values().filter(|(o, _)| *o == instance(0)).count();
    cluster.nodes.get_mut(&0).unwrap().child.kill9();
    let killed_at = Instant::now();
    println!("killed o-0 (holding {owned_by_victim} partitions) with {in_flight} sagas in flight");
    let takeover = cluster.wait_owners(&[1, 2], Duration::from_secs(30)).await;
    println!(
        "takeover: every partition of o-0 held by a survivor {} ms after the kill",
        takeover.as_millis()
    );
    let started = load.finish().await;
    cluster.wait_all_ended(Duration::from_secs(240)).await;
    println!("all sagas ended {} s after the kill", killed_at.elapsed().as_secs());
    cluster.verify(&started).await;
    delete_streams(&cluster.client, &Namespace::new(&cluster.prefix).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_owner_is_fenced_and_rejoins_as_a_follower() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(20).await;
    cluster.start_node(0);
    cluster.start_node(1);
    cluster.wait_owners(&[0, 1], Duration::from_secs(30)).await;
    let before: BTreeMap<i32, (String, i64)> = cluster.owners().await;
    let load = Load::start(&cluster.client, &cluster.prefix, 900, 16);
    load.until(200, Duration::from_secs(60)).await;
    let pid = cluster.nodes[&0].child.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let takeover = cluster.wait_owners(&[1], Duration::from_secs(30)).await;
    println!("o-0 frozen; o-1 took all partitions after {} ms", takeover.as_millis());
    // Let the survivor work under the new epochs, then wake the stale owner.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let started = load.finish().await;
    cluster.wait_all_ended(Duration::from_secs(180)).await;
    // It rejoins: holds partitions again, under new epochs.
    cluster.wait_owners(&[0, 1], Duration::from_secs(30)).await;
    let after = cluster.owners().await;
    for (p, (owner, epoch)) in &after {
        if owner == &instance(0) {
            assert!(*epoch > before[p].1, "partition {p} retaken at a new epoch");
        }
    }
    let rejected = cluster.metric(0, "skald_stale_writes_rejected_total").await;
    println!("stale owner o-0 attempted {rejected} writes after the takeover; all were rejected");
    cluster.verify(&started).await;
    delete_streams(&cluster.client, &Namespace::new(&cluster.prefix).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_one_to_three_to_one_under_load_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(20).await;
    cluster.start_node(0);
    cluster.wait_owners(&[0], Duration::from_secs(30)).await;
    let load = Load::start(&cluster.client, &cluster.prefix, 1_200, 16);
    load.until(150, Duration::from_secs(60)).await;
    cluster.start_node(1);
    cluster.start_node(2);
    let spread = cluster.wait_owners(&[0, 1, 2], Duration::from_secs(30)).await;
    println!("scaled 1 -> 3: partitions spread over three owners in {} ms", spread.as_millis());
    load.until(600, Duration::from_secs(120)).await;
    for i in [1, 2] {
        let status = cluster.nodes.get_mut(&i).unwrap().child.terminate(Duration::from_secs(30));
        assert!(status.unwrap().success(), "o-{i} leaves cleanly on SIGTERM");
    }
    let back = cluster.wait_owners(&[0], Duration::from_secs(10)).await;
    println!("scaled 3 -> 1: all partitions back on o-0 in {} ms", back.as_millis());
    let started = load.finish().await;
    cluster.wait_all_ended(Duration::from_secs(180)).await;
    cluster.verify(&started).await;
    delete_streams(&cluster.client, &Namespace::new(&cluster.prefix).unwrap()).await;
}
