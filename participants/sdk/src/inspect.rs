//! Answering what this participant recorded for a saga's commands (the
//! audit across services; see [`sagas::protocol::InspectRequest`]).
//!
//! The SDK answers from its inbox for every participant: per command asked
//! about, the outcome it gave for good (or that it never did), and per saga
//! the inbox entries nobody asked about. A participant that registers an
//! [`Inspector`] adds what only it can tell: the effect each command left
//! (a transfer and its state, a charge and what the provider says of it), and
//! effects it finds for the saga that no command explains.
//!
//! Requests arrive on `<prefix>.inspect.<participant>` in a queue group, so one
//! replica answers each. A few are answered at once; the rest wait.

use crate::inbox::{self, entity};
use futures::StreamExt;
use futures::future::BoxFuture;
use sagas::protocol::{
    BODY_BYTES_MAX, CommandRecord, Effect, INSPECT_EXTRA_MAX, InspectRequest, InspectResponse,
    InspectedCommand, Kind, Namespace, Outcome, Recorded, SagaRecords,
};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Requests answered at once by one replica.
const ANSWERING_MAX: usize = 4;
/// Sagas of one request inspected at once.
const SAGAS_AT_ONCE: usize = 4;
/// Longest an answer may take (the orchestrator waits 5 s): past it the
/// request is answered `timed_out` and its slot freed.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(4);

/// One command asked about, with this participant's inbox entry for it.
#[derive(Debug, Clone)]
pub struct Asked {
    pub command: InspectedCommand,
    pub recorded: Option<Recorded>,
}

/// What an [`Inspector`] is given: one saga and the commands asked about.
#[derive(Debug, Clone, Copy)]
pub struct InspectCtx<'a> {
    /// The participant's database (read it; an inspection changes nothing).
    pub db: &'a DatabaseConnection,
    pub saga_id: &'a str,
    pub asked: &'a [Asked],
}

/// What an [`Inspector`] found for one saga.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// The effect of each command, by command id (leave out the ones it cannot tell).
    pub of: BTreeMap<String, Effect>,
    /// Effects for this saga that none of its commands explains (at most
    /// [`INSPECT_EXTRA_MAX`] are passed on).
    pub others: Vec<Effect>,
    /// Why this answer is partial (a system the participant asks could not
    /// be asked): the audit then judges none of the participant's steps of
    /// this saga, it shows them unchecked.
    pub partial: Option<String>,
}

/// Describes the effects a participant's commands left. Implemented for
/// closures made with [`inspector`].
pub trait Inspector: Send + Sync + 'static {
    /// The effects of one saga's commands.
    ///
    /// # Errors
    /// Why they cannot be told now (the answer carries it; the inbox part is
    /// still given).
    fn inspect<'a>(&'a self, ctx: InspectCtx<'a>) -> BoxFuture<'a, Result<Effects, String>>;
}

impl<F> Inspector for F
where
    F: for<'a> Fn(InspectCtx<'a>) -> BoxFuture<'a, Result<Effects, String>> + Send + Sync + 'static,
{
    fn inspect<'a>(&'a self, ctx: InspectCtx<'a>) -> BoxFuture<'a, Result<Effects, String>> {
        self(ctx)
    }
}

/// Turn a closure into an [`Inspector`] (it returns a boxed future, like a
/// closure made with [`crate::handler`]).
pub fn inspector<F>(f: F) -> F
where
    F: for<'a> Fn(InspectCtx<'a>) -> BoxFuture<'a, Result<Effects, String>> + Send + Sync + 'static,
{
    f
}

/// An inbox row as the inspection reports it.
fn recorded(row: &entity::Model) -> Recorded {
    let kind = if row.kind == Kind::Undo.as_str() { Kind::Undo } else { Kind::Do };
    let (outcome, attempt) = match serde_json::from_str::<sagas::protocol::Reply>(&row.reply_json) {
        Ok(reply) => (reply.outcome, reply.attempt),
        Err(e) => (
            Outcome::Failed {
                code: "unreadable_record".into(),
                message: format!("the stored reply cannot be read: {e}"),
            },
            0,
        ),
    };
    let tombstone = match (&outcome, kind) {
        (Outcome::Failed { code, .. }, Kind::Do) => code == "tombstoned",
        (Outcome::Ok { output }, Kind::Undo) => output.get("tombstone") == Some(&true.into()),
        _ => false,
    };
    Recorded {
        command_id: row.command_id.clone(),
        step: row.step.clone(),
        kind,
        outcome,
        attempt,
        recorded_at_ms: row.created_at_ms,
        tombstone,
    }
}

/// The answer to one request.
pub(crate) async fn answer(
    participant: &str,
    db: &DatabaseConnection,
    inspector: Option<&dyn Inspector>,
    request: &InspectRequest,
) -> Result<Vec<SagaRecords>, DbErr> {
    let ids: Vec<&str> = request.sagas.iter().map(|s| s.saga_id.as_str()).collect();
    // Every inbox row of these sagas: a few per saga (a `do` and an `undo` per step).
    let rows = inbox::Entity::find()
        .filter(entity::Column::SagaId.is_in(ids.iter().copied()))
        .limit(u64::try_from(ids.len() * 4 * INSPECT_EXTRA_MAX).unwrap_or(u64::MAX))
        .all(db)
        .await?;
    let mut by_saga: BTreeMap<&str, Vec<&entity::Model>> = BTreeMap::new();
    for row in &rows {
        by_saga.entry(row.saga_id.as_str()).or_default().push(row);
    }
    let prepared: Vec<(String, Vec<Asked>, Vec<Recorded>)> = request
        .sagas
        .iter()
        .map(|saga| {
            let rows = by_saga.remove(saga.saga_id.as_str()).unwrap_or_default();
            let asked: Vec<Asked> = saga
                .commands
                .iter()
                .map(|c| Asked {
                    command: c.clone(),
                    recorded: rows
                        .iter()
                        .find(|r| r.command_id == c.command_id)
                        .map(|r| recorded(r)),
                })
                .collect();
            let asked_ids: HashSet<&str> =
                saga.commands.iter().map(|c| c.command_id.as_str()).collect();
            let unasked: Vec<Recorded> = rows
                .iter()
                .filter(|r| !asked_ids.contains(r.command_id.as_str()))
                .take(INSPECT_EXTRA_MAX)
                .map(|r| recorded(r))
                .collect();
            (saga.saga_id.clone(), asked, unasked)
        })
        .collect();
    // A few sagas at once (an inspector may ask a system over the network);
    // the answer keeps the order asked.
    let out: Vec<SagaRecords> = futures::stream::iter(prepared)
        .map(|(saga_id, asked, unasked)| async move {
            let (mut effects, error) = match inspector {
                None => (Effects::default(), None),
                Some(i) => {
                    match i.inspect(InspectCtx { db, saga_id: &saga_id, asked: &asked }).await {
                        Ok(mut effects) => {
                            let partial = effects.partial.take();
                            (effects, partial)
                        }
                        Err(e) => (Effects::default(), Some(e)),
                    }
                }
            };
            effects.others.truncate(INSPECT_EXTRA_MAX);
            let commands = asked
                .into_iter()
                .map(|a| CommandRecord {
                    effect: effects.of.remove(&a.command.command_id),
                    command_id: a.command.command_id,
                    recorded: a.recorded,
                })
                .collect();
            SagaRecords { saga_id, commands, unasked, others: effects.others, error }
        })
        .buffered(SAGAS_AT_ONCE)
        .collect()
        .await;
    debug!(participant, sagas = out.len(), "answered an inspection");
    Ok(out)
}

fn refused(code: &str, message: impl Into<String>) -> InspectResponse {
    InspectResponse::Refused { code: code.into(), message: message.into() }
}

/// The encoded answer to one request body.
async fn respond(
    participant: &str,
    db: &DatabaseConnection,
    inspector: Option<&dyn Inspector>,
    body: &[u8],
) -> Vec<u8> {
    let response = match serde_json::from_slice::<InspectRequest>(body) {
        Err(e) => refused("invalid_request", format!("the request cannot be read: {e}")),
        Ok(request) => match request.too_large() {
            Some(why) => refused("too_large", why),
            None => {
                let answered = tokio::time::timeout(
                    ANSWER_WITHIN,
                    answer(participant, db, inspector, &request),
                );
                match answered.await {
                    Ok(Ok(sagas)) => {
                        InspectResponse::Inspected { participant: participant.to_owned(), sagas }
                    }
                    Ok(Err(e)) => refused("database_error", e.to_string()),
                    Err(_) => refused(
                        "timed_out",
                        format!(
                            "no answer within {}s: ask about fewer sagas",
                            ANSWER_WITHIN.as_secs()
                        ),
                    ),
                }
            }
        },
    };
    let encoded = serde_json::to_vec(&response).unwrap_or_default();
    if encoded.len() > BODY_BYTES_MAX {
        let why = format!(
            "the answer is {} bytes, over {BODY_BYTES_MAX}: ask about fewer sagas",
            encoded.len()
        );
        return serde_json::to_vec(&refused("answer_too_large", why)).unwrap_or_default();
    }
    encoded
}

/// Answer inspections until `shutdown`.
pub(crate) async fn serve(
    nats: async_nats::Client,
    ns: Namespace,
    participant: String,
    db: DatabaseConnection,
    inspector: Option<Arc<dyn Inspector>>,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests =
        nats.queue_subscribe(ns.inspect_subject(&participant), participant.clone()).await?;
    let slots = Arc::new(Semaphore::new(ANSWERING_MAX));
    let tracker = TaskTracker::new();
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = requests.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let Some(reply_to) = msg.reply.clone() else {
            debug!("an inspection without a reply subject: nobody to answer");
            continue;
        };
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (nats, participant, db, inspector) =
            (nats.clone(), participant.clone(), db.clone(), inspector.clone());
        tracker.spawn(async move {
            let _slot = slot;
            let body = respond(&participant, &db, inspector.as_deref(), &msg.payload).await;
            if let Err(e) = nats.publish(reply_to, body.into()).await {
                warn!(error = %e, "cannot answer an inspection");
            }
        });
    }
    let _ = requests.unsubscribe().await;
    tracker.close();
    // Each answer is bounded by `ANSWER_WITHIN`.
    tracker.wait().await;
    Ok(())
}
