//! The Skald participant SDK: join sagas as a service, each effect at most once.
//!
//! A participant handles named actions (a saga step's `do`) and compensations
//! (its `undo`) sent by the orchestrator over NATS JetStream. The SDK runs each
//! handler in a transaction of the participant's own database (SQLite or
//! PostgreSQL) and, in that same transaction, records the command id in its
//! `skald_inbox` table. So:
//!
//! - the effect and its record commit together, or neither does;
//! - a redelivered or retried command gets the stored reply again, and the
//!   handler does not run twice;
//! - an `undo` that arrives before its `do` leaves a tombstone and is answered
//!   `ok` (`{"tombstone": true}`); the late `do` is then refused (`tombstoned`);
//! - the JetStream message is acked only after the reply is published.
//!
//! A handler answers with an output (`ok`), [`HandlerError::Failed`] (a
//! business refusal: stored, never retried) or [`HandlerError::Retry`]
//! (transient: nothing stored, the orchestrator retries). A panicking handler
//! is answered `retry` a few times, then refused (`handler_panicked`).
//!
//! ```no_run
//! use skald_participant::{Config, HandlerCtx, HandlerError, HandlerResult, Participant};
//! use sea_orm::{ConnectionTrait, Statement};
//! use serde::Deserialize;
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Deserialize)]
//! struct Hold { account: String, amount: i64 }
//!
//! async fn hold(ctx: HandlerCtx<'_>) -> HandlerResult {
//!     let input: Hold = ctx.input()?; // a payload that does not fit is `failed`
//!     if input.amount <= 0 {
//!         return Err(HandlerError::failed("invalid_amount", "amount must be positive"));
//!     }
//!     let tx = ctx.tx().await?; // the SDK's transaction: commits with the inbox row
//!     tx.execute(Statement::from_sql_and_values(
//!         tx.get_database_backend(),
//!         "INSERT INTO holds (id, account, amount) VALUES ($1, $2, $3)",
//!         [ctx.idempotency_key().into(), input.account.into(), input.amount.into()],
//!     ))
//!     .await?; // a database error is `retry`
//!     Ok(serde_json::json!({ "hold_id": ctx.idempotency_key() }))
//! }
//!
//! async fn void(ctx: HandlerCtx<'_>) -> HandlerResult {
//!     let tx = ctx.tx().await?;
//!     let hold_id = skald_participant::do_command_id(ctx.command());
//!     tx.execute(Statement::from_sql_and_values(
//!         tx.get_database_backend(),
//!         "DELETE FROM holds WHERE id = $1",
//!         [hold_id.into()],
//!     ))
//!     .await?;
//!     Ok(serde_json::json!({}))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let db = sea_orm::Database::connect("sqlite://ledger.db?mode=rwc").await?;
//! let shutdown = CancellationToken::new();
//! Participant::new("ledger")
//!     .action("hold", hold)
//!     .compensation("void", void)
//!     .run(Config::new(nats, Default::default(), db), shutdown)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! A handler that needs state is a closure wrapped in [`handler`].
//!
//! Every participant answers the orchestrator's audit from its inbox; one
//! that registers an [`Inspector`] also says what effect each command left
//! (see [`inspect`]).
//!
//! Around the participant: [`service`] is the start-up every participant
//! binary shares (runtime and exit codes, logging, connecting with hints,
//! signals), and [`migrate`] migrates the participant's own tables, each
//! declared as a [`migrate::Schema`], the way the SDK migrates its inbox.

mod config;
mod error;
mod execute;
mod handler;
pub mod inbox;
pub mod inspect;
pub mod migrate;
mod participant;
mod process;
mod reply;
pub mod service;
/// The streams of a namespace (settings shared with the orchestrator).
pub use skald_transport::streams;
/// Where the bus is and who a participant is on it (flags, environment, TLS).
pub use skald_transport::{BusOptions, Delivery};
mod tx;

pub use config::{
    COMMIT_GROUP_MAX_LIMIT, Config, IN_FLIGHT_MAX_DEFAULT, IN_FLIGHT_MAX_LIMIT,
    PANIC_RETRIES_MAX_DEFAULT, REDELIVERY_DELAY_DEFAULT, SHUTDOWN_GRACE_DEFAULT,
};
pub use error::SdkError;
pub use handler::{Handler, HandlerCtx, HandlerError, HandlerFn, HandlerResult, handler};
pub use inspect::{Effects, InspectCtx, Inspector, inspector};
pub use participant::{Local, Participant};
pub use reply::reply_msg_id;

/// The command id of the `do` that an `undo` compensates (the same for a
/// `do`): handy as the key of the effect the `do` wrote.
#[must_use]
pub fn do_command_id(command: &sagas::protocol::Command) -> String {
    sagas::protocol::command_id(&command.saga_id, &command.step, sagas::protocol::Kind::Do)
}
