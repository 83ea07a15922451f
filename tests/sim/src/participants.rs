//! The world's real participants — the ledger's and the payment service's
//! own handlers behind the SDK's inbox and tombstones
//! ([`skald_participant::Local`]), each on a database of its own — and the
//! payment provider they call: psp-sim's books in process, behind the
//! world's faults.

use crate::statements::{self, Gate};
use crate::{T0, temp_database};
use ledger::model::transfer::TransferState;
use payment::api::ErrorBody;
use payment::outcome::TransportFailure;
use payment::provider::{InProcess, Provider};
use sagas::protocol::{Command, Outcome};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Wallets in the world's ledger, and what each holds at the start (cents).
pub const WALLETS: u32 = 3;
pub const OPENING: i64 = 1_000;
/// The account top-ups are debited from (the provider's clearing account,
/// as the shipped `topup` saga allows it).
pub const PSP_CLEARING: &str = "psp_clearing";
/// The provider's faults (see [`Psp`]), each a chance in a hundred per
/// call: it never reaches the provider, a 500 before it acts, a timeout
/// before it acts, a timeout after it acted (the answer lost).
pub const PROVIDER_FAULTS: [u64; 4] = [3, 3, 3, 6];
/// Most charges the reconciler settles per pass.
const RECONCILE_BATCH: u64 = 64;

/// One of the world's real participants: its handlers behind the SDK, on a
/// database whose statements pass through its [`Gate`].
pub struct Real {
    local: skald_participant::Local,
    pub gate: Arc<Gate>,
    /// Taken when the world ends, to be removed.
    db: Option<skald_testkit::TempDatabase>,
    url: String,
}

impl Real {
    /// Answer `cmd`, delivered for the `delivered`-th time, as the SDK does.
    pub async fn answer(&self, cmd: &Command, delivered: u32) -> Result<Outcome, String> {
        match self.local.answer(cmd, delivered).await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(format!("chose not to answer {}", cmd.command_id)),
            Err(e) => Err(format!("its database failed: {e}")),
        }
    }

    /// The process starting again: `open` on a new pool on the database,
    /// with the gate started again; nothing fails while it opens (a process
    /// that cannot start tries again until it can).
    async fn restart<T>(
        &self,
        open: impl AsyncFnOnce(sea_orm::DatabaseConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.gate.restart();
        let chance = self.gate.chance();
        self.gate.set_chance(0);
        let opened = match statements::connect(&self.url, &self.gate).await {
            Ok(conn) => open(conn).await,
            Err(e) => Err(e),
        };
        self.gate.set_chance(chance);
        opened
    }

    /// Remove the database.
    pub async fn remove(&mut self) {
        if let Some(db) = self.db.take() {
            db.remove().await;
        }
    }
}

/// The world's ledger: the real `ledger` handlers, with a clearing account,
/// the provider's clearing account, and [`WALLETS`] wallets that cannot be
/// overdrawn, [`OPENING`] each.
pub struct Ledger {
    store: ledger::store::Store,
    pub real: Real,
}

impl Ledger {
    pub async fn open(seed: u64) -> anyhow::Result<Self> {
        let db = temp_database("sim-ledger").await?;
        let gate = Gate::new(seed, ledger::handlers::PARTICIPANT);
        let store = ledger::store::Store::open(statements::connect(&db.url, &gate).await?).await?;
        let local = ledger::handlers::participant().local(store.db().clone()).await?;
        let account = |id: &str, wallet: bool| ledger::model::account::NewAccount {
            id: id.to_owned(),
            currency: "EUR".to_owned(),
            flags: ledger::model::account::AccountFlags {
                debits_must_not_exceed_credits: wallet,
                ..Default::default()
            },
        };
        let now = i64::try_from(T0.0).unwrap_or(0);
        for id in ["clearing", "funding", PSP_CLEARING] {
            store.create_account(&account(id, false), now).await?;
        }
        for i in 0..WALLETS {
            let wallet = format!("w{i}");
            store.create_account(&account(&wallet, true), now).await?;
            let opening = ledger::model::transfer::NewTransfer {
                id: format!("opening-{i}"),
                debit_account_id: "funding".to_owned(),
                credit_account_id: wallet,
                amount: OPENING,
                currency: "EUR".to_owned(),
                pending: false,
            };
            store.create_transfer(&opening, now).await?;
        }
        let url = db.url.clone();
        Ok(Self { store, real: Real { local, gate, db: Some(db), url } })
    }

    /// The ledger process starts again on its database (its gate's crash
    /// came): a new pool, a new participant.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let (store, local) = self
            .real
            .restart(async |conn| {
                let store = ledger::store::Store::open(conn).await?;
                let local = ledger::handlers::participant().local(store.db().clone()).await?;
                Ok((store, local))
            })
            .await?;
        (self.store, self.real.local) = (store, local);
        Ok(())
    }

    /// The state of transfer `id`, if it exists.
    pub async fn transfer(&self, id: &str) -> Result<Option<TransferState>, ledger::ops::OpError> {
        Ok(ledger::ops::transfer(self.store.db(), id).await?.map(|t| t.state))
    }

    /// `ledger verify`: the projections match the log and balance.
    pub async fn verify(&self) -> Result<(), String> {
        let options = ledger::verify::VerifyOptions { pending_older_than_ms: u64::MAX, now_ms: 0 };
        match ledger::verify::verify(&self.store, options).await {
            Ok(report) if report.sound => Ok(()),
            Ok(report) => Err(format!("{:?}", report.problems)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The world's payment service: the real `payment` handlers and its
/// reconciler, calling [`Psp`].
pub struct Payment {
    payments: Arc<payment::handlers::Payments>,
    psp: Arc<Psp>,
    pub real: Real,
}

/// What the provider holds for one saga (charges under its id as reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// Charges made under the reference.
    pub charges: usize,
    /// Charged less refunded (minor units).
    pub net: i64,
}

impl Payment {
    pub async fn open(seed: u64) -> anyhow::Result<Self> {
        let db = temp_database("sim-payment").await?;
        let gate = Gate::new(seed, payment::handlers::PARTICIPANT);
        let conn = statements::connect(&db.url, &gate).await?;
        let psp = Arc::new(Psp::new(seed));
        let (payments, local) = Self::serve(conn, &psp).await?;
        let url = db.url.clone();
        Ok(Self { payments, psp, real: Real { local, gate, db: Some(db), url } })
    }

    /// The payment service on `conn`, calling `psp`: its handlers and
    /// reconciler, and its participant.
    async fn serve(
        conn: sea_orm::DatabaseConnection,
        psp: &Arc<Psp>,
    ) -> anyhow::Result<(Arc<payment::handlers::Payments>, skald_participant::Local)> {
        skald_participant::migrate::migrate::<payment::store::migration::PaymentSchema>(&conn)
            .await?;
        let payments = Arc::new(payment::handlers::Payments {
            db: conn.clone(),
            provider: Provider::in_process(Arc::clone(psp) as Arc<dyn InProcess>),
        });
        let local = payment::handlers::participant(&payments).local(conn).await?;
        Ok((payments, local))
    }

    /// The payment process starts again on its database (its gate's crash
    /// came): a new pool, a new participant and reconciler; the provider
    /// keeps what it was told.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let psp = &self.psp;
        let (payments, local) =
            self.real.restart(async |conn| Self::serve(conn, psp).await).await?;
        (self.payments, self.real.local) = (payments, local);
        Ok(())
    }

    /// One pass of the reconciler: how many charges it settled, and how many
    /// it left for a later pass (the provider gave no definite answer). The
    /// world's calls never overlap, so no call is in flight: every due charge
    /// is taken, however recent.
    pub async fn reconcile(&self) -> Result<(usize, usize), String> {
        let stop = CancellationToken::new();
        match payment::reconcile::pass_before(&self.payments, i64::MAX, RECONCILE_BATCH, &stop)
            .await
        {
            Ok(r) => Ok((r.refunded + r.not_charged + r.stuck, r.left_pending)),
            Err(e) => Err(format!("the reconciler failed: {e}")),
        }
    }

    /// What the provider holds under `reference`.
    pub fn charged(&self, reference: &str) -> Charged {
        let list = self.psp.sim.charges(Some(reference));
        let net = list.charges.iter().map(|c| c.amount - c.amount_refunded).sum();
        Charged { charges: list.count, net }
    }

    /// Everything charged less everything refunded, at the provider (all
    /// in EUR).
    pub fn net_total(&self) -> i64 {
        let totals = self.psp.sim.charges(None).totals;
        totals.values().map(|t| t.charged - t.refunded).sum()
    }
}

/// The world's payment provider: psp-sim's books (its key store and rules)
/// in process, behind four faults ([`PROVIDER_FAULTS`]): the call never
/// reaches it (nothing sent), it answers 500 before it acts, the call times
/// out before it acts, or it acts and the answer is lost (a timeout). Whether a call fails is drawn from the seed, its key
/// and how many times the key was used, so the order calls come in (the
/// reconciler's order follows wall-clock timestamps) does not change what
/// each one meets. The faults go on while the world heals: the provider
/// is not the engine's to heal, and each step's retry budget bounds them.
#[derive(Debug)]
pub struct Psp {
    sim: payment::sim::Sim,
    seed: u64,
    calls: Mutex<HashMap<String, u32>>,
}

impl Psp {
    fn new(seed: u64) -> Self {
        Self {
            sim: payment::sim::Sim::new(payment::sim::SimConfig::default()),
            seed,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// The dice for the `n`-th call with `key`: 0 to 99.
    fn roll(&self, key: &str) -> u64 {
        let mut calls = self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = calls.entry(key.to_owned()).or_insert(0);
        *n += 1;
        let mut hash = self.seed ^ 0x5053_5020_4641_554c;
        for b in key.bytes().chain(n.to_le_bytes()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        fastrand::Rng::with_seed(hash).u64(0..100)
    }
}

impl InProcess for Psp {
    fn post(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> Result<(u16, Vec<u8>), TransportFailure> {
        let roll = self.roll(key);
        let [unreachable, failing, slow, lost] = PROVIDER_FAULTS;
        if roll < unreachable {
            return Err(TransportFailure::Connect { message: "injected: refused".into() });
        }
        if roll < unreachable + failing {
            let body = ErrorBody::new("internal_error", "injected failure");
            return Ok((500, serde_json::to_vec(&body).unwrap_or_default()));
        }
        if roll < unreachable + failing + slow {
            return Err(TransportFailure::Timeout);
        }
        let handled = self.sim.handle(path, Some(key), body);
        if roll < unreachable + failing + slow + lost {
            return Err(TransportFailure::Timeout);
        }
        Ok((handled.answer.status, serde_json::to_vec(&handled.answer.body).unwrap_or_default()))
    }

    fn charges_of(&self, reference: &str) -> Result<Vec<payment::api::Charge>, String> {
        Ok(self.sim.charges(Some(reference)).charges)
    }
}
