//! A scenario's world: its turn and size, its databases, prefix and saga
//! definitions, the processes it runs (`skald serve`, the bench participant,
//! the money programs) and the files they log to, and the end every scenario
//! comes to (a panic in any log fails it; its row is printed).

use crate::common::cluster::db_ms;
use crate::common::load::{Begun, Load, Starter};
use crate::common::processes::{bench_is_up, bench_participant, skald_serve, spawn_until_up};
use crate::invariants::{count, verify_with_bench};
use crate::load::{LOAD_WITHIN, flow_load, in_flight, wait_ended};
use crate::tally::Tally;
use orchestrator::store::Store;
use sagas::protocol::Namespace;
use skald_tests::process::ChildGuard;
use skald_tests::{
    Backend, PARTITIONS, RunningOrchestrator, SecuredBus, TestDb, definitions_dir, delete_streams,
    token,
};
use skald_transport::{BusOptions, Delivery};
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Three compensable steps on the bench participant; most scenarios run it.
pub const FLOW: &str = include_str!("definitions/flow.yaml");
/// [`FLOW`] as the file a world's definitions folder holds.
pub const FLOW_FILE: (&str, &str) = ("flow.yaml", FLOW);
/// The steps of [`FLOW`].
pub const FLOW_STEPS: [&str; 3] = ["one", "two", "three"];

/// Arguments of a bench participant that takes 20 ms a command, so that a
/// fault finds sagas in flight.
pub const BENCH_DELAYED: &[&str] = &["--delay-ms", "20"];

/// The scenarios take turns: each starts processes and loads the machine.
pub static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Lease TTL of the `skald` processes: a killed instance's partitions move after about this long.
const LEASE_TTL_MS: &str = "2000";
/// How long a client sends a start again while no orchestrator takes it.
const STARTS_WITHIN: Duration = Duration::from_secs(180);

/// `FAULTS_FULL=1`: the full sizes.
pub fn full() -> bool {
    std::env::var("FAULTS_FULL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Sagas of load: `ci` by default, `full_size` with `FAULTS_FULL=1`.
pub fn sagas(ci: usize, full_size: usize) -> usize {
    if full() { full_size } else { ci }
}

/// What a scenario runs in: its own prefix (subjects and streams), databases
/// and definitions folder, a folder for its processes' logs, and how it starts
/// them.
pub struct World {
    /// The scenario's name: its row, and its folder of logs.
    scenario: &'static str,
    pub prefix: String,
    pub ns: Namespace,
    pub defs: PathBuf,
    nats_url: String,
    /// A private bus with an identity per process, or none: every process
    /// connects to `nats_url` anonymously.
    secured: Option<SecuredBus>,
    /// The orchestrator's database.
    db_url: String,
    /// The (first) participant's database.
    pub pdb_url: String,
    pub dbs: Vec<TestDb>,
    pub logs: PathBuf,
    /// `--lease-ttl-ms` of the `skald` processes.
    pub lease_ttl_ms: &'static str,
    /// Environment every `skald` and bench process gets (stream replicas).
    pub env: Vec<(&'static str, String)>,
    /// How commands and replies travel between its processes: the default
    /// (direct), or JetStream for a scenario about the streams.
    pub delivery: Delivery,
}

impl World {
    /// Two fresh databases on the machine's PostgreSQL.
    pub async fn new(scenario: &'static str, nats_url: &str, definitions: &[(&str, &str)]) -> Self {
        let db = TestDb::new(Backend::Postgres).await.unwrap();
        let pdb = TestDb::new(Backend::Postgres).await.unwrap();
        let (db_url, pdb_url) = (db.url.clone(), pdb.url.clone());
        Self::on(scenario, nats_url, db_url, pdb_url, definitions, vec![db, pdb])
    }

    pub fn on(
        scenario: &'static str,
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
            scenario,
            ns: Namespace::new(&prefix).unwrap(),
            prefix,
            defs: definitions_dir(definitions).unwrap(),
            nats_url: nats_url.to_owned(),
            secured: None,
            db_url,
            pdb_url,
            dbs,
            logs,
            lease_ttl_ms: LEASE_TTL_MS,
            env: Vec::new(),
            delivery: Delivery::default(),
        }
    }

    /// This world with commands and replies through the JetStream streams.
    #[must_use]
    pub fn jetstream(mut self) -> Self {
        self.delivery = Delivery::JetStream;
        self
    }

    /// [`World::new`] on a private secured bus (as `skald bus init` writes
    /// one): identities `orchestrator`, the bench participant `bench`, each of
    /// `others` (participants too) and `starter`, the identity scenarios start
    /// sagas with.
    pub async fn secured(
        scenario: &'static str,
        definitions: &[(&str, &str)],
        others: &[&str],
    ) -> Self {
        let mut w = Self::new(scenario, "", definitions).await;
        let mut participants = vec!["bench"];
        participants.extend_from_slice(others);
        let bus = SecuredBus::start(&w.ns, &participants, &["starter"], false).unwrap();
        w.nats_url = bus.server.url();
        w.secured = Some(bus);
        w
    }

    /// How `identity` connects: on a secured bus its own identity, else the
    /// world's NATS anonymously.
    pub fn bus(&self, identity: &str) -> BusOptions {
        let options = match &self.secured {
            Some(bus) => bus.options(identity),
            None => BusOptions::plain(&self.nats_url),
        };
        BusOptions { delivery: self.delivery, ..options }
    }

    /// An orchestrator in this process on the world's database, delivering
    /// commands and replies as the world's processes do.
    pub async fn orchestrator(&self) -> RunningOrchestrator {
        let (db, defs) = (&self.dbs[0], self.defs.clone());
        RunningOrchestrator::start_delivering(&self.nats_url, db, &self.prefix, defs, self.delivery)
            .await
            .unwrap()
    }

    /// A client connected as `identity` (see [`World::bus`]).
    pub async fn client_as(&self, identity: &str) -> async_nats::Client {
        self.bus(identity).connect(identity).await.unwrap()
    }

    fn log(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .unwrap()
    }

    /// A `skald serve` process; `envs` may set `RUST_LOG`.
    pub fn skald(&self, instance: &str, envs: &[(&str, &str)]) -> ChildGuard {
        let mut cmd =
            skald_serve(&self.nats_url, &self.prefix, &self.db_url, PARTITIONS, &self.defs);
        cmd.args(["--instance", instance, "--lease-ttl-ms", self.lease_ttl_ms])
            .args(["--http-addr", "off"])
            .env("RUST_LOG", std::env::var("FAULTS_SKALD_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(self.log(instance));
        self.bus("orchestrator").pass_to(&mut cmd);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        ChildGuard::spawn(instance, &mut cmd).unwrap()
    }

    /// The bench participant, on the participant database.
    pub fn bench(&self, args: &[&str]) -> ChildGuard {
        let mut cmd = bench_participant(&self.nats_url, &self.prefix, &self.pdb_url, 128);
        cmd.args(args).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(self.log("bench"));
        self.bus("bench").pass_to(&mut cmd);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        ChildGuard::spawn("bench", &mut cmd).unwrap()
    }

    /// A `skald serve` process, once it has joined the cluster (heartbeat in
    /// `members`); started again when it gave up at start-up (a busy database).
    pub async fn skald_ready(
        &self,
        store: &Store,
        instance: &str,
        envs: &[(&str, &str)],
    ) -> ChildGuard {
        let joined = async |since: SystemTime| {
            let sql = format!(
                "SELECT count(*) AS n FROM members WHERE instance = '{instance}' \
                 AND heartbeat_at_ms >= {}",
                db_ms(since)
            );
            count(store.db(), &sql).await == Ok(1)
        };
        let spawn = || self.skald(instance, envs);
        let child = spawn_until_up(spawn, joined, Duration::from_millis(50)).await;
        child.unwrap_or_else(|| panic!("{instance} did not start; see {}", self.logs.display()))
    }

    /// The bench participant, once it is ready (its table exists); started again
    /// when it gave up at start-up (a database too busy to answer in time).
    pub async fn bench_ready(&self, args: &[&str]) -> ChildGuard {
        let up = async |_: SystemTime| bench_is_up(&self.pdb_url).await;
        let child = spawn_until_up(|| self.bench(args), up, Duration::from_millis(100)).await;
        child.unwrap_or_else(|| {
            panic!("the bench participant did not start; see {}", self.logs.display())
        })
    }

    /// A program of the money scenario, logging to its own file.
    pub fn program(
        &self,
        name: &str,
        bin: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> ChildGuard {
        let mut cmd = Process::new(bin);
        cmd.args(args).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(self.log(name));
        cmd.env("SKALD_DELIVERY", self.delivery.as_str());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        ChildGuard::spawn(name, &mut cmd).unwrap()
    }

    /// A client that starts sagas (identity `starter` on a secured bus).
    pub async fn client(&self) -> async_nats::Client {
        self.client_as("starter").await
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.db_url).await.unwrap()
    }

    /// A client starting sagas in this world: a start no orchestrator
    /// answers, or answers `unavailable`, is sent again with the same key.
    pub fn starter(&self, client: &async_nats::Client) -> Starter {
        Starter::new(client, &self.ns, STARTS_WITHIN).retrying_unavailable()
    }

    /// Fail on any panic a process logged (a debug assertion that did not
    /// break an invariant still shows a bug), then print the row.
    pub fn finish(&self, mut tally: Tally, heal: Duration) {
        for entry in std::fs::read_dir(&self.logs).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("panicked at")) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let next = text.lines().skip_while(|l| !l.contains("panicked at")).nth(1);
                tally.fail(format!("{name}: {line} {}", next.unwrap_or_default()));
            }
        }
        tally.finish(self.scenario, heal);
    }
}

/// A scenario of `flow` sagas on processes (`skald serve` instances, the bench
/// participant): its world, the orchestrators' store and a client.
pub struct FlowRun {
    pub w: World,
    pub store: Store,
    pub client: async_nats::Client,
}

impl FlowRun {
    pub async fn new(w: World) -> Self {
        let (store, client) = (w.store().await, w.client().await);
        Self { w, store, client }
    }

    /// A `skald serve` process, once it has joined the cluster.
    pub async fn skald_ready(&self, instance: &str, envs: &[(&str, &str)]) -> ChildGuard {
        self.w.skald_ready(&self.store, instance, envs).await
    }

    /// `n` sagas of `flow` started 16 at a time, once `started` of them have been.
    pub async fn load(&self, n: usize, started: usize) -> Load {
        let load = self.w.starter(&self.client).load(n, 16, flow_load());
        load.until(started, LOAD_WITHIN).await;
        load
    }

    /// Sagas not yet ended (-1 when they cannot be counted).
    pub async fn in_flight(&self) -> i64 {
        in_flight(&self.store).await
    }

    /// Every saga of `begun` ends (the heal time runs from `healed`, when the
    /// fault was removed); then invariants 1, 2, 5 and 6, and 5 at the bench
    /// participant, go into `tally`. The heal time.
    pub async fn ended(&self, begun: &[Begun], healed: Instant, tally: &mut Tally) -> Duration {
        let heal = wait_ended(&self.store, healed).await;
        verify_with_bench(&self.store, &self.w.pdb_url, begun, tally).await;
        heal
    }

    /// The fault is over now (`what` says what it was): the rest of the load
    /// starts and every saga ends; then the checks of [`FlowRun::ended`]. What
    /// they found, and the heal time.
    pub async fn healed(&self, what: String, load: Load) -> (Tally, Duration) {
        let healed = Instant::now();
        println!("{what}");
        let begun = load.finish().await;
        let mut tally = Tally::default();
        let heal = self.ended(&begun, healed, &mut tally).await;
        (tally, heal)
    }

    /// Delete the scenario's streams, then end as every scenario does.
    pub async fn finish(self, tally: Tally, heal: Duration) {
        // A secured bus is the scenario's own and goes with it; on it the
        // starter may not delete streams anyway.
        if self.w.secured.is_none() {
            delete_streams(&self.client, &self.w.ns).await;
        }
        self.w.finish(tally, heal);
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
