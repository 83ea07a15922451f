//! The inbox: the participant's record of every command it answered for good.
//!
//! A row is written in the same transaction as the handler's effect, so the
//! effect and the proof that it happened commit together. The primary key is
//! the command id: two replicas (or two attempts) racing on one command both
//! try to insert it, and the loser's transaction, effect included, fails and
//! rolls back. Its command is redelivered and answered from the stored row.
//!
//! `retry` answers are never stored: the effect did not happen and the next
//! attempt must run the handler again.

pub mod entity;
pub mod migration;

pub use entity::{Entity, Model};

use sagas::protocol::{Command, Kind, Outcome, Reply};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryTrait, Statement,
};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// The stored rows of a command and of its sibling (the `undo` of a `do`, or
/// the `do` of an `undo`), read in one query.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    pub this: Option<Model>,
    pub sibling: Option<Model>,
}

/// The command id of the other kind of the same saga step.
pub(crate) fn sibling_id(command: &Command) -> String {
    let other = match command.kind {
        Kind::Do => Kind::Undo,
        Kind::Undo => Kind::Do,
    };
    sagas::protocol::command_id(&command.saga_id, &command.step, other)
}

pub(crate) async fn lookup<C: ConnectionTrait>(db: &C, command: &Command) -> Result<Lookup, DbErr> {
    let sibling = sibling_id(command);
    let rows = rows_of(db, [command.command_id.as_str(), sibling.as_str()]).await?;
    Ok(Lookup::of(&rows, &command.command_id, &sibling))
}

/// The inbox rows of `ids` (those there are), by command id, in one query.
async fn rows_of<'a, C: ConnectionTrait>(
    db: &C,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, Model>, DbErr> {
    let rows = Entity::find().filter(entity::Column::CommandId.is_in(ids)).all(db).await?;
    Ok(rows.into_iter().map(|row| (row.command_id.clone(), row)).collect())
}

impl Lookup {
    /// The rows of `command_id` and `sibling` among `rows`.
    fn of(rows: &HashMap<String, Model>, command_id: &str, sibling: &str) -> Self {
        Self { this: rows.get(command_id).cloned(), sibling: rows.get(sibling).cloned() }
    }
}

/// Most commands whose inbox rows one query of [`Lookups`] reads.
const LOOKUP_BATCH_MAX: usize = 128;

/// Reads the inbox rows of commands that arrive together in one query: a
/// task of its own takes every lookup waiting when it is free and answers
/// each. Under load this spares each command a call to the database (on
/// SQLite, a hand-off to the connection's thread and back); alone, a command
/// waits for nobody. The task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Lookups {
    asks: mpsc::Sender<Ask>,
}

#[derive(Debug)]
struct Ask {
    command_id: String,
    sibling: String,
    answer: oneshot::Sender<Result<Lookup, DbErr>>,
}

impl Lookups {
    /// Start the reading task on the current runtime.
    pub fn start(db: DatabaseConnection) -> Self {
        let (asks, waiting) = mpsc::channel(LOOKUP_BATCH_MAX);
        tokio::spawn(read_together(db, waiting));
        Self { asks }
    }

    pub async fn lookup(&self, command: &Command) -> Result<Lookup, DbErr> {
        let (answer, answered) = oneshot::channel();
        let ask =
            Ask { command_id: command.command_id.clone(), sibling: sibling_id(command), answer };
        let gone = || DbErr::Custom("the inbox reader has stopped".into());
        self.asks.send(ask).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

async fn read_together(db: DatabaseConnection, mut waiting: mpsc::Receiver<Ask>) {
    let mut asks = Vec::with_capacity(LOOKUP_BATCH_MAX);
    while waiting.recv_many(&mut asks, LOOKUP_BATCH_MAX).await > 0 {
        let ids = asks.iter().flat_map(|ask| [ask.command_id.as_str(), ask.sibling.as_str()]);
        match rows_of(&db, ids).await {
            Ok(rows) => {
                for ask in asks.drain(..) {
                    let _ = ask.answer.send(Ok(Lookup::of(&rows, &ask.command_id, &ask.sibling)));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for ask in asks.drain(..) {
                    let _ = ask.answer.send(Err(DbErr::Custom(message.clone())));
                }
            }
        }
    }
}

/// The statement that records the final answer to one command (attempt 0:
/// before it arrived), for [`crate::tx::Tx::commit`] to run last.
pub(crate) fn insert(
    backend: DbBackend,
    command_id: &str,
    command: &Command,
    kind: Kind,
    attempt: u32,
    outcome: &Outcome,
) -> Result<Statement, DbErr> {
    let reply = Reply { command_id: command_id.to_owned(), attempt, outcome: outcome.clone() };
    let reply_json = serde_json::to_string(&reply)
        .map_err(|e| DbErr::Custom(format!("cannot encode the reply to store it: {e}")))?;
    let row = entity::ActiveModel {
        command_id: Set(command_id.to_owned()),
        saga_id: Set(command.saga_id.clone()),
        step: Set(command.step.clone()),
        kind: Set(kind.as_str().to_owned()),
        reply_json: Set(reply_json),
        created_at_ms: Set(now_ms()),
    };
    Ok(Entity::insert(row).build(backend))
}

impl Model {
    /// The stored outcome.
    ///
    /// # Errors
    /// When the row's `reply_json` is not a reply (edited by hand?).
    pub fn outcome(&self) -> Result<Outcome, DbErr> {
        serde_json::from_str::<Reply>(&self.reply_json).map(|r| r.outcome).map_err(|e| {
            DbErr::Custom(format!(
                "stored reply of command {} cannot be read: {e}",
                self.command_id
            ))
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
