//! Deciding the answer to one command: the inbox, tombstones, and the handler.
//!
//! This is where "at most one effect per (saga, step, kind)" is kept:
//! - a command id with an inbox row gets the stored answer again, and its
//!   handler does not run;
//! - an `undo` whose `do` never ran leaves a tombstone: it is answered `ok`
//!   without calling the handler, and the `do`'s row is written at once as
//!   `failed tombstoned`, so a late `do` is refused (and a `do` racing with the
//!   tombstone loses on the inbox primary key and is answered from it);
//! - otherwise the handler runs, and its writes commit in one transaction with
//!   the inbox row (`ok`), are rolled back and the refusal stored (`failed`),
//!   or are rolled back with nothing stored (`retry`, panic).
//!
//! A database error is returned to the caller, which hands the command back to
//! JetStream; nothing half-done is committed.

use crate::handler::{Handler, HandlerCtx, HandlerError, TxSlot};
use crate::inbox;
use crate::tx::{Db, Tx};
use futures::FutureExt;
use sagas::protocol::{BODY_BYTES_MAX, Command, Kind, Outcome, Reply};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use serde_json::json;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tracing::{debug, warn};

/// Longest code and message in a `failed` or `retry` answer; longer ones are
/// cut, so that a chatty error cannot make a reply too large to publish.
const CODE_BYTES_MAX: usize = 256;
const MESSAGE_BYTES_MAX: usize = 4096;

/// Handlers by kind and action name.
pub(crate) type Handlers = HashMap<(Kind, String), Arc<dyn Handler>>;

/// Everything needed to answer a command, shared by all in-flight commands.
pub(crate) struct Engine {
    pub participant: String,
    pub db: Db,
    /// Inbox lookups read together; `None` reads each alone (in process, where
    /// commands come one at a time).
    pub lookups: Option<inbox::Lookups>,
    pub handlers: Handlers,
    pub panic_retries_max: u32,
    /// See [`crate::Config::crash_after_commit`].
    pub crash_after_commit: Option<String>,
}

/// What to tell the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Reply(Outcome),
    /// Nothing: the handler asked not to answer ([`HandlerError::NoReply`]).
    Silent,
}

pub(crate) async fn execute(
    engine: &Engine,
    command: &Command,
    delivered: u32,
) -> Result<Answer, DbErr> {
    let found = match &engine.lookups {
        Some(lookups) => lookups.lookup(command).await?,
        None => inbox::lookup(&engine.db.conn, command).await?,
    };
    if let Some(row) = found.this {
        debug!("already answered: repeating the stored reply");
        return Ok(Answer::Reply(row.outcome()?));
    }
    let Some(handler) = engine.handlers.get(&(command.kind, command.action.clone())) else {
        let kind = match command.kind {
            Kind::Do => "action",
            Kind::Undo => "compensation",
        };
        let outcome = failed(
            "unknown_action",
            format!("participant `{}` has no {kind} `{}`", engine.participant, command.action),
        );
        return store(engine, command, outcome).await;
    };
    match (command.kind, found.sibling) {
        (Kind::Undo, None) => return tombstone(engine, command).await,
        (Kind::Undo, Some(done)) => {
            if !matches!(done.outcome()?, Outcome::Ok { .. }) {
                // The `do` was refused, so it changed nothing: nothing to undo.
                let outcome = Outcome::Ok { output: json!({ "nothing_to_undo": true }) };
                return store(engine, command, outcome).await;
            }
        }
        #[cfg(feature = "planted")]
        (Kind::Do, Some(_undo))
            if sagas::planted::is_planted(sagas::planted::Mistake::NoTombstone) => {}
        (Kind::Do, Some(_undo)) => {
            return store(engine, command, tombstoned(command)).await;
        }
        (Kind::Do, None) => {}
    }
    run_handler(engine, handler.as_ref(), command, delivered).await
}

async fn run_handler(
    engine: &Engine,
    handler: &dyn Handler,
    command: &Command,
    delivered: u32,
) -> Result<Answer, DbErr> {
    let slot = TxSlot::default();
    let result =
        AssertUnwindSafe(handler.call(HandlerCtx::new(command, delivered, &engine.db, &slot)))
            .catch_unwind()
            .await;
    let open = slot.tx.into_inner();
    match result {
        Ok(Ok(output)) => {
            let reply_bytes = reply_bytes(command, &output);
            if reply_bytes > BODY_BYTES_MAX {
                // It could never be published: refuse it rather than store it.
                rollback(open).await?;
                let message = format!(
                    "the `{}` handler's output makes a reply of {reply_bytes} bytes, over the \
                     limit of {BODY_BYTES_MAX}",
                    command.action
                );
                return store(engine, command, failed("output_too_large", message)).await;
            }
            let outcome = Outcome::Ok { output };
            match open {
                Some(tx) => commit_answer(tx, command, &outcome).await?,
                None => engine.db.commit_one(answer_row(engine, command, &outcome)?).await?,
            }
            if engine.crash_after_commit.as_deref() == Some(command.action.as_str()) {
                tracing::error!(command_id = %command.command_id, "fault injection: aborting after commit, before the reply");
                std::process::abort();
            }
            Ok(Answer::Reply(outcome))
        }
        Ok(Err(HandlerError::Failed { code, message })) => {
            rollback(open).await?;
            let (code, message) = (clip(code, CODE_BYTES_MAX), clip(message, MESSAGE_BYTES_MAX));
            store(engine, command, Outcome::Failed { code, message }).await
        }
        Ok(Err(HandlerError::Retry { code, message })) => {
            rollback(open).await?;
            let (code, message) = (clip(code, CODE_BYTES_MAX), clip(message, MESSAGE_BYTES_MAX));
            Ok(Answer::Reply(Outcome::Retry { code, message, unsent: false }))
        }
        Ok(Err(HandlerError::Unsent { code, message })) => {
            rollback(open).await?;
            let (code, message) = (clip(code, CODE_BYTES_MAX), clip(message, MESSAGE_BYTES_MAX));
            Ok(Answer::Reply(Outcome::Retry { code, message, unsent: true }))
        }
        Ok(Err(HandlerError::NoReply)) => {
            rollback(open).await?;
            Ok(Answer::Silent)
        }
        Err(panic) => {
            rollback(open).await?;
            let why = panic_message(panic.as_ref());
            let tries = delivered.max(command.attempt);
            warn!(tries, panic = %why, "handler panicked; its writes were rolled back");
            let message = clip(
                format!("the `{}` handler panicked: {why}", command.action),
                MESSAGE_BYTES_MAX,
            );
            if tries > engine.panic_retries_max {
                store(engine, command, failed("handler_panicked", message)).await
            } else {
                Ok(Answer::Reply(Outcome::retry("handler_panicked", message)))
            }
        }
    }
}

/// Store a final answer decided without the handler, in its own transaction.
async fn store(engine: &Engine, command: &Command, outcome: Outcome) -> Result<Answer, DbErr> {
    engine.db.commit_one(answer_row(engine, command, &outcome)?).await?;
    Ok(Answer::Reply(outcome))
}

/// Commit `tx` (the handler's writes) with the inbox row of `command`'s final
/// answer, written last.
async fn commit_answer(tx: Tx, command: &Command, outcome: &Outcome) -> Result<(), DbErr> {
    let backend = tx.txn()?.get_database_backend();
    tx.commit(inbox_row(backend, command, outcome)?).await
}

/// The inbox row of `command`'s final answer, on the engine's database.
fn answer_row(engine: &Engine, command: &Command, outcome: &Outcome) -> Result<Statement, DbErr> {
    inbox_row(engine.db.conn.get_database_backend(), command, outcome)
}

fn inbox_row(backend: DbBackend, command: &Command, outcome: &Outcome) -> Result<Statement, DbErr> {
    inbox::insert(backend, &command.command_id, command, command.kind, command.attempt, outcome)
}

/// An `undo` before its `do`: answer `ok` and refuse the `do` in advance.
async fn tombstone(engine: &Engine, command: &Command) -> Result<Answer, DbErr> {
    debug!("undo before its do: leaving a tombstone");
    let outcome = Outcome::Ok { output: json!({ "tombstone": true }) };
    let tx = engine.db.begin().await?;
    let backend = tx.txn()?.get_database_backend();
    let undo_row = inbox::insert(
        backend,
        &command.command_id,
        command,
        Kind::Undo,
        command.attempt,
        &outcome,
    )?;
    #[cfg(feature = "planted")]
    if sagas::planted::is_planted(sagas::planted::Mistake::NoTombstone) {
        tx.commit(undo_row).await?;
        return Ok(Answer::Reply(outcome));
    }
    tx.txn()?.execute(undo_row).await?;
    let do_id = inbox::sibling_id(command);
    tx.commit(inbox::insert(backend, &do_id, command, Kind::Do, 0, &tombstoned(command))?).await?;
    Ok(Answer::Reply(outcome))
}

fn tombstoned(command: &Command) -> Outcome {
    failed(
        "tombstoned",
        format!(
            "step `{}` of saga {} was compensated before this `do` arrived; \
             it is refused so that its effect cannot outlive the compensation",
            command.step, command.saga_id
        ),
    )
}

/// The size of the reply that would carry `output` (with room for any attempt number).
fn reply_bytes(command: &Command, output: &serde_json::Value) -> usize {
    const ATTEMPT_DIGITS_MAX: usize = 10;
    let reply = Reply {
        command_id: command.command_id.clone(),
        attempt: 0,
        outcome: Outcome::Ok { output: output.clone() },
    };
    serde_json::to_vec(&reply).map_or(usize::MAX, |body| body.len() + ATTEMPT_DIGITS_MAX)
}

/// `text` cut to at most `bytes_max` bytes, on a character boundary.
fn clip(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

fn failed(code: &str, message: String) -> Outcome {
    Outcome::Failed { code: code.to_owned(), message }
}

async fn rollback(open: Option<Tx>) -> Result<(), DbErr> {
    match open {
        Some(tx) => tx.rollback().await,
        None => Ok(()),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("short".into(), 10), "short");
        assert_eq!(clip("abcdefghijkl".into(), 8), "abcde...");
        let cut = clip("ééééé".into(), 8); // 2 bytes each
        assert_eq!(cut, "éé...");
        assert!(cut.len() <= 8);
    }
}
