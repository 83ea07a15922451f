//! The driver: load → replay → decide → append. The only place where the pure
//! machine and I/O meet.
//!
//! Every input for a saga (start, reply, timeout, operator action) goes through
//! [`Driver::handle`] or [`Driver::start`]. A concurrent append to the same saga
//! shows up as [`StoreError::Conflict`]; the driver then reloads and decides
//! again, a bounded number of times.
//!
//! Replies and timeouts, the owner's work, start from the owner's cache of
//! open sagas ([`crate::engine::cache`]) instead of loading and replaying the history:
//! a cache entry is only a guess that the append's seq guard checks, and an
//! input the cached state refuses or absorbs is decided again on the stored
//! history before it is answered.

use super::endings::{self, Endings};
use crate::clock;
use crate::cluster::partitions::Ownership;
use crate::engine::bell::DeadlineBell;
use crate::engine::cache::{Cached, SagaCache};
use crate::engine::projection::{fold, hash_json, project, with_identity};
use crate::engine::registry::Registry;
use crate::metrics::{self, Metrics};
use crate::store::{
    Append, Fence, Loaded, OutboxRow, Projection, Queued, RepairRecord, Store, StoreError,
};
use sagas::hash::partition_of;
use sagas::machine::{
    Decision, Input, OperatorInput, OutgoingCommand, SagaState, TransitionError, decide, replay,
};
use sagas::protocol::Namespace;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use super::answers::{
    CONFLICT_RETRIES_MAX, DriveError, IDEMPOTENCY_KEY_LEN_MAX, REQUEST_ID_LEN_MAX, RepairOutcome,
    StartError, Started,
};

/// What an append carries besides the events: the repair it records, the
/// fence it is written under.
#[derive(Debug, Clone, Copy, Default)]
struct Guards<'a> {
    repair: Option<&'a RepairRecord>,
    fence: Option<&'a Fence>,
}

/// Who asked for a repair and under which request id.
#[derive(Debug, Clone, Copy)]
struct RepairTicket<'a> {
    request_id: &'a str,
    action: &'static str,
    by: &'a str,
}

/// Where new saga ids come from: UUID v7 (time-ordered) unless the driver
/// is given another source; a simulation gives a seeded one, so that a seed
/// makes the same sagas (their ids also seed their retry jitter).
#[derive(Clone)]
pub struct SagaIds(Arc<dyn Fn() -> String + Send + Sync>);

impl SagaIds {
    /// Ids from `next` (each must be a valid saga id, and new).
    pub fn from_fn(next: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(next))
    }
}

impl std::fmt::Debug for SagaIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SagaIds(..)")
    }
}

/// Why an event sent by its key found no one saga.
#[derive(Debug)]
pub enum ByKey {
    None,
    Several,
    Store(crate::store::StoreError),
}

/// What became of an event from outside ([`Driver::signal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signalled {
    /// The saga had this event id already: nothing changed.
    pub duplicate: bool,
    /// A waiting step took it now (else it is kept until one waits for it).
    pub taken: bool,
    /// The saga's status afterwards.
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct Driver {
    store: Store,
    registry: Arc<Registry>,
    ns: Namespace,
    partitions: u32,
    /// Rung when an append sets a deadline before the timer loop's next look.
    bell: DeadlineBell,
    /// Told the id of every saga that reaches an end state (benchmarks, tests).
    ended: Option<mpsc::UnboundedSender<String>>,
    /// Callers waiting for sagas to end.
    endings: Endings,
    /// This orchestrator's Prometheus metrics.
    metrics: Metrics,
    /// The partitions this instance holds; replies and timeouts are only
    /// applied to sagas of these, under their lease's fence.
    ownership: Ownership,
    /// The open sagas of the partitions held, as last written by this instance.
    cache: SagaCache,
    /// Where new saga ids come from (`None`: UUID v7).
    ids: Option<SagaIds>,
}

impl Driver {
    #[must_use]
    pub fn new(store: Store, registry: Arc<Registry>, ns: Namespace, partitions: u32) -> Self {
        Self {
            store,
            registry,
            ns,
            partitions: partitions.max(1),
            bell: DeadlineBell::default(),
            ended: None,
            endings: Endings::default(),
            metrics: Metrics::new(),
            ownership: Ownership::all(partitions.max(1)),
            cache: SagaCache::default(),
            ids: None,
        }
    }

    /// The same driver, naming new sagas from `ids`.
    #[must_use]
    pub fn with_saga_ids(mut self, ids: SagaIds) -> Self {
        self.ids = Some(ids);
        self
    }

    /// The bell the timer loop listens to.
    #[must_use]
    pub fn bell(&self) -> &DeadlineBell {
        &self.bell
    }

    /// The owner's cache of open sagas (tests, diagnostics).
    #[must_use]
    pub fn cache(&self) -> &SagaCache {
        &self.cache
    }

    /// Forget the cached sagas of a partition this instance gave up or lost.
    pub fn forget_partition(&self, partition: i32) {
        self.cache.forget_partition(partition);
    }

    /// The epoch `partition` is held at (0 outside a cluster), if held.
    fn epoch_of(&self, partition: i32) -> Option<i64> {
        self.ownership.epoch(partition)
    }

    /// Cache a saga just written or loaded, if this instance still holds its
    /// partition at the epoch the entry was read under.
    fn remember(&self, saga_id: &str, cached: Cached) {
        if self.epoch_of(cached.identity.partition) == Some(cached.epoch) {
            self.cache.put(saga_id, cached);
        }
    }

    /// Drive only the partitions `ownership` holds, fencing every write.
    #[must_use]
    pub fn with_ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    #[must_use]
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// This orchestrator's metrics (`render()` them for `/metrics`).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Report every saga that reaches an end state (completed, compensated,
    /// failed or parked) on `tx`.
    #[must_use]
    pub fn with_end_listener(mut self, tx: mpsc::UnboundedSender<String>) -> Self {
        self.ended = Some(tx);
        self
    }

    /// The one running saga whose step waits for `event` with `key` (how an
    /// event sent by its key alone finds its saga).
    ///
    /// # Errors
    /// None or several wait for it, or the store cannot be read.
    pub async fn saga_waiting_for(&self, event: &str, key: &str) -> Result<String, ByKey> {
        // What a waiting step's key can be: anything else waits nowhere (and
        // a NUL would not even reach PostgreSQL).
        if key.is_empty()
            || key.len() > sagas::machine::SIGNAL_ID_LEN_MAX
            || key.chars().any(char::is_control)
            || !sagas::protocol::is_subject_token(event)
        {
            return Err(ByKey::None);
        }
        let mut ids = self.store().waiting_for(event, key).await.map_err(ByKey::Store)?;
        match ids.len() {
            0 => Err(ByKey::None),
            1 => Ok(ids.remove(0)),
            _ => Err(ByKey::Several),
        }
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Callers waiting here for sagas to end.
    #[must_use]
    pub fn endings(&self) -> &Endings {
        &self.endings
    }

    /// Wait until `saga_id` ends (completed, compensated, failed) or parks,
    /// `within` passes, or `stop` is cancelled (the caller reads it then, as
    /// it needs it). An end this instance writes wakes the wait at once; one
    /// written by another instance is seen within [`endings::LOOK_EVERY`]
    /// (within [`endings::LOOK_OWNED`] should this instance's partition move).
    pub async fn wait_for_end(
        &self,
        saga_id: &str,
        within: std::time::Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), DriveError> {
        self.wait_end(saga_id, within, stop).await.map(drop)
    }

    /// Wait as [`Self::wait_for_end`] does; the outcome when this instance
    /// wrote the end and said it, `None` when the caller must look.
    async fn wait_end(
        &self,
        saga_id: &str,
        within: std::time::Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<sagas::protocol::SagaOutcome>, DriveError> {
        let until = tokio::time::Instant::now() + within;
        loop {
            // Registered before the look, so an end between the two still wakes it.
            let watch = self.endings.watch(saga_id);
            let row = self
                .store
                .row(saga_id)
                .await?
                .ok_or_else(|| DriveError::UnknownSaga { saga_id: saga_id.to_owned() })?;
            let ended = sagas::machine::SagaStatus::parse(&row.status).is_some_and(|s| s.is_end());
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let Some(watch) = watch.filter(|_| !ended && !left.is_zero() && !stop.is_cancelled())
            else {
                return Ok(None);
            };
            let look = if self.epoch_of(row.partition).is_some() {
                endings::LOOK_OWNED
            } else {
                endings::LOOK_EVERY
            };
            tokio::select! {
                told = watch.ended_or(left.min(look)) => if told.is_some() {
                    return Ok(told);
                },
                () = stop.cancelled() => {}
            }
        }
    }

    /// [`Self::wait_for_end`], as a caller sees it: the saga's outcome. An
    /// archived saga answers with the end it was archived in.
    pub async fn outcome(
        &self,
        saga_id: &str,
        within: std::time::Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<sagas::protocol::SagaOutcome, DriveError> {
        match self.wait_end(saga_id, within, stop).await {
            Ok(Some(told)) => Ok(told),
            Ok(None) => Ok(self.state(saga_id).await?.1.outcome()),
            Err(DriveError::UnknownSaga { .. }) => match self.store.archived(saga_id).await? {
                Some(a) => Ok(sagas::protocol::SagaOutcome {
                    status: a.status,
                    ended: true,
                    output: None,
                    cause: Some(serde_json::json!({
                        "cause": "archived",
                        "archived_at_ms": a.archived_at_ms,
                        "file": a.file,
                    })),
                }),
                None => Err(DriveError::UnknownSaga { saga_id: saga_id.to_owned() }),
            },
            Err(e) => Err(e),
        }
    }

    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The subjects and streams this driver's commands and replies use.
    #[must_use]
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    #[must_use]
    pub fn partition_of(&self, saga_id: &str) -> u32 {
        partition_of(saga_id, self.partitions)
    }

    /// Start a saga, or find the one this idempotency key started before.
    pub async fn start(
        &self,
        saga_type: &str,
        key: &str,
        input: &Value,
    ) -> Result<Started, StartError> {
        // PostgreSQL text cannot hold NUL: refuse it as bad input, not a database fault.
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX || key.contains('\0') {
            return Err(StartError::BadKey);
        }
        if self.registry.newest(saga_type).is_none()
            && let Err(e) = self.registry.refresh(&self.store).await
        {
            tracing::warn!(error = %e, "cannot refresh definitions from the store");
        }
        let definition =
            self.registry.newest(saga_type).ok_or_else(|| StartError::UnknownType {
                saga_type: saga_type.to_owned(),
                known: self.registry.names().join(", "),
            })?;
        let input_hash = hash_json(input);
        // Whether the key is taken is not asked first: the writer refuses a
        // start whose key a live or archived saga holds, and only then is the
        // holder looked up, so a new start costs no query of its own.
        let held_by = async || {
            let held = self.store.started_by_key(saga_type, key).await.map_err(DriveError::from)?;
            Ok::<_, StartError>(held.map(|held| {
                if held.input_hash == input_hash {
                    Ok(Started::Existing { saga_id: held.saga_id })
                } else {
                    Err(StartError::Conflict { key: key.to_owned(), saga_id: held.saga_id })
                }
            }))
        };
        let saga_id =
            self.ids.as_ref().map_or_else(|| uuid::Uuid::now_v7().to_string(), |ids| (ids.0)());
        let span = tracing::info_span!(
            "start",
            saga_type,
            saga_id = %saga_id,
            trace_id = %crate::trace::trace_id(&saga_id),
        );
        crate::trace::link(&span, &saga_id);
        let state = SagaState::new(definition.clone());
        let now = self.store.clock().now();
        let input = Input::Start { saga_id: saga_id.clone(), input: input.clone() };
        let decision = match decide(&state, &input, now) {
            Ok(decision) => decision,
            Err(e) => {
                // A repeated start is answered as before, whatever the newest version accepts.
                if let Some(answer) = held_by().await? {
                    return answer;
                }
                return Err(match e {
                    TransitionError::InvalidInput { errors, .. } => {
                        StartError::InvalidInput { saga_type: saga_type.to_owned(), errors }
                    }
                    other => StartError::Drive(other.into()),
                });
            }
        };
        let after = fold(state, &decision);
        let projection = Projection {
            saga_type: saga_type.to_owned(),
            definition_hash: definition.hash.clone(),
            partition: i32::try_from(self.partition_of(&saga_id)).unwrap_or(0),
            idempotency_key: key.to_owned(),
            input_hash: input_hash.clone(),
            tags: Some(definition.render_tags(&saga_id, &after.input)),
            ..project(&after)
        };
        match self
            .persist(&saga_id, 0, &after, &decision, &projection, Guards::default())
            .instrument(span)
            .await
        {
            Ok(()) => {
                self.metrics.saga_started(saga_type);
                if let Some(epoch) = self.epoch_of(projection.partition) {
                    let seq = decision.events.len() as i64;
                    let history = decision.events;
                    let identity = projection;
                    self.remember(&saga_id, Cached { identity, epoch, seq, state: after, history });
                }
                Ok(Started::New { saga_id })
            }
            Err(StoreError::DuplicateKey { .. }) => {
                // The key is taken: by an earlier start (live or archived) or
                // by another start that won the race.
                match held_by().await? {
                    Some(answer) => answer,
                    None => Err(StartError::Drive(DriveError::Contended { saga_id })),
                }
            }
            Err(e) => Err(StartError::Drive(e.into())),
        }
    }

    /// Feed one input to a saga and persist what the machine decides.
    pub async fn handle(&self, saga_id: &str, input: &Input) -> Result<Decision, DriveError> {
        self.handle_from(saga_id, input, None).await
    }

    /// Feed a reply that came from `sender` (the participant its subject
    /// names): refused with [`DriveError::WrongSender`] when the command it
    /// answers went to another participant.
    pub async fn handle_reply(
        &self,
        saga_id: &str,
        reply: sagas::protocol::Reply,
        sender: &str,
    ) -> Result<Decision, DriveError> {
        self.handle_from(saga_id, &Input::Reply(reply), Some(sender)).await
    }

    /// [`Driver::handle`], checking a reply's `sender` when there is one.
    async fn handle_from(
        &self,
        saga_id: &str,
        input: &Input,
        sender: Option<&str>,
    ) -> Result<Decision, DriveError> {
        let span = tracing::info_span!(
            "handle",
            saga_id = %saga_id,
            trace_id = %crate::trace::trace_id(saga_id),
        );
        crate::trace::link(&span, saga_id);
        self.drive(saga_id, input, None, sender)
            .instrument(span)
            .await
            .map(|(decision, _)| decision)
    }

    /// Hand saga `saga_id` an event from outside (what a waiting step waits
    /// for): whether it was a duplicate, whether a waiting step took it now,
    /// and the saga's status afterwards.
    pub async fn signal(
        &self,
        saga_id: &str,
        signal: sagas::machine::Signal,
    ) -> Result<Signalled, DriveError> {
        let span = tracing::info_span!("signal", saga_id = %saga_id, event = %signal.name);
        crate::trace::link(&span, saga_id);
        let input = Input::Signal(signal);
        let (decision, status) = self.drive(saga_id, &input, None, None).instrument(span).await?;
        Ok(Signalled {
            duplicate: decision.absorbed == Some(sagas::machine::Absorbed::Duplicate),
            // The machine records the event first; anything after it is the
            // waiting step that took it (succeeding, or failing on it).
            taken: decision.events.len() > 1,
            status,
        })
    }

    /// Apply an operator's repair, at most once per `request_id`: a repeat of
    /// the same request gets the first answer back (`replayed`), a request id
    /// reused for another saga or action is refused.
    pub async fn repair(
        &self,
        saga_id: &str,
        op: OperatorInput,
        request_id: &str,
    ) -> Result<RepairOutcome, DriveError> {
        let action = op.action.as_str();
        if let Some(done) = self.already_done(saga_id, action, request_id).await? {
            return Ok(done);
        }
        let by = op.by.clone();
        self.drive_repair(saga_id, &Input::Operator(op), action, &by, request_id).await
    }

    /// The answer already recorded for `request_id`, once the id is checked.
    async fn already_done(
        &self,
        saga_id: &str,
        action: &str,
        request_id: &str,
    ) -> Result<Option<RepairOutcome>, DriveError> {
        if request_id.is_empty()
            || request_id.len() > REQUEST_ID_LEN_MAX
            || request_id.contains('\0')
        {
            return Err(DriveError::BadRequestId);
        }
        self.recorded_repair(saga_id, action, request_id).await
    }

    /// Drive `input` as a repair recorded under `request_id`.
    async fn drive_repair(
        &self,
        saga_id: &str,
        input: &Input,
        action: &'static str,
        by: &str,
        request_id: &str,
    ) -> Result<RepairOutcome, DriveError> {
        let ticket = RepairTicket { request_id, action, by };
        match self.drive(saga_id, input, Some(ticket), None).await {
            Ok((decision, status)) => Ok(RepairOutcome {
                saga_id: saga_id.to_owned(),
                action: action.to_owned(),
                status,
                events: decision.events.iter().map(|e| e.name().to_owned()).collect(),
                replayed: false,
            }),
            Err(DriveError::Store(StoreError::DuplicateRequest { .. })) => {
                // The same request won a race with this one: answer as it was answered.
                self.recorded_repair(saga_id, action, request_id)
                    .await?
                    .ok_or_else(|| DriveError::Contended { saga_id: saga_id.to_owned() })
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a saga could move to `to` now, and if not why.
    pub async fn can_migrate(
        &self,
        saga_id: &str,
        to: &Arc<sagas::Definition>,
    ) -> Result<Result<(), sagas::machine::migrate::Incompatible>, DriveError> {
        let current = self.load_current(saga_id).await?;
        Ok(sagas::machine::migrate::check(&current.state, &current.history, to))
    }

    /// Move a running saga to version `to_version` of its definition, when
    /// its history is valid under it ([`sagas::machine::migrate::check`]);
    /// recorded as a `definition_changed` event and, like a repair, answered
    /// the same again for the same `request_id`. With `dry_run`, only say
    /// whether it could.
    pub async fn migrate(
        &self,
        saga_id: &str,
        to_version: u32,
        by: &str,
        reason: &str,
        request_id: &str,
        dry_run: bool,
    ) -> Result<RepairOutcome, DriveError> {
        const ACTION: &str = "migrate";
        if let Some(done) = self.already_done(saga_id, ACTION, request_id).await? {
            return Ok(done);
        }
        let current = self.load_current(saga_id).await?;
        let saga_type = current.state.definition.name.clone();
        if self.registry.version(&saga_type, to_version).is_none()
            && let Err(e) = self.registry.refresh(&self.store).await
        {
            // Registered through another instance, perhaps: the store knows.
            tracing::warn!(error = %e, "cannot refresh definitions from the store");
        }
        let to = self.registry.version(&saga_type, to_version).ok_or_else(|| {
            DriveError::UnknownVersion { saga_type: saga_type.clone(), version: to_version }
        })?;
        sagas::machine::migrate::check(&current.state, &current.history, &to)
            .map_err(|e| DriveError::Transition(TransitionError::Incompatible(e)))?;
        if dry_run {
            return Ok(RepairOutcome {
                saga_id: saga_id.to_owned(),
                action: ACTION.to_owned(),
                status: current.state.status.as_str().to_owned(),
                events: vec!["definition_changed".to_owned()],
                replayed: false,
            });
        }
        let input = Input::Migrate { to, by: by.to_owned(), reason: reason.to_owned() };
        let moved = self.drive_repair(saga_id, &input, ACTION, by, request_id).await;
        // Whatever was cached was replayed under the old version.
        self.cache.forget(saga_id);
        moved
    }

    /// After a takeover: every command the saga still waits on, to queue
    /// again in the outbox with the same attempt and message id. JetStream
    /// drops it if the original is still in its dedupe window; otherwise the
    /// participant's inbox answers it from its stored reply.
    pub async fn in_flight_commands(&self, saga_id: &str) -> Result<Vec<Queued>, DriveError> {
        let (row, state) = self.state(saga_id).await?;
        let partition = u32::try_from(row.partition).unwrap_or(0);
        Ok(state
            .in_flight()
            .iter()
            .map(|command| Queued {
                saga_id: saga_id.to_owned(),
                partition: row.partition,
                command: self.outbox_row(command, saga_id, &state.definition.name, partition),
            })
            .collect())
    }

    /// The outbox row of a command (its one encoding is the machine's).
    fn outbox_row(
        &self,
        command: &OutgoingCommand,
        saga_id: &str,
        saga_type: &str,
        partition: u32,
    ) -> OutboxRow {
        let encoded = command.encode(&self.ns, saga_id, saga_type, partition);
        OutboxRow { subject: encoded.subject, msg_id: encoded.msg_id, body: encoded.body }
    }

    /// The announcement of a saga's end on `<prefix>.ended.<type>`, queued
    /// with the event that ends it (so it is never lost; it may repeat, and
    /// JetStream drops a repeat within its window by the message id).
    fn ended_row(&self, saga_id: &str, after: &SagaState) -> OutboxRow {
        let definition = &after.definition;
        let ended = sagas::protocol::SagaEnded {
            saga_id: saga_id.to_owned(),
            saga_type: definition.name.clone(),
            version: definition.version,
            definition_hash: definition.hash.clone(),
            outcome: after.outcome(),
            tags: definition.render_tags(saga_id, &after.input).into_iter().collect(),
            ended_at_unix_ms: after.ended_at.unwrap_or_else(|| self.store.clock().now()),
        };
        OutboxRow {
            subject: self.ns.ended_subject(&definition.name),
            msg_id: format!("{saga_id}.ended"),
            body: serde_json::to_string(&ended).unwrap_or_default(),
        }
    }

    /// What `input` would do to the saga now, without recording anything (a
    /// bulk repair's dry run).
    pub async fn preview(&self, saga_id: &str, input: &Input) -> Result<Decision, DriveError> {
        let state = self.state(saga_id).await?.1;
        Ok(decide(&state, input, self.store.clock().now())?)
    }

    /// A saga's projection row and its state replayed from the history.
    pub async fn state(
        &self,
        saga_id: &str,
    ) -> Result<(crate::store::entities::sagas::Model, SagaState), DriveError> {
        let (loaded, definition) = self.loaded(saga_id).await?;
        let state = replay(definition, &loaded.events);
        Ok((loaded.row, state))
    }

    /// A saga as stored, and the definition it runs.
    ///
    /// # Errors
    /// [`DriveError::UnknownSaga`], [`DriveError::UnknownDefinition`], store errors.
    pub async fn loaded(
        &self,
        saga_id: &str,
    ) -> Result<(Loaded, Arc<sagas::Definition>), DriveError> {
        let loaded = self
            .store
            .load(saga_id)
            .await?
            .ok_or_else(|| DriveError::UnknownSaga { saga_id: saga_id.to_owned() })?;
        // The version the saga runs is the last one its history moved it to:
        // the row and the events are two reads, and a move may commit between
        // them, so the events (the snapshot decided on) say, not the row.
        let hash = loaded
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                sagas::machine::SagaEvent::DefinitionChanged { to_hash, .. } => Some(to_hash),
                _ => None,
            })
            .unwrap_or(&loaded.row.definition_hash)
            .clone();
        let definition = self
            .definition(&hash)
            .await
            .ok_or_else(|| DriveError::UnknownDefinition { saga_id: saga_id.to_owned(), hash })?;
        Ok((loaded, definition))
    }

    async fn recorded_repair(
        &self,
        saga_id: &str,
        action: &str,
        request_id: &str,
    ) -> Result<Option<RepairOutcome>, DriveError> {
        let Some(row) = self.store.repair(request_id).await? else {
            return Ok(None);
        };
        if row.saga_id != saga_id || row.action != action {
            return Err(DriveError::RequestReused {
                request_id: request_id.to_owned(),
                saga_id: row.saga_id,
                action: row.action,
            });
        }
        let mut done: RepairOutcome =
            serde_json::from_str(&row.response).map_err(|e| StoreError::Corrupt {
                saga_id: saga_id.to_owned(),
                seq: 0,
                message: format!("repair {request_id}: {e}"),
            })?;
        done.replayed = true;
        Ok(Some(done))
    }

    /// The definition with this hash, looking in the store when another
    /// instance (or the API) registered it after this one started.
    async fn definition(&self, hash: &str) -> Option<Arc<sagas::Definition>> {
        if let Some(d) = self.registry.by_hash(hash) {
            return Some(d);
        }
        if let Err(e) = self.registry.refresh(&self.store).await {
            tracing::warn!(error = %e, "cannot refresh definitions from the store");
        }
        self.registry.by_hash(hash)
    }

    /// A saga as stored: its projection's identity, seq, replayed state and history.
    async fn load_current(&self, saga_id: &str) -> Result<Cached, DriveError> {
        let (loaded, definition) = self.loaded(saga_id).await?;
        let row = loaded.row;
        // An epoch no lease ever has: such an entry is never cached.
        let epoch = self.epoch_of(row.partition).unwrap_or(-1);
        // The row and the events are two reads: an append may commit between
        // them. The events (one read, seq 1..n asserted) are the snapshot the
        // decision is made on, so their count is the seq it is guarded by.
        let seq = loaded.events.len() as i64;
        Ok(Cached {
            identity: Projection {
                saga_type: row.saga_type,
                definition_hash: definition.hash.clone(),
                partition: row.partition,
                idempotency_key: row.idempotency_key,
                input_hash: row.input_hash,
                ..project(&SagaState::new(definition.clone()))
            },
            epoch,
            seq,
            state: replay(definition, &loaded.events),
            history: loaded.events,
        })
    }

    async fn drive(
        &self,
        saga_id: &str,
        input: &Input,
        ticket: Option<RepairTicket<'_>>,
        sender: Option<&str>,
    ) -> Result<(Decision, String), DriveError> {
        // Replies and timeouts are the owner's work and may start from its
        // cache; starts and repairs (any instance) always read the store.
        let owner_input = matches!(input, Input::Reply(_) | Input::Timeout);
        let mut cached =
            if owner_input { self.cache.take(saga_id, |p| self.epoch_of(p)) } else { None };
        for _ in 0..CONFLICT_RETRIES_MAX {
            let from_cache = cached.is_some();
            let current = match cached.take() {
                Some(c) => c,
                None => self.load_current(saga_id).await?,
            };
            if let (Input::Reply(reply), Some(sender)) = (input, sender) {
                // A saga's steps and their participants never change: the
                // cached state answers as well as the stored one.
                match current.state.addressee(&reply.command_id) {
                    Some(addressee) if addressee != sender => {
                        return Err(DriveError::WrongSender {
                            command_id: reply.command_id.clone(),
                            sender: sender.to_owned(),
                            addressee: addressee.to_owned(),
                        });
                    }
                    _ => {}
                }
            }
            let partition = current.identity.partition;
            // Replies and timeouts are the owner's work: written under its
            // fence. Starts and operators' repairs may come through any
            // instance; the seq guard orders them with the owner's writes.
            let fence = match input {
                Input::Reply(_) | Input::Timeout => self
                    .ownership
                    .fence(partition)
                    .map_err(|e| DriveError::NotOwner { partition: e.partition })?,
                Input::Start { .. }
                | Input::Operator(_)
                | Input::Migrate { .. }
                | Input::Signal(_) => None,
            };
            let decision = match decide(&current.state, input, self.store.clock().now()) {
                Ok(d) => d,
                // The cached state may be behind the store (another instance
                // wrote): only the stored history may refuse an input.
                Err(_) if from_cache => continue,
                Err(e) => return Err(e.into()),
            };
            if decision.events.is_empty() {
                if from_cache {
                    // Absorbed by the cache: confirm on the stored history.
                    continue;
                }
                let status = current.state.status.as_str().to_owned();
                if owner_input {
                    self.remember(saga_id, current);
                }
                return Ok((decision, status));
            }
            let observed =
                metrics::step_observations(&current.state, &current.history, input, &decision);
            let Cached { mut identity, epoch, seq, state, mut history } = current;
            let (after, tags) = match input {
                Input::Migrate { to, .. } => {
                    // From here on the history is replayed under the new
                    // version (which may have more steps than the old), and
                    // its tags replace the old, so lists, filters and the
                    // end's announcement agree.
                    identity.definition_hash.clone_from(&to.hash);
                    let after = replay(to.clone(), history.iter().chain(&decision.events));
                    let tags = to.render_tags(saga_id, &after.input);
                    (after, Some(tags))
                }
                _ => (fold(state, &decision), None),
            };
            let status = after.status.as_str().to_owned();
            let projection = Projection { tags, ..with_identity(&identity, &after) };
            let record = ticket.as_ref().map(|t| RepairRecord {
                request_id: t.request_id.to_owned(),
                action: t.action.to_owned(),
                requested_by: t.by.to_owned(),
                response: serde_json::to_string(&RepairOutcome {
                    saga_id: saga_id.to_owned(),
                    action: t.action.to_owned(),
                    status: status.clone(),
                    events: decision.events.iter().map(|e| e.name().to_owned()).collect(),
                    replayed: false,
                })
                .unwrap_or_default(),
            });
            let guards = Guards { repair: record.as_ref(), fence: fence.as_ref() };
            match self.persist(saga_id, seq, &after, &decision, &projection, guards).await {
                Ok(()) => {
                    self.metrics.steps_observed(&observed);
                    history.extend(decision.events.iter().cloned());
                    let seq = seq + decision.events.len() as i64;
                    self.remember(saga_id, Cached { identity, epoch, seq, state: after, history });
                    return Ok((decision, status));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::Fenced { partition, epoch }) => {
                    // Deposed: stop driving the partition; the new owner has it.
                    self.metrics.stale_write_rejected();
                    if self.ownership.lose(partition, epoch) {
                        tracing::warn!(partition, epoch, "write rejected: partition taken over");
                    }
                    self.cache.forget_partition(partition);
                    return Err(DriveError::Store(StoreError::Fenced { partition, epoch }));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(DriveError::Contended { saga_id: saga_id.to_owned() })
    }

    async fn persist(
        &self,
        saga_id: &str,
        expected_seq: i64,
        after: &SagaState,
        decision: &Decision,
        projection: &Projection,
        guards: Guards<'_>,
    ) -> Result<(), StoreError> {
        let partition = u32::try_from(projection.partition).unwrap_or(0);
        let mut outbox: Vec<OutboxRow> = decision
            .commands
            .iter()
            .map(|c| self.outbox_row(c, saga_id, &after.definition.name, partition))
            .collect();
        if decision.events.iter().any(sagas::machine::SagaEvent::is_terminal) {
            outbox.push(self.ended_row(saga_id, after));
        }
        self.store
            .append(Append {
                saga_id,
                expected_seq,
                events: &decision.events,
                projection,
                outbox: &outbox,
                now_ms: clock::to_db(self.store.clock().now()),
                repair: guards.repair,
                fence: guards.fence,
            })
            .await?;
        self.metrics.decision_persisted(&projection.saga_type, decision);
        // The writer handed the commands to the relay; deadlines wake the
        // timer loop only when they come before its next look.
        if let Some(at) = decision.next_deadline {
            self.bell.deadline_set(clock::to_db(at));
        }
        if after.status.is_end() {
            self.endings.ended(saga_id, || after.outcome());
            if let Some(tx) = &self.ended {
                let _ = tx.send(saga_id.to_owned());
            }
        }
        Ok(())
    }
}
