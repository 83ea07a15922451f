//! The payment participant over real NATS, with its own database (a temp
//! SQLite file or a fresh PostgreSQL database) and `psp-sim` in-process on a
//! random port: charges, duplicates, declines, refunds, payouts, and the
//! reconciler refunding a charge whose step was given up.
//!
//! NATS: `SKALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`, JetStream on).
//! PostgreSQL: `SKALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), used to create and drop databases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use payment::api::ChargeList;
use payment::provider::ProviderConfig;
use payment::reconcile::ReconcileConfig;
use payment::serve::{ServeConfig, ServeError};
use payment::sim::{Sim, SimConfig};
use payment::store;
use sagas::protocol::{Command, Kind, Outcome, Reply};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::{Value, json};
use skald_testkit::{Backend, OrchestratorSide, Service, TempDatabase, token};
use std::ops::ControlFlow;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// How long a test waits for a reply or a reconciliation.
const WAIT: Duration = Duration::from_secs(20);

struct Harness {
    /// The participant, stopped (cancelled) first on drop.
    participant: Option<Service<ServeError>>,
    wire: OrchestratorSide,
    db: DatabaseConnection,
    _database: TempDatabase,
    sim_url: String,
    /// Stops the in-process `psp-sim`, if this harness started one.
    _sim: Option<DropGuard>,
}

impl Harness {
    /// A participant calling a fresh `psp-sim`.
    async fn new(backend: Backend, sim: SimConfig) -> Self {
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(payment::sim::serve(listener, Sim::new(sim), stop.clone()));
        Self { _sim: Some(stop.drop_guard()), ..Self::with_provider(backend, sim_url).await }
    }

    /// A participant calling the provider at `sim_url`.
    async fn with_provider(backend: Backend, sim_url: String) -> Self {
        let wire = OrchestratorSide::open("payment", skald_participant::streams::ensure_streams)
            .await
            .unwrap();
        let database = TempDatabase::new(backend).await.unwrap();
        let db = database.connect().await.unwrap();
        if backend == Backend::Sqlite {
            db.execute_unprepared("PRAGMA journal_mode=WAL").await.unwrap();
        }

        let provider = ProviderConfig {
            request_timeout: Duration::from_millis(1_000),
            ..ProviderConfig::new(sim_url.clone())
        };
        let config = ServeConfig {
            reconcile: ReconcileConfig {
                interval: Duration::from_millis(100),
                grace: Duration::from_millis(1_200),
                ..ReconcileConfig::default()
            },
            delivery: OrchestratorSide::DELIVERY,
            ..ServeConfig::new(wire.nats.clone(), wire.ns.clone(), db.clone(), provider)
        };
        let participant = Some(Service::spawn(|stop| payment::serve::run(config, stop)));
        Self { participant, wire, db, _database: database, sim_url, _sim: None }
    }

    fn command(&self, saga: &str, step: &str, kind: Kind, action: &str, payload: Value) -> Command {
        Command { payload, ..self.wire.command(saga, step, kind, action, 1) }
    }

    /// The `charge` step's command of `saga` (`charge`, or its undo
    /// `refund`): a top-up of `amount` EUR cents by `card_token`.
    fn charge_step(&self, saga: &str, kind: Kind, card_token: &str, amount: i64) -> Command {
        let action = match kind {
            Kind::Do => "charge",
            Kind::Undo => "refund",
        };
        self.command(saga, "charge", kind, action, topup(saga, card_token, amount))
    }

    /// Publish as the orchestrator does, and wait for the answer.
    async fn ask(&mut self, command: &Command) -> Reply {
        self.wire.ask(command).await
    }

    async fn charges(&self, reference: &str) -> ChargeList {
        let url = format!("{}/v1/charges?reference={reference}", self.sim_url);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    async fn payment_status(&self, key: &str) -> String {
        store::find(&self.db, key).await.unwrap().expect("a payments row").status
    }

    async fn stop(mut self) {
        let participant = self.participant.take().unwrap();
        participant.stop(Duration::from_secs(40)).await.expect("the participant stops");
    }

    /// Wait until the reconciler has settled the charge of `command_id`: its new status.
    async fn settled(&self, command_id: &str) -> String {
        let settled = skald_testkit::wait_until(WAIT, async || {
            let status = self.payment_status(command_id).await;
            Ok(if status == "pending" {
                ControlFlow::Continue("the reconciler did not settle the charge".to_owned())
            } else {
                ControlFlow::Break(status)
            })
        });
        settled.await.unwrap()
    }
}

fn topup(saga: &str, token: &str, amount: i64) -> Value {
    json!({ "amount": amount, "currency": "EUR", "card_token": token, "reference": saga })
}

fn saga_id() -> String {
    format!("saga-{}", token())
}

async fn charge_duplicate_decline_refund_payout(backend: Backend) {
    let mut h = Harness::new(backend, SimConfig::default()).await;

    // charge → ok with the provider's charge id
    let saga = saga_id();
    let charge = h.charge_step(&saga, Kind::Do, "tok_visa", 1_250);
    let first = h.ask(&charge).await;
    let Outcome::Ok { output } = &first.outcome else { panic!("{first:?}") };
    assert_eq!(output["status"], "succeeded");
    assert_eq!(
        (output["amount"].as_i64(), output["currency"].as_str()),
        (Some(1_250), Some("EUR"))
    );
    let charge_id = output["charge_id"].as_str().unwrap().to_owned();
    assert_eq!(h.payment_status(&charge.command_id).await, "succeeded");

    // the same command again (a retry, so a new attempt) → the same answer,
    // and the provider saw one charge
    let again = h.ask(&Command { attempt: 2, ..charge.clone() }).await;
    assert_eq!(again.outcome, first.outcome);
    let charges = h.charges(&saga).await;
    assert_eq!(charges.count, 1);
    assert_eq!(charges.charges[0].id, charge_id);
    let row = store::find(&h.db, &charge.command_id).await.unwrap().unwrap();
    assert_eq!((row.attempts, row.provider_id.as_deref()), (1, Some(charge_id.as_str())));

    // refund (the same payload) → the charge is given back once
    let refund = h.charge_step(&saga, Kind::Undo, "tok_visa", 1_250);
    let refunded = h.ask(&refund).await;
    let Outcome::Ok { output } = &refunded.outcome else { panic!("{refunded:?}") };
    assert_eq!(output["charge_id"], charge_id.as_str());
    assert!(output["refund_id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(h.ask(&Command { attempt: 2, ..refund.clone() }).await.outcome, refunded.outcome);
    let charges = h.charges(&saga).await;
    assert_eq!(
        (charges.charges[0].amount_refunded, charges.charges[0].status.as_str()),
        (1_250, "refunded")
    );

    // decline → failed with the provider's reason, recorded, no charge
    let declined_saga = saga_id();
    let declined = h.charge_step(&declined_saga, Kind::Do, "tok_decline", 500);
    let reply = h.ask(&declined).await;
    let Outcome::Failed { code, .. } = &reply.outcome else { panic!("{reply:?}") };
    assert_eq!(code, "card_declined");
    assert_eq!(h.payment_status(&declined.command_id).await, "refused");
    assert_eq!(h.charges(&declined_saga).await.count, 0);
    // its refund has nothing to undo (answered by the SDK: the charge was refused)
    let undo = h.charge_step(&declined_saga, Kind::Undo, "tok_decline", 500);
    let Outcome::Ok { output } = h.ask(&undo).await.outcome else { panic!() };
    assert_eq!(output, json!({ "nothing_to_undo": true }));

    // an invalid payload is refused before any call
    let bad_saga = saga_id();
    let bad = h.command(&bad_saga, "charge", Kind::Do, "charge", json!({ "amount": 5 }));
    let Outcome::Failed { code, .. } = h.ask(&bad).await.outcome else { panic!() };
    assert_eq!(code, "invalid_payload");

    // payout → ok, once
    let payout_saga = saga_id();
    let payout = h.command(
        &payout_saga,
        "payout",
        Kind::Do,
        "payout",
        json!({ "amount": 300, "currency": "EUR", "bank_account": "ba_1", "reference": payout_saga }),
    );
    let Outcome::Ok { output } = h.ask(&payout).await.outcome else { panic!() };
    assert_eq!(output["status"], "paid");
    h.ask(&Command { attempt: 2, ..payout.clone() }).await;
    let totals = h.charges("none").await.totals;
    assert_eq!(totals["EUR"].paid_out, 300);
    assert_eq!((totals["EUR"].charged, totals["EUR"].refunded), (1_250, 1_250));

    h.stop().await;
}

#[tokio::test]
async fn charge_duplicate_decline_refund_payout_sqlite() {
    charge_duplicate_decline_refund_payout(Backend::Sqlite).await;
}

#[tokio::test]
async fn charge_duplicate_decline_refund_payout_postgres() {
    charge_duplicate_decline_refund_payout(Backend::Postgres).await;
}

/// The provider charges but the answer is lost, the saga gives the step up
/// and sends its refund before any `do` succeeded: the SDK answers with a
/// tombstone without calling the refund handler, and the reconciler gives
/// the money back.
#[tokio::test]
async fn a_charge_given_up_after_a_lost_answer_is_refunded_by_the_reconciler() {
    let sim = SimConfig { drop_after_charge_rate: 1.0, ..SimConfig::default() };
    let mut h = Harness::new(Backend::Sqlite, sim).await;
    let saga = saga_id();
    let charge = h.charge_step(&saga, Kind::Do, "tok_visa", 700);
    let reply = h.ask(&charge).await;
    assert!(matches!(&reply.outcome, Outcome::Retry { .. }), "{reply:?}");
    assert_eq!(h.charges(&saga).await.totals["EUR"].charged, 700, "charged all the same");
    assert_eq!(h.payment_status(&charge.command_id).await, "pending");

    let refund = h.charge_step(&saga, Kind::Undo, "tok_visa", 700);
    let Outcome::Ok { output } = h.ask(&refund).await.outcome else { panic!() };
    assert_eq!(output, json!({ "tombstone": true }));

    assert_eq!(h.settled(&charge.command_id).await, "refunded");
    let list = h.charges(&saga).await;
    assert_eq!((list.count, list.charges[0].amount_refunded), (1, 700));
    assert_eq!(h.payment_status(&refund.command_id).await, "succeeded");
    h.stop().await;
}

/// A charge the provider never made (every call failed before it), given up
/// the same way: the reconciler asks for a refund by reference, the provider
/// knows no such charge, and the charge is settled as never made.
#[tokio::test]
async fn a_charge_given_up_that_never_happened_is_settled_as_not_charged() {
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({ "error": { "code": "unknown_charge", "message": "no such charge" } }),
        ))
        .mount(&provider)
        .await;
    let mut h = Harness::with_provider(Backend::Sqlite, provider.uri()).await;
    let saga = saga_id();
    let charge = h.charge_step(&saga, Kind::Do, "tok_visa", 700);
    let reply = h.ask(&charge).await;
    assert!(
        matches!(&reply.outcome, Outcome::Retry { code, .. } if code == "provider_unavailable"),
        "{reply:?}"
    );
    let refund = h.charge_step(&saga, Kind::Undo, "tok_visa", 700);
    assert!(matches!(h.ask(&refund).await.outcome, Outcome::Ok { .. }));

    assert_eq!(h.settled(&charge.command_id).await, "not_charged");
    assert_eq!(h.payment_status(&refund.command_id).await, "nothing_to_refund");
    let refunds: Vec<_> = provider
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/v1/refunds")
        .collect();
    assert_eq!(refunds.len(), 1, "settled once");
    assert_eq!(refunds[0].headers.get("idempotency-key").unwrap(), refund.command_id.as_str());
    let body: Value = serde_json::from_slice(&refunds[0].body).unwrap();
    assert_eq!(body, json!({ "reference": saga, "amount": 700 }));
    h.stop().await;
}
