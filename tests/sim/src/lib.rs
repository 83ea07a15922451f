//! Deterministic simulation of Skald's engine.
//!
//! One seed is one world: the **real** engine code — 1 to 3 orchestrator
//! instances, each with its driver and cache, its store (one SQLite file for
//! all, as one database) with its writer and outbox, its membership rounds
//! (heartbeats, partition leases with epochs, hand-overs), the takeover that
//! re-sends what open sagas wait on, and the timers' query for due sagas of
//! the partitions it holds — and the real ledger and payment handlers behind
//! the SDK's inbox and tombstones ([`skald_participant::Local`]), the payment
//! service's reconciler, and psp-sim's books as the provider they call (in
//! process, with timeouts, 500s and lost answers), on simulated clocks
//! ([`ManualClock`], skewed per instance) and a simulated network, with a
//! model participant for every other step that keeps an inbox and
//! tombstones as the SDK does. Every choice — which saga starts, which
//! message is delivered, dropped, duplicated, delayed or stalled, which
//! instance takes a reply, when time moves and how far, when an instance
//! or a participant crashes (at any step of its statements) and restarts
//! from its database, when an instance freezes (its leases expire, another
//! takes its partitions) and wakes to finish what it had in hand, or finds
//! its clock jumped, which store operation or step of an SQL statement
//! fails ([`statements`]), which operator acts — comes from generators
//! seeded by the seed, and every step is done to the
//! end before the next, so a seed gives the same run, and the same trace,
//! every time.
//!
//! After the faults, the world heals (nothing lost any more, every instance
//! awake, time passes) and every saga is checked: it ended (or is parked with
//! a reason), its stored history has nothing after its end and replays to the
//! status its row says, compensation ran newest outcome first, and the
//! participants' effects (the ledger's and the provider's books among them)
//! agree with how it ended; `ledger verify` finds the books sound; no saga
//! is charged twice, and the provider holds, charged less refunded, what the
//! completed top-ups charged. While it runs, every write
//! of a saga's history by a reply or a deadline is checked against the
//! leases: only the partition's holder, at its epoch, may have written it.
//!
//! What is simulated rather than real: NATS (commands are taken from the
//! outbox, replies handed to an instance that holds, or thinks it holds, the
//! saga's partition, as the relay and the intake do), the participants other
//! than the ledger and the payment service (a model), the provider's HTTP
//! (its books are real), time, and the faults. ARCHITECTURE.md,
//! "Deterministic simulation", says what could still differ in production.

mod batch;
mod participants;
mod statements;

pub use batch::{Batch, JOBS_MAX, default_jobs, run_batch};

use ledger::model::transfer::TransferState;
use orchestrator::clock::{Clock, ManualClock, SharedClock};
use orchestrator::cluster::partitions::{Change, Membership, Ownership};
use orchestrator::engine::DriveError;
use orchestrator::engine::driver::{Driver, SagaIds};
use orchestrator::engine::registry::Registry;
use orchestrator::store::faults::{self, Stage, StoreFaults};
use orchestrator::store::{Store, StoreError};
use participants::{Ledger, Payment, WALLETS};
use sagas::UnixMillis;
use sagas::machine::{
    Decision, Input, OperatorAction, OperatorInput, ResolvedAs, SagaEvent, SagaStatus,
};
use sagas::protocol::{Command, Kind, Namespace, Outcome, Reply};
use statements::Gate;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The definitions every world runs: the shipped `bench` saga, a saga with
/// a parallel group and a retriable step after its pivot, a saga over the
/// ledger, and the shipped `topup` saga over the ledger and the payment
/// service.
const BENCH: &str = include_str!("../../../sagas/definitions/bench.yaml");
const FORK: &str = include_str!("fork.yaml");
const PAY: &str = include_str!("pay.yaml");
const TOPUP: &str = include_str!("../../../sagas/definitions/topup.yaml");
/// The cards a top-up is paid with: mostly one that pays, some declined.
const CARDS: [&str; 6] =
    ["tok_visa", "tok_visa", "tok_visa", "tok_visa", "tok_decline", "tok_insufficient"];

/// 2026-12-01T00:00:00Z: where simulated time starts.
const T0: UnixMillis = UnixMillis(1_796_083_200_000);
const PARTITIONS: u32 = 4;
/// How long a partition lease lasts unless renewed (simulated time).
const LEASE_TTL: Duration = Duration::from_secs(3);
/// A memory file system for the world's database, where the machine has one.
const SHM: &str = "/dev/shm";
/// The name of a process's directory of world databases, before its id.
const WORLDS_DIR_PREFIX: &str = "skald-sim-";
/// Farthest an instance's clock is from the world's time: a quarter of a
/// lease, so that two instances' clocks are at most half a lease apart, the
/// bound the lease margins are built for.
pub const SKEW_MS_MAX: i64 = 750;
/// Longest a stalled message is delayed (simulated time).
pub const STALL_MS_MAX: u64 = 10_000;
/// How often a client tries a start the store keeps failing.
const START_TRIES: usize = 100;
/// When a reply nobody could take is offered again (simulated time).
const REDELIVERY_MS: u64 = 200;
/// Most reconciler passes once the world has healed (each due charge meets
/// a provider fault one call in seven: twenty passes all failing is
/// unheard of, and would show as a failed seed).
const RECONCILE_PASSES_MAX: usize = 20;
/// Most orchestrator instances in one world.
pub const INSTANCES_MAX: usize = 3;
/// Default for [`Faults::statements`] (chance in a million per step): a
/// default world runs some 40,000 steps of statements before it heals, and
/// about eight statements fail by chance.
pub const STATEMENT_FAULTS_DEFAULT: u32 = 200;
/// Most steps of its statements a process runs between an armed crash and
/// its death.
const CRASH_STEPS_MAX: u64 = 2_000;

/// What a world may do to the engine, and how much.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Chance in a hundred that a message is lost.
    pub drop: u32,
    /// Chance in a hundred that a message is delivered twice.
    pub duplicate: u32,
    /// Longest a message is delayed (ms); deliveries are reordered by it.
    pub delay_ms: u64,
    /// Chance in a hundred that a message stalls: delayed up to
    /// [`STALL_MS_MAX`], past timeouts and retries.
    pub stall: u32,
    /// Crashes of the orchestrator instances and of the participants, at
    /// any step of their statements or after a participant's answer
    /// committed and before its reply left (a restart from the database).
    pub crashes: bool,
    /// Operator actions at random moments.
    pub operators: bool,
    /// Instances freeze (no lease renewals) and wake later, before they
    /// learn what they lost.
    pub freezes: bool,
    /// Instances' clocks jump, forward or back, within [`SKEW_MS_MAX`] of
    /// the world's time.
    pub clock_jumps: bool,
    /// Chance in a hundred that an instance's store operation fails (an
    /// append before or after its commit, a load, the timers' query, a
    /// lease renewal or take).
    pub store: u32,
    /// Chance in a million that a step of an SQL statement (any statement,
    /// `COMMIT` included, of the instances and the participants) fails.
    pub statements: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            drop: 10,
            duplicate: 5,
            delay_ms: 800,
            stall: 3,
            crashes: true,
            operators: true,
            freezes: true,
            clock_jumps: true,
            store: 3,
            statements: STATEMENT_FAULTS_DEFAULT,
        }
    }
}

/// How big a world is.
#[derive(Debug, Clone)]
pub struct Options {
    pub sagas: usize,
    /// Orchestrator instances (1 to [`INSTANCES_MAX`]); `None`: the seed
    /// chooses.
    pub instances: Option<usize>,
    /// Random actions before the world heals.
    pub actions: usize,
    pub faults: Faults,
    /// Keep every line of the trace (else only its hash).
    pub keep_trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sagas: 6,
            instances: None,
            actions: 300,
            faults: Faults::default(),
            keep_trace: false,
        }
    }
}

/// How one seed went.
#[derive(Debug, Clone)]
pub struct SeedRun {
    pub seed: u64,
    /// FNV-1a of the trace: the same seed gives the same hash.
    pub trace_hash: u64,
    /// The trace, when kept.
    pub trace: Vec<String>,
    /// Every broken invariant (empty: the seed passed).
    pub failures: Vec<String>,
    /// How the sagas ended, by status.
    pub ended: BTreeMap<String, usize>,
    /// How many orchestrator instances the world had.
    pub instances: usize,
}

/// A message on the simulated network.
#[derive(Debug, Clone)]
enum Packet {
    /// A command, with the participant its subject names.
    Command(String, Command),
    Reply(String, Reply),
}

/// The model participant: what the SDK keeps, and the effects in force.
#[derive(Debug, Default)]
struct Participant {
    /// Definite answers by command id (a `retry` is not stored).
    decided: HashMap<String, Outcome>,
    /// (saga, step) whose action took effect.
    applied: BTreeSet<(String, String)>,
    undone: BTreeSet<(String, String)>,
    tombstones: BTreeSet<(String, String)>,
    /// The world has healed: every command succeeds.
    calm: bool,
}

/// One orchestrator instance: its own store (connection pool and writer),
/// driver, cache and view of the leases it holds.
struct Instance {
    name: String,
    /// Its clock: the world's time and its own skew.
    clock: Arc<Skewed>,
    store: Store,
    /// Its database connection's statement faults (and its crash).
    gate: Arc<Gate>,
    driver: Driver,
    ownership: Ownership,
    /// Frozen: it renews nothing and does nothing until it wakes.
    frozen: bool,
}

struct World {
    seed: u64,
    url: String,
    /// The number of the next saga id.
    next_id: Arc<AtomicU64>,
    rng: fastrand::Rng,
    clock: Arc<ManualClock>,
    /// The world's own view of the database (the relay's reads, the checks).
    store: Store,
    registry: Arc<Registry>,
    instances: Vec<Instance>,
    /// The instances' store faults.
    flaky: Arc<Flaky>,
    /// The real ledger participant, on its own database.
    ledger: Ledger,
    /// The real payment participant, on its own database, and its provider.
    payment: Payment,
    /// A real participant that dies after its next answer committed,
    /// before the reply leaves.
    dies_after_answer: Option<&'static str>,
    /// How often a statement step fails (chance in a million).
    statement_faults: u32,
    /// How often each command attempt was delivered (as JetStream counts).
    deliveries: HashMap<String, u32>,
    /// In flight: (deliver at, sequence, packet).
    net: Vec<(UnixMillis, u64, Packet)>,
    sent: u64,
    participant: Participant,
    /// Saga id → the key it was started with (the trace names sagas by key).
    keys: HashMap<String, String>,
    started: usize,
    touched: BTreeSet<String>,
    trace: Vec<String>,
    hash: u64,
    keep_trace: bool,
    failures: Vec<String>,
}

/// Run one seed.
///
/// # Errors
/// When the world cannot be set up (the temporary database, the store).
pub async fn run_seed(seed: u64, options: &Options) -> anyhow::Result<SeedRun> {
    let run = run_world(seed, options).await;
    // The world's databases are gone; so is this process's directory for
    // them, unless another job's world is in it.
    let _ = std::fs::remove_dir(worlds_dir(Path::new(SHM)));
    run
}

async fn run_world(seed: u64, options: &Options) -> anyhow::Result<SeedRun> {
    let db = temp_database("sim").await?;
    let clock = Arc::new(ManualClock::at(T0));
    let store = Store::connect(&db.url).await?.with_clock(clock.clone());
    store.ensure_cluster(PARTITIONS).await?;
    let definitions = [BENCH, FORK, PAY, TOPUP]
        .iter()
        .map(|yaml| sagas::definition::load("sim.yaml", yaml))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let registry = Arc::new(Registry::with_store(&store, definitions).await?);
    let mut rng = fastrand::Rng::with_seed(seed);
    let count = options.instances.unwrap_or_else(|| rng.usize(1..=INSTANCES_MAX));
    let count = count.clamp(1, INSTANCES_MAX);
    let mut w = World {
        seed,
        url: db.url.clone(),
        next_id: Arc::new(AtomicU64::new(0)),
        rng,
        clock,
        store,
        registry,
        instances: Vec::with_capacity(count),
        flaky: Arc::new(Flaky::new(seed, options.faults.store)),
        ledger: Ledger::open(seed).await?,
        payment: Payment::open(seed).await?,
        dies_after_answer: None,
        statement_faults: options.faults.statements,
        deliveries: HashMap::new(),
        net: Vec::new(),
        sent: 0,
        participant: Participant::default(),
        keys: HashMap::new(),
        started: 0,
        touched: BTreeSet::new(),
        trace: Vec::new(),
        hash: 0xcbf2_9ce4_8422_2325,
        keep_trace: options.keep_trace,
        failures: Vec::new(),
    };
    for i in 0..count {
        let instance = w.boot(format!("o{i}")).await?;
        w.instances.push(instance);
    }
    w.ledger.real.gate.set_chance(w.statement_faults);
    w.payment.real.gate.set_chance(w.statement_faults);
    for i in 0..count {
        w.round(i).await;
    }
    for _ in 0..options.actions {
        w.act(options).await;
    }
    w.heal(options).await;
    let ended = w.check().await;
    let outcome = SeedRun {
        seed,
        trace_hash: w.hash,
        trace: std::mem::take(&mut w.trace),
        failures: std::mem::take(&mut w.failures),
        ended,
        instances: count,
    };
    w.ledger.real.remove().await;
    w.payment.real.remove().await;
    drop(w);
    db.remove().await;
    Ok(outcome)
}

impl World {
    fn note(&mut self, line: String) {
        let line = format!("{} {line}", self.clock.now().0 - T0.0);
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        if self.keep_trace {
            self.trace.push(line);
        }
    }

    /// An error is expected when it is a fault the store injected or a
    /// statement a gate interrupted (as its message says, through any
    /// wrapping): noted, and `true`; else it is a failure, and `false`.
    fn expect_injected(&mut self, e: &impl std::fmt::Display, what: String) -> bool {
        if faults::injected_stage(e).is_none() && !statements::interrupted(e) {
            self.fail(what);
            return false;
        }
        self.note(format!("{what} [injected]"));
        true
    }

    fn fail(&mut self, what: String) {
        self.note(format!("FAILED {what}"));
        self.failures.push(what);
    }

    /// A saga id or command id, with the saga named by its key.
    fn named(&self, text: &str) -> String {
        let id = text.get(..36).unwrap_or(text);
        match self.keys.get(id) {
            Some(key) => format!("{key}{}", &text[id.len()..]),
            None => text.to_owned(),
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.u32(0..100) < percent
    }

    /// An instance as a process starting: its own store on the world's
    /// database (one connection, through a [`Gate`] of its own), and a
    /// driver (see [`World::driver`]).
    async fn boot(&self, name: String) -> anyhow::Result<Instance> {
        let clock = Arc::new(Skewed { world: Arc::clone(&self.clock), skew_ms: AtomicI64::new(0) });
        let gate = Gate::new(self.seed, &name);
        let store = Store::open(statements::connect(&self.url, &gate).await?)
            .await?
            .with_clock(Arc::clone(&clock) as SharedClock)
            .with_faults(Arc::clone(&self.flaky) as Arc<dyn StoreFaults>);
        gate.set_chance(self.statement_faults);
        Ok(self.driver(name, clock, store, gate))
    }

    /// An instance's driver over `store`, naming sagas from the world's
    /// seed (`<seed>-0000-7000-8000-<n>`, shaped like the UUIDs the engine
    /// makes), with an empty cache, holding nothing until its first
    /// membership round.
    fn driver(&self, name: String, clock: Arc<Skewed>, store: Store, gate: Arc<Gate>) -> Instance {
        let ns = Namespace::new("sim").unwrap_or_else(|_| unreachable!("`sim` is a valid prefix"));
        let next = Arc::clone(&self.next_id);
        let seed = self.seed;
        let ids = SagaIds::from_fn(move || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            format!("{:08x}-0000-7000-8000-{n:012x}", seed & 0xffff_ffff)
        });
        let ownership = Ownership::cluster(&name);
        let driver = Driver::new(store.clone(), Arc::clone(&self.registry), ns, PARTITIONS)
            .with_ownership(ownership.clone())
            .with_saga_ids(ids);
        Instance { name, clock, store, gate, driver, ownership, frozen: false }
    }

    /// An awake instance, chosen by the seed.
    fn awake(&mut self) -> Option<usize> {
        let awake: Vec<usize> =
            (0..self.instances.len()).filter(|&i| !self.instances[i].frozen).collect();
        (!awake.is_empty()).then(|| awake[self.rng.usize(0..awake.len())])
    }

    /// One membership round of instance `i`: heartbeat, renew, hand over,
    /// take; each partition taken is taken over (its in-flight commands
    /// re-sent), as the orchestrator does on `Acquired`.
    async fn round(&mut self, i: usize) {
        let inst = &self.instances[i];
        let membership = Membership {
            store: inst.store.clone(),
            instance: inst.name.clone(),
            partitions: PARTITIONS,
            ownership: inst.ownership.clone(),
            lease_ttl: LEASE_TTL,
            http_addr: None,
            metrics: inst.driver.metrics().clone(),
        };
        let (name, driver) = (inst.name.clone(), inst.driver.clone());
        let (tx, mut rx) = tokio::sync::mpsc::channel(4 * PARTITIONS as usize);
        if let Err(e) = membership.round(&tx).await {
            // The loop tries again next round; what it did before stays done.
            self.expect_injected(&e, format!("membership round of {name}: {e}"));
        }
        drop(tx);
        while let Some(change) = rx.recv().await {
            match change {
                Change::Acquired { partition, epoch } => {
                    self.note(format!("{name} takes p{partition}@{epoch}"));
                    let stop = tokio_util::sync::CancellationToken::new();
                    orchestrator::cluster::takeover::take_over(
                        driver.clone(),
                        partition,
                        epoch,
                        stop,
                    )
                    .await;
                }
                Change::Lost { partition } => self.note(format!("{name} loses p{partition}")),
            }
        }
    }

    async fn act(&mut self, options: &Options) {
        match self.rng.u32(0..100) {
            0..=7 if self.started < options.sagas => self.start().await,
            0..=24 => self.pump(&options.faults).await,
            25..=64 => self.deliver(&options.faults).await,
            65..=86 => {
                let ms = self.rng.u64(0..800);
                self.pass(ms).await;
            }
            87..=89 if options.faults.crashes => self.crash().await,
            90..=93 if options.faults.operators => self.operate().await,
            94..=95 if options.faults.freezes => self.freeze(),
            96..=97 if options.faults.freezes => self.wake(),
            98 if options.faults.clock_jumps => self.jump(),
            _ => self.pump(&options.faults).await,
        }
        self.bury().await;
    }

    /// A client starts a saga through an awake instance, and tries again
    /// (the same key) while the store fails it.
    async fn start(&mut self) {
        let Some(i) = self.awake() else { return };
        let key = format!("s{}", self.started);
        self.started += 1;
        let wallet = format!("w{}", self.rng.u32(0..WALLETS));
        let amount = self.rng.i64(100..700);
        let (saga_type, input) = match self.rng.u32(0..4) {
            0 => ("bench", serde_json::json!({})),
            1 => ("fork", serde_json::json!({ "n": self.rng.u32(0..10) })),
            2 => ("pay", serde_json::json!({ "wallet": wallet, "amount": amount })),
            _ => {
                let card = CARDS[self.rng.usize(0..CARDS.len())];
                let input = serde_json::json!({
                    "wallet_account": wallet,
                    "funding_account": participants::PSP_CLEARING,
                    "amount": amount,
                    "currency": "EUR",
                    "card_token": card,
                });
                ("topup", input)
            }
        };
        for _ in 0..START_TRIES {
            match self.instances[i].driver.start(saga_type, &key, &input).await {
                Ok(started) => {
                    self.keys.insert(started.saga_id().to_owned(), key.clone());
                    return self.note(format!("start {key} {saga_type}"));
                }
                Err(e) => {
                    if !self.expect_injected(&e, format!("start {key}: {e}")) {
                        return;
                    }
                    // The client's instance died: it tries again once it is back.
                    self.bury().await;
                }
            }
        }
        self.fail(format!("start {key}: the store failed it {START_TRIES} times"));
    }

    /// The relay: commands leave the outbox onto the network.
    async fn pump(&mut self, faults: &Faults) {
        let rows = match self.store.outbox_batch(256, None, None).await {
            Ok(rows) => rows,
            Err(e) => return self.fail(format!("outbox read: {e}")),
        };
        if rows.is_empty() {
            return;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        if let Err(e) = self.store.outbox_delete(&ids).await {
            return self.fail(format!("outbox delete: {e}"));
        }
        let mut commands = Vec::new();
        for row in rows.iter().filter(|r| r.subject.contains(".cmd.")) {
            // `<prefix>.cmd.<participant>.<action>`
            let participant = row.subject.split('.').nth(2).unwrap_or_default().to_owned();
            match serde_json::from_str::<Command>(&row.body) {
                Ok(cmd) => commands.push((self.named(&cmd.command_id), participant, cmd)),
                Err(e) => self.fail(format!("an outbox row is no command: {e}")),
            }
        }
        // The outbox's order across sagas follows their partitions (hashed
        // from their ids): the network takes commands in the order of the
        // sagas' keys, so that the world does not depend on how ids hash.
        commands.sort_by(|a, b| (&a.0, a.2.attempt).cmp(&(&b.0, b.2.attempt)));
        for (named, participant, cmd) in commands {
            self.note(format!("send {named}#{}", cmd.attempt));
            self.transmit(Packet::Command(participant, cmd), faults);
        }
    }

    /// Put a message on the network: maybe lost, maybe twice, delayed.
    fn transmit(&mut self, packet: Packet, faults: &Faults) {
        if self.chance(faults.drop) {
            self.note("lost".into());
            return;
        }
        let copies = if self.chance(faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            // A stalled copy comes much later (as JetStream redelivers a
            // message whose consumer died holding it).
            let delay_ms = if self.chance(faults.stall) { STALL_MS_MAX } else { faults.delay_ms };
            let at = self.clock.now().plus_ms(self.rng.u64(0..=delay_ms));
            self.sent += 1;
            self.net.push((at, self.sent, packet.clone()));
        }
    }

    /// One message arrives: the earliest due, or (reordered) any due one.
    async fn deliver(&mut self, faults: &Faults) {
        let now = self.clock.now();
        let due: Vec<usize> = (0..self.net.len()).filter(|&i| self.net[i].0 <= now).collect();
        if due.is_empty() {
            return;
        }
        let pick = due[self.rng.usize(0..due.len())];
        let (_, _, packet) = self.net.remove(pick);
        match packet {
            Packet::Command(participant, cmd) => {
                let real = match participant.as_str() {
                    ledger::handlers::PARTICIPANT => Some(&self.ledger.real),
                    payment::handlers::PARTICIPANT => Some(&self.payment.real),
                    _ => None,
                };
                let outcome = if let Some(real) = real {
                    // The real handlers, through the SDK's inbox and tombstones.
                    let delivered = self.deliveries.entry(msg_id(&cmd)).or_insert(0);
                    *delivered += 1;
                    let interrupts = real.gate.interrupts();
                    let answered = real.answer(&cmd, *delivered).await;
                    let died = real.gate.dead();
                    let interrupted = real.gate.interrupts() > interrupts;
                    let dies_now = self.dies_after_answer == Some(participant.as_str());
                    match answered {
                        Ok(outcome) if !died && !dies_now => outcome,
                        Err(e) if !died && !interrupted => {
                            return self.fail(format!("{participant}: {e}"));
                        }
                        answered => {
                            // No reply leaves: the command is not acknowledged,
                            // and comes again.
                            let why = match answered {
                                _ if died => "died handling it",
                                Ok(_) => "died after its answer committed",
                                Err(_) => "failed it: a statement [injected]",
                            };
                            let what = format!("{}#{}", self.named(&cmd.command_id), cmd.attempt);
                            self.note(format!("{participant} {why}: {what}"));
                            if dies_now && !died {
                                self.dies_after_answer = None;
                                self.restart_participant(&participant).await;
                            }
                            self.bury().await;
                            return self.requeue(Packet::Command(participant, cmd));
                        }
                    }
                } else {
                    self.participant.handle(&cmd, &mut self.rng)
                };
                let saga = cmd.saga_id.clone();
                let what = format!(
                    "handle {}#{} -> {}",
                    self.named(&cmd.command_id),
                    cmd.attempt,
                    outcome_name(&outcome)
                );
                self.note(what);
                let reply = Reply { command_id: cmd.command_id, attempt: cmd.attempt, outcome };
                self.transmit(Packet::Reply(saga, reply), faults);
            }
            Packet::Reply(saga_id, reply) => {
                // The partition's consumer is read by whoever holds it, or
                // thinks it still does; nobody: the reply waits in the stream.
                let partition = partition_of(&saga_id);
                let readers: Vec<usize> = (0..self.instances.len())
                    .filter(|&i| {
                        let inst = &self.instances[i];
                        !inst.frozen && inst.ownership.epoch(partition).is_some()
                    })
                    .collect();
                let what = format!("reply {}#{}", self.named(&reply.command_id), reply.attempt);
                if readers.is_empty() {
                    self.note(format!("{what} waits: nobody reads p{partition}"));
                    return self.requeue(Packet::Reply(saga_id, reply));
                }
                let i = readers[self.rng.usize(0..readers.len())];
                self.note(format!("{what} to {}", self.instances[i].name));
                let input = Input::Reply(reply.clone());
                let result = self.instances[i].driver.handle(&saga_id, &input).await;
                // Not acknowledged: redelivered, perhaps already applied.
                if self.owner_input(i, &saga_id, result, "a genuine reply").await {
                    self.requeue(Packet::Reply(saga_id, reply));
                }
            }
        }
    }

    /// A message that could not be taken goes back on the network, due a
    /// little later (JetStream redelivers what was not acknowledged).
    fn requeue(&mut self, packet: Packet) {
        self.sent += 1;
        self.net.push((self.clock.now().plus_ms(REDELIVERY_MS), self.sent, packet));
    }

    /// What came of an input only the partition's holder may apply (a
    /// reply or a deadline, `what`) on instance `i`: a write is checked
    /// against the leases, also one that committed before an injected
    /// error. `true` when it was not applied and must come again: the
    /// instance was deposed, or the store failed (noted); any other error
    /// is a failure.
    async fn owner_input(
        &mut self,
        i: usize,
        saga_id: &str,
        result: Result<Decision, DriveError>,
        what: &str,
    ) -> bool {
        let e = match result {
            Ok(d) => {
                if !d.events.is_empty() {
                    self.check_writer(i, saga_id).await;
                }
                return false;
            }
            Err(e) => e,
        };
        if deposed(&e) {
            self.note(format!("{} refused {what}: {e}", self.instances[i].name));
            return true;
        }
        if faults::injected_stage(&e) == Some(Stage::AfterCommit) {
            self.check_writer(i, saga_id).await;
        }
        self.expect_injected(&e, format!("{what} was not applied: {e}"))
    }

    /// A reply or deadline that wrote to a saga's history was written by
    /// the partition's holder at its epoch (DESIGN.md: one fenced writer).
    async fn check_writer(&mut self, i: usize, saga_id: &str) {
        let partition = partition_of(saga_id);
        let leases = match self.store.leases().await {
            Ok(leases) => leases,
            Err(e) => return self.fail(format!("leases: {e}")),
        };
        let inst = &self.instances[i];
        let mine = inst.ownership.epoch(partition);
        let lease = leases.iter().find(|l| l.partition == partition);
        if lease.is_some_and(|l| l.owner == inst.name && Some(l.epoch) == mine) {
            return;
        }
        let (owner, epoch) = lease.map_or(("?", -1), |l| (l.owner.as_str(), l.epoch));
        let what = format!(
            "{} wrote {} in p{partition} at epoch {mine:?}, but {owner} holds it at epoch {epoch}",
            inst.name,
            self.named(saga_id),
        );
        self.fail(what);
    }

    /// Time passes; each awake instance renews its leases (a membership
    /// round) and applies every deadline of its partitions that came due,
    /// in an order the seed chooses.
    async fn pass(&mut self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        self.note(format!("time +{ms}"));
        if self.rng.u32(0..4) == 0 {
            self.reconcile().await;
        }
        for i in 0..self.instances.len() {
            if self.instances[i].frozen {
                continue;
            }
            if self.rng.bool() {
                self.round(i).await;
                self.timers(i).await;
            } else {
                self.timers(i).await;
                self.round(i).await;
            }
        }
    }

    /// The payment service's reconciler: one pass; how many due charges it
    /// left for a later pass.
    async fn reconcile(&mut self) -> usize {
        let interrupts = self.payment.real.gate.interrupts();
        let passed = self.payment.reconcile().await;
        // An error while its gate interrupted a statement is the gate's doing
        // (the statement, or a rollback that found SQLite had rolled back),
        // as for a command's answer.
        let injected = self.payment.real.gate.interrupts() > interrupts;
        match passed {
            Ok((0, 0)) => 0,
            Ok((settled, left)) => {
                self.note(format!("reconciled {settled} charges, {left} left"));
                left
            }
            Err(e) if injected => {
                self.note(format!("{e} [injected]"));
                0
            }
            Err(e) => {
                self.fail(e);
                0
            }
        }
    }

    /// Instance `i`'s timers: the due sagas of the partitions it holds.
    async fn timers(&mut self, i: usize) {
        let filter = self.instances[i].ownership.filter();
        let now = self.instances[i].clock.now_db();
        let mut due = match self.instances[i].store.due(now, 256, filter.as_deref()).await {
            Ok(due) => due,
            Err(e) => {
                self.expect_injected(&e, format!("due timers: {e}"));
                return;
            }
        };
        due.sort_by_key(|id| self.named(id));
        for saga_id in due {
            match self.instances[i].driver.handle(&saga_id, &Input::Timeout).await {
                Err(DriveError::Transition(sagas::machine::TransitionError::NotDue { .. })) => {}
                result => {
                    // Not applied: still due, the next look tries again.
                    let what = format!("the deadline of {}", self.named(&saga_id));
                    self.owner_input(i, &saga_id, result, &what).await;
                }
            }
        }
    }

    /// A process dies: an orchestrator instance at once (between two steps
    /// of the world) or at a step of its statements still to come, or a
    /// participant at a step of its statements still to come or once its
    /// next answer committed, before the reply leaves. [`World::bury`]
    /// starts it again.
    async fn crash(&mut self) {
        let steps = self.rng.u64(0..=CRASH_STEPS_MAX);
        match self.rng.u32(0..4) {
            0 => {
                let i = self.rng.usize(0..self.instances.len());
                self.restart_instance(i, "crash").await;
            }
            1 => {
                let i = self.rng.usize(0..self.instances.len());
                self.instances[i].gate.arm_crash(steps);
                let what = format!("{} dies within {steps} steps", self.instances[i].name);
                self.note(what);
            }
            roll => {
                let (name, gate) = if self.rng.bool() {
                    (ledger::handlers::PARTICIPANT, &self.ledger.real.gate)
                } else {
                    (payment::handlers::PARTICIPANT, &self.payment.real.gate)
                };
                if roll == 2 {
                    gate.arm_crash(steps);
                    self.note(format!("{name} dies within {steps} steps"));
                } else {
                    self.dies_after_answer = Some(name);
                    self.note(format!("{name} dies after its next answer"));
                }
            }
        }
    }

    /// Instance `i` starts again under its name: its cache and the leases
    /// it knew of are gone; its first round takes back what hashes to it (a
    /// new epoch) and re-sends those partitions' in-flight commands. (Its
    /// store is kept, its gate started again: between two steps of the
    /// world it holds nothing but its connection, which is closed if a
    /// statement failed on it, and opening a pool per crash would only slow
    /// the world down.)
    async fn restart_instance(&mut self, i: usize, why: &str) {
        let inst = &self.instances[i];
        let (name, clock, store, gate) =
            (inst.name.clone(), inst.clock.clone(), inst.store.clone(), inst.gate.clone());
        self.note(format!("{why} {name}"));
        gate.restart();
        self.instances[i] = self.driver(name, clock, store, gate);
        self.round(i).await;
    }

    /// Every process whose crash came starts again from its database.
    async fn bury(&mut self) {
        for i in 0..self.instances.len() {
            if self.instances[i].gate.dead() {
                self.restart_instance(i, "restart dead").await;
            }
        }
        if self.ledger.real.gate.dead() {
            self.restart_participant(ledger::handlers::PARTICIPANT).await;
        }
        if self.payment.real.gate.dead() {
            self.restart_participant(payment::handlers::PARTICIPANT).await;
        }
    }

    /// Participant `name` starts again on its database.
    async fn restart_participant(&mut self, name: &str) {
        self.note(format!("restart {name}"));
        let restarted = if name == ledger::handlers::PARTICIPANT {
            self.ledger.restart().await
        } else {
            self.payment.restart().await
        };
        if let Err(e) = restarted {
            self.fail(format!("{name} cannot start again: {e}"));
        }
    }

    /// An instance's clock jumps to another skew from the world's time,
    /// forward or back.
    fn jump(&mut self) {
        let i = self.rng.usize(0..self.instances.len());
        let skew = self.rng.i64(-SKEW_MS_MAX..=SKEW_MS_MAX);
        self.instances[i].clock.skew_ms.store(skew, Ordering::Relaxed);
        let what = format!("clock of {} at {skew:+} ms", self.instances[i].name);
        self.note(what);
    }

    /// An awake instance stops: no rounds, no work, its leases run out.
    fn freeze(&mut self) {
        if let Some(i) = self.awake() {
            self.instances[i].frozen = true;
            let what = format!("freeze {}", self.instances[i].name);
            self.note(what);
        }
    }

    /// A frozen instance goes on where it stopped, still believing it holds
    /// what it held, until its next round.
    fn wake(&mut self) {
        let frozen: Vec<usize> =
            (0..self.instances.len()).filter(|&i| self.instances[i].frozen).collect();
        if frozen.is_empty() {
            return;
        }
        let i = frozen[self.rng.usize(0..frozen.len())];
        self.instances[i].frozen = false;
        let what = format!("wake {}", self.instances[i].name);
        self.note(what);
    }

    async fn operate(&mut self) {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        if ids.is_empty() {
            return;
        }
        ids.sort_by_key(|id| self.keys.get(*id));
        let saga_id = ids[self.rng.usize(0..ids.len())].clone();
        let action = match self.rng.u32(0..5) {
            0 => OperatorAction::RetryNow,
            1 => OperatorAction::Skip,
            2 => OperatorAction::Abort,
            3 => OperatorAction::Resume,
            _ => OperatorAction::Resolve(ResolvedAs::Compensated),
        };
        let input = Input::Operator(OperatorInput {
            action,
            by: "sim".into(),
            reason: "simulated operator".into(),
        });
        let Some(i) = self.awake() else { return };
        // Skipping a step or declaring a saga resolved overrides what the
        // participants did: such a saga is no longer held to the effects
        // and undo-order checks. Retry, abort and resume are.
        let overrides = matches!(action, OperatorAction::Skip | OperatorAction::Resolve(_));
        match self.instances[i].driver.handle(&saga_id, &input).await {
            Ok(d) if !d.events.is_empty() => {
                if overrides {
                    self.touched.insert(saga_id.clone());
                }
                self.note(format!("operator {} {}", action.as_str(), self.named(&saga_id)));
            }
            Ok(_) | Err(DriveError::Transition(_)) => {}
            Err(e) => {
                // An operator's repair may have been written before the error
                // (after its commit).
                if overrides {
                    self.touched.insert(saga_id.clone());
                }
                self.expect_injected(&e, format!("operator {}: {e}", action.as_str()));
            }
        }
    }

    /// Faults stop; messages flow and time passes until every saga ended.
    async fn heal(&mut self, options: &Options) {
        self.note("heal".into());
        let calm = Faults {
            drop: 0,
            duplicate: 0,
            delay_ms: 0,
            stall: 0,
            crashes: false,
            operators: false,
            freezes: false,
            clock_jumps: false,
            store: 0,
            statements: 0,
        };
        self.participant.calm = true;
        self.flaky.percent.store(0, Ordering::Relaxed);
        self.bury().await;
        self.dies_after_answer = None;
        let gates = self.instances.iter().map(|i| &i.gate);
        let mut fired = 0;
        for gate in gates.chain([&self.ledger.real.gate, &self.payment.real.gate]) {
            gate.restart();
            gate.set_chance(0);
            fired += gate.fired();
        }
        self.note(format!("{fired} statements failed by chance"));
        for inst in &mut self.instances {
            inst.frozen = false;
            inst.clock.skew_ms.store(0, Ordering::Relaxed);
        }
        while self.started < options.sagas {
            self.start().await;
        }
        for _ in 0..2_000 {
            self.pump(&calm).await;
            while self.net.iter().any(|(at, ..)| *at <= self.clock.now()) {
                self.deliver(&calm).await;
                self.pump(&calm).await;
            }
            if self.all_ended().await && self.net.is_empty() {
                // The payment service's reconciler settles what it finds;
                // a charge the provider gave no definite answer about is
                // taken again next pass (its faults go on: a pass that
                // settles nothing is not a pass with nothing to do).
                for _ in 0..RECONCILE_PASSES_MAX {
                    if self.reconcile().await == 0 {
                        break;
                    }
                }
                return;
            }
            self.pass(1_000).await;
        }
    }

    async fn all_ended(&self) -> bool {
        for id in self.keys.keys() {
            match self.store.load(id).await {
                Ok(Some(l)) if ended(&l.row.status) => {}
                _ => return false,
            }
        }
        true
    }

    /// Check every saga against the invariants; how they ended, by status.
    async fn check(&mut self) -> BTreeMap<String, usize> {
        let mut by_status = BTreeMap::new();
        // The money invariant: at the provider, charged less refunded is
        // what the completed top-ups charged, besides what sagas an
        // operator settled by hand (or that are parked) hold.
        let (mut completed_topups, mut set_aside) = (0_i64, 0_i64);
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort_by_key(|id| self.keys.get(id).cloned());
        for id in ids {
            let key = self.named(&id);
            let (row, state) = match self.instances[0].driver.state(&id).await {
                Ok(found) => found,
                Err(e) => {
                    self.fail(format!("{key}: cannot be read: {e}"));
                    continue;
                }
            };
            *by_status.entry(row.status.clone()).or_insert(0) += 1;
            let cause = state.cause.as_ref().and_then(|c| serde_json::to_value(c).ok());
            let cause = cause
                .map(|c| format!(" {}", c["cause"].as_str().unwrap_or("?")))
                .unwrap_or_default();
            self.note(format!("ended {key} {}{cause}", row.status));
            if !ended(&row.status) {
                self.fail(format!("{key} never ended: {}", row.status));
            }
            if row.status != state.status.as_str() {
                self.fail(format!("{key}: row says {}, history says {}", row.status, state.status));
            }
            if row.status == "parked" && row.park_reason.is_none() {
                self.fail(format!("{key}: parked without a reason"));
            }
            let events = match self.store.load(&id).await {
                Ok(Some(loaded)) => loaded.events,
                Ok(None) => Vec::new(), // reported above: it cannot be read
                Err(e) => {
                    self.fail(format!("{key}: history cannot be read: {e}"));
                    continue;
                }
            };
            if let Some(end) = events.iter().position(SagaEvent::is_terminal)
                && end + 1 != events.len()
            {
                self.fail(format!("{key}: {} events after its end", events.len() - end - 1));
            }
            let topup = state.definition.name == "topup";
            let charged = self.payment.charged(&id);
            if charged.charges > 1 {
                self.fail(format!("{key}: charged {} times", charged.charges));
            }
            if self.touched.contains(&id)
                || !matches!(
                    state.status,
                    SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed
                )
            {
                set_aside += charged.net;
                continue;
            }
            if topup && state.status == SagaStatus::Completed {
                completed_topups += state.input["amount"].as_i64().unwrap_or(0);
            }
            for p in undo_order(&state.definition, &events) {
                self.fail(format!("{key}: {p}"));
            }
            // `{{saga.id}}-pay`, `{{saga.id}}-topup`: the saga's transfer.
            let transfer_id = format!("{id}-{}", state.definition.name);
            let transfer = match self.ledger.transfer(&transfer_id).await {
                Ok(transfer) => transfer,
                Err(e) => {
                    self.fail(format!("{key}: the ledger cannot be read: {e}"));
                    continue;
                }
            };
            let in_force = |def: &sagas::StepDef| {
                if def.participant == ledger::handlers::PARTICIPANT {
                    // The ledger's steps are in force as its books say.
                    return match def.action.as_str() {
                        "post" => transfer == Some(TransferState::Posted),
                        _ => {
                            matches!(transfer, Some(TransferState::Pending | TransferState::Posted))
                        }
                    };
                }
                if def.participant == payment::handlers::PARTICIPANT {
                    // The charge is in force as the provider's books say.
                    return charged.net > 0;
                }
                let k = (id.clone(), def.name.clone());
                self.participant.applied.contains(&k) && !self.participant.undone.contains(&k)
            };
            let steps = &state.definition.steps;
            let problems: Vec<String> = match state.status {
                SagaStatus::Completed => steps
                    .iter()
                    .zip(&state.steps)
                    .filter(|(_, s)| s.forward != sagas::machine::Forward::SkippedByCondition)
                    .filter(|(d, _)| !in_force(d))
                    .map(|(d, _)| format!("{key} completed but `{}` is not in force", d.name))
                    .collect(),
                SagaStatus::Compensated | SagaStatus::Failed => steps
                    .iter()
                    .filter(|d| in_force(d))
                    .map(|d| format!("{key} {} but `{}` is still in force", state.status, d.name))
                    .collect(),
                _ => Vec::new(),
            };
            for p in problems {
                self.fail(p);
            }
        }
        match self.ledger.verify().await {
            Ok(()) => self.note("ledger sound".into()),
            Err(problems) => self.fail(format!("ledger verify: {problems}")),
        }
        let net = self.payment.net_total();
        if net - set_aside != completed_topups {
            self.fail(format!(
                "the provider holds {net} charged less refunded, {set_aside} of it for sagas \
                 settled by hand or parked, but the completed top-ups charged {completed_topups}"
            ));
        }
        self.note(format!("provider holds {net}"));
        by_status
    }
}

/// Compensation runs newest outcome first: when a step's first undo is
/// sent, no other step still to be undone got its outcome later (by the
/// history's order, not the machine's bookkeeping).
fn undo_order(definition: &Arc<sagas::Definition>, events: &[SagaEvent]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut state = sagas::SagaState::new(Arc::clone(definition));
    let mut outcome_at: Vec<Option<usize>> = vec![None; definition.steps.len()];
    for (pos, e) in events.iter().enumerate() {
        let index = |step: &str| definition.step_index(step);
        match e {
            SagaEvent::CommandSent { step, kind: Kind::Undo, attempt: 1, .. } => {
                if let Some(i) = index(step) {
                    for (j, other) in state.steps.iter().enumerate() {
                        if j != i
                            && other.needs_undo()
                            && definition.steps[j].compensation.is_some()
                            && outcome_at[j] > outcome_at[i]
                        {
                            problems.push(format!(
                                "`{step}` undone before `{}`, whose outcome came later",
                                definition.steps[j].name
                            ));
                        }
                    }
                }
            }
            SagaEvent::StepSucceeded { step, .. }
            | SagaEvent::StepFailed { step, .. }
            | SagaEvent::StepOutcomeUnknown { step, .. }
            | SagaEvent::StepAbandoned { step, .. }
            | SagaEvent::StepSkippedByCondition { step, .. }
            | SagaEvent::StepSkipped { step, kind: Kind::Do, .. } => {
                if let Some(i) = index(step) {
                    outcome_at[i] = outcome_at[i].or(Some(pos));
                }
            }
            SagaEvent::SagaResumed { step, kind: Kind::Do, .. } => {
                if let Some(i) = index(step) {
                    outcome_at[i] = None;
                }
            }
            _ => {}
        }
        state.apply(e);
    }
    problems
}

/// The instance no longer holds the saga's partition (or never did): the
/// input is left for the holder, as the intake leaves a reply unacknowledged.
fn deposed(e: &DriveError) -> bool {
    matches!(e, DriveError::NotOwner { .. } | DriveError::Store(StoreError::Fenced { .. }))
}

fn ended(status: &str) -> bool {
    SagaStatus::parse(status).is_some_and(SagaStatus::is_end)
}

fn outcome_name(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok { .. } => "ok".into(),
        Outcome::Failed { code, .. } => format!("failed {code}"),
        Outcome::Retry { code, .. } => format!("retry {code}"),
    }
}

impl Participant {
    /// Answer a command as the SDK would: a stored answer again for a
    /// command id it answered before, a refusal of a `do` whose undo came
    /// first; otherwise the seeded dice decide (a `retry` is not stored).
    fn handle(&mut self, cmd: &Command, rng: &mut fastrand::Rng) -> Outcome {
        if let Some(o) = self.decided.get(&cmd.command_id) {
            return o.clone();
        }
        let key = (cmd.saga_id.clone(), cmd.step.clone());
        let roll = if self.calm { 0 } else { rng.u32(0..100) };
        // Steps after the pivot are retriable: they never fail for good.
        let retriable = cmd.step == "e";
        let outcome = match cmd.kind {
            Kind::Do if self.tombstones.contains(&key) => Outcome::Failed {
                code: "tombstone".into(),
                message: "undone before it was done".into(),
            },
            Kind::Do if roll < 75 => {
                self.applied.insert(key);
                Outcome::Ok { output: serde_json::json!({ "id": cmd.command_id }) }
            }
            Kind::Do if roll < 85 && !retriable => {
                Outcome::Failed { code: "refused".into(), message: "no".into() }
            }
            Kind::Undo if roll < 90 => {
                self.tombstones.insert(key.clone());
                if self.applied.contains(&key) {
                    self.undone.insert(key);
                }
                Outcome::Ok { output: serde_json::json!({}) }
            }
            _ => Outcome::retry("busy", "try again"),
        };
        if !matches!(outcome, Outcome::Retry { .. }) {
            self.decided.insert(cmd.command_id.clone(), outcome.clone());
        }
        outcome
    }
}

/// The partition a saga belongs to.
fn partition_of(saga_id: &str) -> i32 {
    i32::try_from(sagas::hash::partition_of(saga_id, PARTITIONS)).unwrap_or(0)
}

/// The instances' store faults: each operation fails by the seed's dice
/// (its own generator, drawn in the order the world calls the store).
#[derive(Debug)]
struct Flaky {
    rng: std::sync::Mutex<fastrand::Rng>,
    /// Chance in a hundred; 0 once the world heals.
    percent: AtomicU64,
}

impl Flaky {
    fn new(seed: u64, percent: u32) -> Self {
        Self {
            rng: std::sync::Mutex::new(fastrand::Rng::with_seed(seed ^ 0x5354_4f52_4520_4641)),
            percent: AtomicU64::new(u64::from(percent)),
        }
    }
}

impl StoreFaults for Flaky {
    fn fail(&self, _op: &'static str, _stage: Stage) -> bool {
        let percent = self.percent.load(Ordering::Relaxed);
        if percent == 0 {
            return false;
        }
        let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rng.u64(0..100) < percent
    }
}

/// An instance's clock: the world's time and a skew of its own, which
/// jumps (never below the Unix epoch).
#[derive(Debug)]
struct Skewed {
    world: Arc<ManualClock>,
    skew_ms: AtomicI64,
}

impl Clock for Skewed {
    fn now(&self) -> UnixMillis {
        let world = self.world.now().0;
        let skew = self.skew_ms.load(Ordering::Relaxed);
        UnixMillis(world.saturating_add_signed(skew))
    }
}

/// The id JetStream dedupes a command attempt by.
fn msg_id(cmd: &Command) -> String {
    sagas::protocol::msg_id(&cmd.command_id, cmd.attempt)
}

/// A new database for the world: on the memory file system when there is
/// one (it needs no durability: a crash here loses a process's memory, not
/// the machine's), else in the temporary directory.
async fn temp_database(label: &str) -> anyhow::Result<skald_testkit::TempDatabase> {
    let shm = Path::new(SHM);
    Ok(if shm.is_dir() {
        skald_testkit::TempDatabase::sqlite_under(&worlds_dir(shm), label)?
    } else {
        skald_testkit::TempDatabase::new(skald_testkit::Backend::Sqlite).await?
    })
}

/// The directory of this process's world databases under `shm`:
/// `skald-sim-<process id>`, so that what a killed run left is known by its
/// process being gone.
fn worlds_dir(shm: &Path) -> PathBuf {
    shm.join(format!("{WORLDS_DIR_PREFIX}{}", std::process::id()))
}

/// Remove the world databases that runs killed mid-seed left on the memory
/// file system (the directories of processes that no longer exist); how
/// many were removed.
pub fn sweep_killed_runs() -> usize {
    let Ok(entries) = std::fs::read_dir(SHM) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(WORLDS_DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
