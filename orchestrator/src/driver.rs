//! The driver: load → replay → decide → append. The only place where the pure
//! machine and I/O meet.
//!
//! Every input for a saga (start, reply, timeout, operator action) goes through
//! [`Driver::handle`] or [`Driver::start`]. A concurrent append to the same saga
//! shows up as [`StoreError::Conflict`]; the driver then reloads and decides
//! again, a bounded number of times.

use crate::clock;
use crate::registry::Registry;
use crate::store::{Append, OutboxRow, Projection, Store, StoreError};
use sagas::hash::partition_of;
use sagas::machine::{Decision, Input, SagaState, TransitionError, decide, replay};
use sagas::protocol::Namespace;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// How often one input is re-decided after concurrent appends before giving up.
pub const CONFLICT_RETRIES_MAX: u32 = 16;
/// Longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("saga {saga_id} does not exist")]
    UnknownSaga { saga_id: String },
    #[error("saga {saga_id} uses definition {hash}, which this orchestrator does not know")]
    UnknownDefinition { saga_id: String, hash: String },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("saga {saga_id} kept changing under {CONFLICT_RETRIES_MAX} attempts to update it")]
    Contended { saga_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a start was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unknown saga type `{saga_type}`; known types: {known}")]
    UnknownType { saga_type: String, known: String },
    #[error("the idempotency key must be 1-{IDEMPOTENCY_KEY_LEN_MAX} characters")]
    BadKey,
    #[error("the input does not match the schema of `{saga_type}`")]
    InvalidInput { saga_type: String, errors: Vec<String> },
    #[error(
        "idempotency key `{key}` was already used for saga {saga_id} with a different input; use a new key for a new saga"
    )]
    Conflict { key: String, saga_id: String },
    #[error(transparent)]
    Drive(#[from] DriveError),
}

impl StartError {
    /// The protocol's refusal code for this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownType { .. } => "unknown_type",
            Self::BadKey => "bad_request",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Conflict { .. } => "conflict",
            Self::Drive(_) => "unavailable",
        }
    }
}

/// A start that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    New { saga_id: String },
    Existing { saga_id: String },
}

impl Started {
    #[must_use]
    pub fn saga_id(&self) -> &str {
        match self {
            Self::New { saga_id } | Self::Existing { saga_id } => saga_id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Driver {
    store: Store,
    registry: Arc<Registry>,
    ns: Namespace,
    partitions: u32,
    /// Woken after every append that enqueued commands.
    pub relay_wake: Arc<Notify>,
    /// Woken after every append that set a deadline.
    pub timer_wake: Arc<Notify>,
    /// Told the id of every saga that reaches an end state (benchmarks, tests).
    ended: Option<mpsc::UnboundedSender<String>>,
}

impl Driver {
    #[must_use]
    pub fn new(store: Store, registry: Arc<Registry>, ns: Namespace, partitions: u32) -> Self {
        Self {
            store,
            registry,
            ns,
            partitions: partitions.max(1),
            relay_wake: Arc::new(Notify::new()),
            timer_wake: Arc::new(Notify::new()),
            ended: None,
        }
    }

    /// Report every saga that reaches an end state (completed, compensated,
    /// failed or parked) on `tx`.
    #[must_use]
    pub fn with_end_listener(mut self, tx: mpsc::UnboundedSender<String>) -> Self {
        self.ended = Some(tx);
        self
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
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
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
            return Err(StartError::BadKey);
        }
        let definition =
            self.registry.newest(saga_type).ok_or_else(|| StartError::UnknownType {
                saga_type: saga_type.to_owned(),
                known: self.registry.names().join(", "),
            })?;
        let input_hash = hash_json(input);
        let existing = |row: crate::store::entities::sagas::Model| {
            if row.input_hash == input_hash {
                Ok(Started::Existing { saga_id: row.saga_id })
            } else {
                Err(StartError::Conflict { key: key.to_owned(), saga_id: row.saga_id })
            }
        };
        if let Some(row) = self.store.find_by_key(saga_type, key).await.map_err(DriveError::from)? {
            return existing(row);
        }
        let saga_id = uuid::Uuid::now_v7().to_string();
        let state = SagaState::new(definition.clone());
        let now = clock::now();
        let input = Input::Start { saga_id: saga_id.clone(), input: input.clone() };
        let decision = decide(&state, &input, now).map_err(|e| match e {
            TransitionError::InvalidInput { errors, .. } => {
                StartError::InvalidInput { saga_type: saga_type.to_owned(), errors }
            }
            other => StartError::Drive(other.into()),
        })?;
        let after = fold(state, &decision);
        let projection = Projection {
            saga_type: saga_type.to_owned(),
            definition_hash: definition.hash.clone(),
            partition: i32::try_from(self.partition_of(&saga_id)).unwrap_or(0),
            idempotency_key: key.to_owned(),
            input_hash: input_hash.clone(),
            ..project(&after)
        };
        match self.persist(&saga_id, 0, &after, &decision, &projection).await {
            Ok(()) => Ok(Started::New { saga_id }),
            Err(StoreError::DuplicateKey { .. }) => {
                // Another start with the same key won the race.
                match self.store.find_by_key(saga_type, key).await.map_err(DriveError::from)? {
                    Some(row) => existing(row),
                    None => Err(StartError::Drive(DriveError::Contended { saga_id })),
                }
            }
            Err(e) => Err(StartError::Drive(e.into())),
        }
    }

    /// Feed one input to a saga and persist what the machine decides.
    pub async fn handle(&self, saga_id: &str, input: &Input) -> Result<Decision, DriveError> {
        for _ in 0..CONFLICT_RETRIES_MAX {
            let loaded = self
                .store
                .load(saga_id)
                .await?
                .ok_or_else(|| DriveError::UnknownSaga { saga_id: saga_id.to_owned() })?;
            let definition =
                self.registry.by_hash(&loaded.row.definition_hash).ok_or_else(|| {
                    DriveError::UnknownDefinition {
                        saga_id: saga_id.to_owned(),
                        hash: loaded.row.definition_hash.clone(),
                    }
                })?;
            let state = replay(definition, &loaded.events);
            let decision = decide(&state, input, clock::now())?;
            if decision.events.is_empty() {
                return Ok(decision);
            }
            let after = fold(state, &decision);
            let projection = Projection {
                saga_type: loaded.row.saga_type.clone(),
                definition_hash: loaded.row.definition_hash.clone(),
                partition: loaded.row.partition,
                idempotency_key: loaded.row.idempotency_key.clone(),
                input_hash: loaded.row.input_hash.clone(),
                ..project(&after)
            };
            match self.persist(saga_id, loaded.row.seq, &after, &decision, &projection).await {
                Ok(()) => return Ok(decision),
                Err(StoreError::Conflict { .. }) => continue,
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
    ) -> Result<(), StoreError> {
        let partition = u32::try_from(projection.partition).unwrap_or(0);
        let reply_subject = self.ns.reply_subject(partition);
        let outbox: Vec<OutboxRow> = decision
            .commands
            .iter()
            .map(|c| OutboxRow {
                subject: c.subject(&self.ns),
                msg_id: c.msg_id(),
                body: serde_json::to_string(&c.to_wire(
                    saga_id,
                    &after.definition.name,
                    &reply_subject,
                ))
                .unwrap_or_default(),
            })
            .collect();
        self.store
            .append(Append {
                saga_id,
                expected_seq,
                events: &decision.events,
                projection,
                outbox: &outbox,
                now_ms: clock::to_db(clock::now()),
            })
            .await?;
        if !outbox.is_empty() {
            self.relay_wake.notify_one();
        }
        if decision.next_deadline.is_some() {
            self.timer_wake.notify_one();
        }
        if let Some(tx) = &self.ended
            && after.status.is_end()
        {
            let _ = tx.send(saga_id.to_owned());
        }
        Ok(())
    }
}

fn fold(mut state: SagaState, decision: &Decision) -> SagaState {
    for e in &decision.events {
        state.apply(e);
    }
    state
}

/// The projection columns derived from a state (identity columns left empty).
fn project(state: &SagaState) -> Projection {
    let current = state.current();
    let last_error = state
        .park
        .as_ref()
        .map(|p| format!("{}: {}", p.reason.as_str(), p.message))
        .or_else(|| {
            current.and_then(|(i, kind)| {
                state.steps[i].progress(kind).last_error.as_ref().map(|(c, m)| format!("{c}: {m}"))
            })
        });
    Projection {
        saga_type: String::new(),
        definition_hash: String::new(),
        status: state.status.as_str().to_owned(),
        current_step: current.map(|(i, _)| state.step_def(i).name.clone()),
        partition: 0,
        idempotency_key: String::new(),
        input_hash: String::new(),
        next_deadline_ms: state.next_deadline().map(clock::to_db),
        last_error,
    }
}

/// Hex SHA-256 of a JSON value's canonical text (object keys sorted).
fn hash_json(v: &Value) -> String {
    let text = serde_json::to_string(&canonical(v)).unwrap_or_default();
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The value with every object's keys in sorted order, whatever map type
/// serde_json was built with (its `preserve_order` feature keeps insertion order).
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_hash_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[{"q":1,"p":2}]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[{"p":2,"q":1}],"y":2},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":[{"p":2,"q":1}],"y":3},"b":1}"#).unwrap();
        assert_eq!(hash_json(&a), hash_json(&b));
        assert_ne!(hash_json(&a), hash_json(&c));
    }
}
