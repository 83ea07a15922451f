//! Horizontal scaling over real processes, PostgreSQL and NATS: several `skald
//! serve` instances share the partitions by leases; one is killed, one is
//! frozen past its lease, instances join and leave — all under load. After each,
//! every saga must end exactly once with a gapless history, the participant
//! must have applied each command at most once, and a deposed owner's writes
//! must all have been rejected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::cluster::{live_owners, open_sagas, wait_owners};
use common::load::{Begun, Load, Starter};
use common::processes::{
    bench_effects, bench_is_up, bench_participant, skald_serve, spawn_until_up,
};
use orchestrator::store::Store;
use sagas::machine::SagaEvent;
use sagas::protocol::Namespace;
use serde_json::json;
use skald_tests::process::{ChildGuard, free_port};
use skald_tests::{Backend, NATS_URL, TestDb, definitions_dir, delete_streams, token};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 16;

/// The scenarios run one at a time: each runs several orchestrator processes
/// with a connection pool apiece, and together they would exceed the shared
/// PostgreSQL server's connection limit.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const LEASE_TTL_MS: &str = "3000";
const VIEWER_TOKEN: &str = "failover-viewer";

/// Three steps on the bench participant, patient enough to ride out a takeover.
const FLOW: &str = include_str!("failover-flow.yaml");

struct Node {
    child: ChildGuard,
    http_port: u16,
}

/// Instances of `skald serve` sharing one database, the bench participant
/// they drive, and a client. The fields drop in order: the turn last.
struct Cluster {
    db: TestDb,
    participant_db: TestDb,
    prefix: String,
    ns: Namespace,
    definitions: PathBuf,
    tokens_file: PathBuf,
    nodes: BTreeMap<usize, Node>,
    _participant: ChildGuard,
    client: async_nats::Client,
    store: Store,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

fn instance(i: usize) -> String {
    format!("o-{i}")
}

impl Cluster {
    /// The scenario's turn; fresh databases, the bench participant taking
    /// `participant_delay_ms` a command, and the instances `nodes`, once they
    /// hold every partition.
    async fn start(participant_delay_ms: u64, nodes: &[usize]) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
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
        let delay_ms = participant_delay_ms.to_string();
        let spawn = || {
            let mut cmd = bench_participant(NATS_URL, &prefix, &participant_db.url, 256);
            cmd.args(["--delay-ms", &delay_ms]).env("RUST_LOG", "error");
            ChildGuard::spawn("participant", &mut cmd).unwrap()
        };
        let up = async |_| bench_is_up(&participant_db.url).await;
        let participant = spawn_until_up(spawn, up, Duration::from_millis(100)).await;
        let participant =
            participant.unwrap_or_else(|| panic!("the bench participant did not start"));
        let mut cluster = Self {
            store: Store::connect(&db.url).await.unwrap(),
            client: async_nats::connect(NATS_URL).await.unwrap(),
            ns: Namespace::new(&prefix).unwrap(),
            db,
            participant_db,
            prefix,
            definitions,
            tokens_file,
            nodes: BTreeMap::new(),
            _participant: participant,
            _turn: turn,
        };
        for i in nodes {
            cluster.start_node(*i);
        }
        cluster.wait_owners(nodes, Duration::from_secs(30)).await;
        cluster
    }

    fn start_node(&mut self, i: usize) {
        let http_port = free_port().unwrap();
        let mut cmd =
            skald_serve(NATS_URL, &self.prefix, &self.db.url, PARTITIONS, &self.definitions);
        cmd.args(["--instance", &instance(i), "--lease-ttl-ms", LEASE_TTL_MS])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .arg("--api-tokens-file")
            .arg(&self.tokens_file)
            .env("RUST_LOG", "error");
        let child = ChildGuard::spawn(&instance(i), &mut cmd).unwrap();
        self.nodes.insert(i, Node { child, http_port });
    }

    /// Owner of each partition with a live lease.
    async fn owners(&self) -> BTreeMap<i32, (String, i64)> {
        live_owners(&self.store).await.unwrap()
    }

    /// Wait until every partition is held, by exactly `instances`.
    async fn wait_owners(&self, instances: &[usize], within: Duration) -> Duration {
        let names: Vec<String> = instances.iter().map(|i| instance(*i)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_owners(&self.store, PARTITIONS, &names, within).await.unwrap()
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
        open_sagas(&self.store).await.unwrap()
    }

    /// `total` sagas of `flow` (keys `k0`, `k1`, …) started `concurrency` at a
    /// time through NATS start requests, spread over whichever instances
    /// answer (a queue group).
    fn load(&self, total: usize, concurrency: usize) -> Load {
        let starter = Starter::new(&self.client, &self.ns, Duration::from_secs(60));
        starter.load(
            total,
            concurrency,
            Arc::new(|i| ("flow".to_owned(), format!("k{i}"), json!({}))),
        )
    }

    /// Every saga of `load` started, then ended (within `within`).
    async fn ended(&self, load: Load, within: Duration) -> Vec<Begun> {
        let started = load.finish().await;
        let deadline = Instant::now() + within;
        while self.in_flight().await > 0 {
            assert!(Instant::now() < deadline, "sagas still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        started
    }

    /// Every started saga ended once, with a gapless history; no command
    /// took effect twice at the participant. Then the streams go.
    async fn finish(&self, started: &[Begun]) {
        let keys: HashSet<&str> = started.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(keys.len(), started.len(), "each key started once");
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for Begun { key, id, .. } in started {
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
        let effects = bench_effects(&self.participant_db.url).await;
        let twice = effects.iter().filter(|(_, n)| *n > 1).count();
        assert_eq!(twice, 0, "{twice} commands took effect twice");
        println!("{} sagas ended: {by_status:?}", started.len());
        delete_streams(&self.client, &self.ns).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.definitions);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_instances_loses_no_saga() {
    let mut cluster = Cluster::start(150, &[0, 1, 2]).await;
    let load = cluster.load(2_500, 96);
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
    let started = cluster.ended(load, Duration::from_secs(240)).await;
    println!("all sagas ended {} s after the kill", killed_at.elapsed().as_secs());
    cluster.finish(&started).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_owner_is_fenced_and_rejoins_as_a_follower() {
    let cluster = Cluster::start(20, &[0, 1]).await;
    let before: BTreeMap<i32, (String, i64)> = cluster.owners().await;
    let load = cluster.load(900, 16);
    load.until(200, Duration::from_secs(60)).await;
    let pid = cluster.nodes[&0].child.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let takeover = cluster.wait_owners(&[1], Duration::from_secs(30)).await;
    println!("o-0 frozen; o-1 took all partitions after {} ms", takeover.as_millis());
    // Let the survivor work under the new epochs, then wake the stale owner.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let started = cluster.ended(load, Duration::from_secs(180)).await;
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
    cluster.finish(&started).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_one_to_three_to_one_under_load_loses_nothing() {
    let mut cluster = Cluster::start(20, &[0]).await;
    let load = cluster.load(1_200, 16);
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
    let started = cluster.ended(load, Duration::from_secs(180)).await;
    cluster.finish(&started).await;
}
