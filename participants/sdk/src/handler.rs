//! What a participant writes: handlers, what they see, and how they answer.
//!
//! A handler is an `async fn(HandlerCtx<'_>) -> HandlerResult`, or a closure
//! made with [`handler`]. It gets the command and, through
//! [`HandlerCtx::tx`], the SDK's transaction on the participant's database:
//! whatever it writes there commits together with the inbox row that marks the
//! command as done, or not at all.

use crate::tx::{Db, Tx};
use futures::future::BoxFuture;
use sagas::protocol::Command;
use sea_orm::{DatabaseTransaction, DbErr, Statement};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::OnceCell;

/// What a handler returns: the step's output (fed to later steps), or why not.
pub type HandlerResult = Result<Value, HandlerError>;

/// Why a handler did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A business refusal (insufficient funds, card declined). Final: the
    /// handler's writes are rolled back, the refusal is stored and repeated to
    /// every later attempt, and the orchestrator does not retry.
    #[error("refused ({code}): {message}")]
    Failed { code: String, message: String },
    /// A transient problem (a dependency is down). The handler's writes are
    /// rolled back, nothing is stored, and the orchestrator retries with backoff.
    #[error("transient failure ({code}): {message}")]
    Retry { code: String, message: String },
    /// A transient failure in which nothing left this participant: what it
    /// calls could not be reached (connection refused, no route, name not
    /// found), so no effect can have happened anywhere. Like
    /// [`HandlerError::Retry`], but the orchestrator does not count the
    /// attempt against the step's retry budget (it has a larger bound of its
    /// own), so an outage of a dependency is waited out instead of becoming
    /// an unknown outcome. Use it only when nothing was sent.
    #[error("transient failure, nothing sent ({code}): {message}")]
    Unsent { code: String, message: String },
    /// Send no answer at all: roll back, do not reply and do not acknowledge,
    /// so JetStream redelivers the command after its ack wait and the
    /// orchestrator sees the step time out. For fault injection (the bench
    /// participant's `--never-answer-step`); a real participant answers
    /// [`HandlerError::Retry`] instead.
    #[error("no answer")]
    NoReply,
}

impl HandlerError {
    /// A business refusal; see [`HandlerError::Failed`].
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Failed { code: code.into(), message: message.into() }
    }

    /// A transient failure; see [`HandlerError::Retry`].
    pub fn retry(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Retry { code: code.into(), message: message.into() }
    }

    /// A transient failure in which nothing was sent; see [`HandlerError::Unsent`].
    pub fn unsent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unsent { code: code.into(), message: message.into() }
    }
}

/// A database error inside a handler is transient: the transaction rolls back
/// and the orchestrator retries. Lets handlers use `?` on sea-orm calls.
impl From<DbErr> for HandlerError {
    fn from(e: DbErr) -> Self {
        Self::retry("database_error", e.to_string())
    }
}

/// The SDK's transaction of one command, begun on the handler's first
/// [`HandlerCtx::tx`].
#[derive(Debug, Default)]
pub(crate) struct TxSlot {
    pub(crate) tx: OnceCell<Tx>,
    /// `tx()` was called (the transaction may still be beginning).
    asked: AtomicBool,
}

/// What a handler sees of one command.
#[derive(Debug, Clone, Copy)]
pub struct HandlerCtx<'a> {
    command: &'a Command,
    delivered: u32,
    db: &'a Db,
    slot: &'a TxSlot,
}

impl<'a> HandlerCtx<'a> {
    pub(crate) fn new(command: &'a Command, delivered: u32, db: &'a Db, slot: &'a TxSlot) -> Self {
        Self { command, delivered, db, slot }
    }

    /// The whole command: saga id and type, step, kind, attempt, deadline.
    #[must_use]
    pub fn command(&self) -> &'a Command {
        self.command
    }

    /// The step's rendered input (the same for `do` and `undo`).
    #[must_use]
    pub fn payload(&self) -> &'a Value {
        &self.command.payload
    }

    /// The payload as `T`; a payload that does not fit is a refusal
    /// (`invalid_payload`), since sending it again will not make it fit.
    ///
    /// # Errors
    /// [`HandlerError::Failed`] with code `invalid_payload`.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        T::deserialize(&self.command.payload).map_err(|e| {
            HandlerError::failed(
                "invalid_payload",
                format!("payload of `{}` does not fit: {e}", self.command.action),
            )
        })
    }

    /// The command id: stable across attempts, so use it as the idempotency
    /// key of any call to a system outside this database.
    #[must_use]
    pub fn idempotency_key(&self) -> &'a str {
        &self.command.command_id
    }

    /// How many times JetStream has delivered this message (1 the first time).
    #[must_use]
    pub fn delivered(&self) -> u32 {
        self.delivered
    }

    /// The SDK's transaction on the participant's database, begun on first use.
    /// Write the effect through it: it commits with the inbox row, or rolls back.
    /// A handler that never calls this holds no transaction while it works.
    ///
    /// # Errors
    /// When the database cannot begin a transaction (`?` makes it a `retry`).
    pub async fn tx(&self) -> Result<&'a DatabaseTransaction, DbErr> {
        self.slot.asked.store(true, Ordering::SeqCst);
        let tx: &'a Tx = self.slot.tx.get_or_try_init(|| self.db.begin()).await?;
        tx.txn()
    }

    /// Run `statement` and commit it now, apart from the SDK's transaction:
    /// it stays whatever this command's answer. For what must be on disk
    /// before the handler goes on, such as the record of an intent before a
    /// call to another system (so that a crash during the call leaves a trace
    /// to reconcile), or a refusal that the rollback on `failed` would undo.
    ///
    /// It takes its turn like the SDK's transactions: on SQLite it passes the
    /// gate they pass, so it never waits on the write lock of another
    /// command's open transaction, and with group commit
    /// ([`crate::Config::commit_group_max`]) it joins the shared transaction
    /// and returns once that is committed (one fsync for many). Call it before
    /// [`HandlerCtx::tx`], never after it nor beside it (in a `join!` with
    /// it): this command's own transaction holds the gate until the command
    /// ends. A call once `tx()` was called is refused.
    ///
    /// # Errors
    /// A database error, or a call after [`HandlerCtx::tx`].
    pub async fn commit_now(&self, statement: Statement) -> Result<(), DbErr> {
        if self.slot.asked.load(Ordering::SeqCst) {
            return Err(DbErr::Custom(format!(
                "commit_now after tx() in the `{}` handler: its transaction holds the \
                 database's turn until the command ends; write it in tx() or before",
                self.command.action
            )));
        }
        self.db.commit_one(statement).await
    }
}

/// A command handler. Implemented for every `async fn(HandlerCtx<'_>) ->
/// HandlerResult` and for closures wrapped in [`handler`].
pub trait Handler: Send + Sync + 'static {
    fn call<'a>(&'a self, ctx: HandlerCtx<'a>) -> BoxFuture<'a, HandlerResult>;
}

/// A function from a context to a future borrowing it; lets an `async fn`
/// that borrows its context be a [`Handler`]. Not meant to be named.
pub trait HandlerFn<'a>: Send + Sync + 'static {
    type Future: Future<Output = HandlerResult> + Send + 'a;
    fn call_fn(&self, ctx: HandlerCtx<'a>) -> Self::Future;
}

impl<'a, F, Fut> HandlerFn<'a> for F
where
    F: Fn(HandlerCtx<'a>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'a,
{
    type Future = Fut;
    fn call_fn(&self, ctx: HandlerCtx<'a>) -> Fut {
        self(ctx)
    }
}

impl<F> Handler for F
where
    F: for<'a> HandlerFn<'a>,
{
    fn call<'a>(&'a self, ctx: HandlerCtx<'a>) -> BoxFuture<'a, HandlerResult> {
        Box::pin(self.call_fn(ctx))
    }
}

/// Turn a closure that captures state into a [`Handler`]. The closure returns
/// a boxed future (`Box::pin(async move { .. })`), which is what lets the
/// future borrow the context:
///
/// ```
/// use skald_participant::{HandlerError, handler};
/// use std::sync::Arc;
///
/// let limit = Arc::new(100_i64);
/// let hold = handler(move |ctx| {
///     let limit = Arc::clone(&limit);
///     Box::pin(async move {
///         let amount = ctx.payload()["amount"].as_i64().unwrap_or(0);
///         if amount > *limit {
///             return Err(HandlerError::failed("over_limit", format!("{amount} > {limit}")));
///         }
///         Ok(serde_json::json!({ "held": amount }))
///     })
/// });
/// # let _ = skald_participant::Participant::new("ledger").action("hold", hold);
/// ```
pub fn handler<F>(f: F) -> F
where
    F: for<'a> Fn(HandlerCtx<'a>) -> BoxFuture<'a, HandlerResult> + Send + Sync + 'static,
{
    f
}
