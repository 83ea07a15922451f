//! The participant: its handlers, and the loop that feeds them commands.
//!
//! `run` migrates the inbox table, makes sure the streams and the durable
//! consumer exist, then pulls commands in batches no larger than the free
//! in-flight slots, handling each in its own task. On shutdown it lets the
//! pull in progress run out (at most a second), stops pulling, lets in-flight
//! commands finish (for at most the shutdown grace), and returns.

use crate::config::{COMMIT_GROUP_MAX_LIMIT, Config, IN_FLIGHT_MAX_LIMIT};
use crate::error::SdkError;
use crate::execute::{Engine, Handlers};
use crate::handler::Handler;
use crate::inbox;
use crate::inspect::{self, Inspector};
use crate::process::{Busy, Delivered, Worker};
use crate::tx::Db;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use sagas::definition::limits::NAME_LEN_MAX;
use sagas::protocol::Kind;
use skald_transport::{Delivery, consumers, streams};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Most commands asked of JetStream in one pull.
const FETCH_BATCH_MAX: usize = 64;
/// How long one pull waits for commands before it is renewed. Short, because
/// on shutdown the last pull is drained until it expires: JetStream would
/// otherwise keep delivering into a pull nobody reads any more, and those
/// commands would wait out the ack wait before going to another replica.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);
/// Pause after a failed pull, doubled per failure up to [`FETCH_RETRY_MAX`].
const FETCH_RETRY_MIN: Duration = Duration::from_millis(100);
const FETCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// A participant service: a name, and a handler per action and compensation.
///
/// See the [crate documentation](crate) for an example.
pub struct Participant {
    name: String,
    handlers: Handlers,
    inspector: Option<Arc<dyn Inspector>>,
    problems: Vec<String>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> =
            self.handlers.keys().map(|(kind, name)| format!("{kind}:{name}")).collect();
        names.sort();
        f.debug_struct("Participant").field("name", &self.name).field("handlers", &names).finish()
    }
}

impl Participant {
    /// A participant named `name`: the `participant` of the saga steps it
    /// serves, a NATS subject token (letters, digits, `_`, `-`).
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let mut problems = Vec::new();
        check_token(&mut problems, "participant name", &name);
        Self { name, handlers: Handlers::new(), inspector: None, problems }
    }

    /// Handle the `do` of steps whose `action` is `name`.
    #[must_use]
    pub fn action(self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.register(Kind::Do, name.into(), Arc::new(handler))
    }

    /// Handle the `undo` of steps whose `compensation` is `name`.
    #[must_use]
    pub fn compensation(self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.register(Kind::Undo, name.into(), Arc::new(handler))
    }

    fn register(mut self, kind: Kind, name: String, handler: Arc<dyn Handler>) -> Self {
        let what = match kind {
            Kind::Do => "action",
            Kind::Undo => "compensation",
        };
        check_token(&mut self.problems, what, &name);
        if self.handlers.insert((kind, name.clone()), handler).is_some() {
            self.problems.push(format!("{what} `{name}` is registered twice"));
        }
        self
    }

    /// Describe the effects this participant's commands left when the
    /// orchestrator audits a saga (see [`crate::inspect`]). Without one, an
    /// inspection is answered from the inbox alone.
    #[must_use]
    pub fn inspector(mut self, inspector: impl Inspector) -> Self {
        self.inspector = Some(Arc::new(inspector));
        self
    }

    /// The participant's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Refuse an invalid participant: a bad name, a handler registered
    /// twice, none at all, or one of the caller's `more` problems.
    fn check(&self, more: Vec<String>) -> Result<(), SdkError> {
        let mut problems = self.problems.clone();
        if self.handlers.is_empty() {
            problems.push("no action or compensation is registered".into());
        }
        problems.extend(more);
        if problems.is_empty() {
            return Ok(());
        }
        Err(SdkError::Invalid { participant: self.name.clone(), problems })
    }

    /// This participant without a bus: commands are handed to
    /// [`Local::answer`] in process and answered with the same inbox,
    /// tombstones and handlers as [`Participant::run`] (for a simulation or
    /// a test that is its own transport), one at a time (no group commit)
    /// and with the default panic-retry limit. The inbox's tables are
    /// migrated on `db` first.
    ///
    /// # Errors
    /// An invalid participant, or a database that refuses the migration.
    pub async fn local(self, db: sea_orm::DatabaseConnection) -> Result<Local, SdkError> {
        self.check(Vec::new())?;
        inbox::migration::migrate(&db).await.map_err(SdkError::Migrate)?;
        Ok(Local {
            engine: Engine {
                participant: self.name,
                db: Db::new(db, 1, Arc::default()),
                lookups: None,
                handlers: self.handlers,
                panic_retries_max: crate::config::PANIC_RETRIES_MAX_DEFAULT,
                crash_after_commit: None,
            },
        })
    }

    /// Handle commands until `shutdown` is cancelled, then finish the commands
    /// in flight and return.
    ///
    /// # Errors
    /// Only at start-up: an invalid participant or config, a database that
    /// refuses the inbox migration, or JetStream refusing the streams or the
    /// consumer. Once running, problems with single commands are logged and the
    /// commands redelivered; they never end the participant.
    pub async fn run(self, config: Config, shutdown: CancellationToken) -> Result<(), SdkError> {
        let mut problems = Vec::new();
        if !(1..=IN_FLIGHT_MAX_LIMIT).contains(&config.in_flight_max) {
            problems.push(format!(
                "in_flight_max is {}, it must be 1..={IN_FLIGHT_MAX_LIMIT}",
                config.in_flight_max
            ));
        }
        if !(1..=COMMIT_GROUP_MAX_LIMIT).contains(&config.commit_group_max) {
            problems.push(format!(
                "commit_group_max is {}, it must be 1..={COMMIT_GROUP_MAX_LIMIT}",
                config.commit_group_max
            ));
        }
        self.check(problems)?;

        inbox::migration::migrate(&config.db).await.map_err(SdkError::Migrate)?;
        let js = jetstream::new(config.nats.clone());
        let source = match config.delivery {
            Delivery::JetStream => {
                let Some(commands) = streams_when_ready(&js, &config.namespace, &shutdown).await?
                else {
                    return Ok(());
                };
                let consumer =
                    consumers::participant_consumer(&commands, &config.namespace, &self.name)
                        .await?;
                info!(
                    participant = %self.name,
                    stream = %config.namespace.commands_stream(),
                    in_flight_max = config.in_flight_max,
                    "participant running"
                );
                Source::Stream(consumer)
            }
            Delivery::Direct => {
                let subject =
                    config.namespace.direct(&config.namespace.participant_filter(&self.name));
                // Replicas share one queue group: each command reaches one of them.
                let commands = config
                    .nats
                    .queue_subscribe(subject.clone(), self.name.clone())
                    .await
                    .map_err(|e| SdkError::Subscribe(e.to_string()))?;
                info!(
                    participant = %self.name,
                    %subject,
                    in_flight_max = config.in_flight_max,
                    "participant running (direct delivery)"
                );
                Source::Direct(commands)
            }
        };

        let inspections = tokio::spawn(inspect::serve(
            config.nats.clone(),
            config.namespace.clone(),
            self.name.clone(),
            config.db.clone(),
            self.inspector,
            shutdown.clone(),
        ));
        let worker = Arc::new(Worker {
            engine: Engine {
                participant: self.name.clone(),
                db: Db::new(
                    config.db.clone(),
                    config.commit_group_max,
                    Arc::clone(&config.commits),
                ),
                lookups: Some(inbox::Lookups::start(config.db.clone())),
                handlers: self.handlers,
                panic_retries_max: config.panic_retries_max,
                crash_after_commit: config.crash_after_commit.clone(),
            },
            js,
            namespace: config.namespace.clone(),
            redelivery_delay: config.redelivery_delay,
            busy: Busy::default(),
        });
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        match source {
            Source::Stream(consumer) => {
                pull_loop(&consumer, &worker, &tracker, &abandon, config.in_flight_max, &shutdown)
                    .await;
            }
            Source::Direct(commands) => {
                direct_loop(commands, &worker, &tracker, &abandon, config.in_flight_max, &shutdown)
                    .await;
            }
        }

        tracker.close();
        info!(participant = %self.name, in_flight = tracker.len(), "stopping: draining in-flight commands");
        tokio::select! {
            // Cancelled when the grace runs out first: the tasks are abandoned below.
            () = tracker.wait() => {}
            // Cancelled when every task finished in time.
            () = tokio::time::sleep(config.shutdown_grace) => {
                warn!(
                    in_flight = tracker.len(),
                    grace_ms = config.shutdown_grace.as_millis(),
                    "shutdown grace spent: abandoning in-flight commands"
                );
                abandon.cancel();
                tracker.wait().await;
            }
        }
        match inspections.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "inspections were not answered: cannot subscribe"),
            Err(e) => warn!(error = %e, "answering inspections ended abnormally"),
        }
        info!(participant = %self.name, "participant stopped");
        Ok(())
    }
}

/// One of `slots`, once one is free; `None` on shutdown.
async fn free_slot(
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        // Cancelled on shutdown: waiting for a slot holds nothing.
        () = shutdown.cancelled() => None,
        // Cancelled on shutdown: no slot taken.
        slot = Arc::clone(slots).acquire_owned() => slot.ok(),
    }
}

/// Where commands come from.
enum Source {
    Stream(PullConsumer),
    Direct(async_nats::Subscriber),
}

/// Direct delivery: take commands as they arrive, at most `in_flight_max`
/// handled at once (the rest wait in the subscription; if it overflows,
/// NATS drops them and the orchestrator sends them again). On shutdown the
/// subscription is dropped: commands not taken are sent again to a replica
/// that runs.
async fn direct_loop(
    mut commands: async_nats::Subscriber,
    worker: &Arc<Worker>,
    tracker: &TaskTracker,
    abandon: &CancellationToken,
    in_flight_max: usize,
    shutdown: &CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(in_flight_max));
    loop {
        let Some(slot) = free_slot(&slots, shutdown).await else { break };
        let msg = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Cancelled on shutdown: a message not yet taken stays unhandled.
            msg = commands.next() => match msg {
                Some(msg) => msg,
                None => {
                    warn!("the command subscription ended; no more commands are taken");
                    break;
                }
            },
        };
        let worker = Arc::clone(worker);
        let abandon = abandon.clone();
        tracker.spawn(async move {
            let _slot = slot;
            worker.run(Delivered::Direct(msg), abandon).await;
        });
    }
    if let Err(e) = commands.unsubscribe().await {
        warn!(error = %e, "cannot unsubscribe from commands");
    }
}

/// Pull commands while there are free in-flight slots, until shutdown.
async fn pull_loop(
    consumer: &PullConsumer,
    worker: &Arc<Worker>,
    tracker: &TaskTracker,
    abandon: &CancellationToken,
    in_flight_max: usize,
    shutdown: &CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(in_flight_max));
    let mut retry_pause = FETCH_RETRY_MIN;
    while !shutdown.is_cancelled() {
        let Some(first) = free_slot(&slots, shutdown).await else { return };
        let mut held = vec![first];
        while held.len() < FETCH_BATCH_MAX {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => held.push(slot),
                Err(_) => break,
            }
        }

        // Not cancelled on shutdown: once the pull is sent, it is drained below.
        let pull = consumer.batch().max_messages(held.len()).expires(FETCH_EXPIRES).messages();
        let mut batch = match pull.await {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %e, pause_ms = retry_pause.as_millis(), "pulling commands failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry_pause) => {}
                }
                retry_pause = (retry_pause * 2).min(FETCH_RETRY_MAX);
                continue;
            }
        };
        retry_pause = FETCH_RETRY_MIN;

        // Until JetStream ends the pull (all slots used or expired). A command
        // that arrives after shutdown is handled like any other in flight.
        while let Some(next) = batch.next().await {
            let msg = match next {
                Ok(msg) => msg,
                Err(e) => {
                    warn!(error = %e, "pull ended with an error; pulling again");
                    break;
                }
            };
            // A batch never brings more messages than slots were held for it.
            let slot = match held.pop() {
                Some(slot) => slot,
                None => match Arc::clone(&slots).acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let worker = Arc::clone(worker);
            let abandon = abandon.clone();
            tracker.spawn(async move {
                let _slot = slot;
                worker.run(Delivered::Stream(msg), abandon).await;
            });
        }
    }
}

/// A name that becomes a NATS subject token and a consumer name.
fn check_token(problems: &mut Vec<String>, what: &str, value: &str) {
    if value.is_empty() || value.len() > NAME_LEN_MAX {
        problems.push(format!("{what} `{value}` must be 1 to {NAME_LEN_MAX} characters"));
    } else if !sagas::protocol::is_subject_token(value) {
        problems.push(format!(
            "{what} `{value}` is not a safe NATS subject token: use only ASCII letters, \
             digits, `_` and `-`"
        ));
    }
}

/// How long a participant waits for the streams at start-up. On a secured bus
/// a participant may not create them: the orchestrator does, and may start later.
const STREAMS_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The commands stream, created if this identity may; else waited for (up to
/// [`STREAMS_WAIT_MAX`]) until the orchestrator has created it. `None` when
/// `shutdown` came first.
async fn streams_when_ready(
    js: &jetstream::Context,
    ns: &sagas::protocol::Namespace,
    shutdown: &CancellationToken,
) -> Result<Option<jetstream::stream::Stream>, SdkError> {
    let deadline = tokio::time::Instant::now() + STREAMS_WAIT_MAX;
    let mut said = false;
    loop {
        match streams::ensure_streams(js, ns).await {
            Ok((commands, _replies)) => return Ok(Some(commands)),
            Err(e) if tokio::time::Instant::now() < deadline => {
                if !said {
                    tracing::warn!(
                        error = %e,
                        "the streams are not there and cannot be created by this identity yet; \
                         waiting for the orchestrator to create them"
                    );
                    said = true;
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

/// A participant answering commands handed to it in process (see
/// [`Participant::local`]).
pub struct Local {
    engine: Engine,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").field("participant", &self.engine.participant).finish()
    }
}

impl Local {
    /// The answer to `command`, delivered for the `delivered`-th time (what
    /// JetStream would count): the stored one for a command answered
    /// before; `None` when the handler chose not to answer.
    ///
    /// # Errors
    /// A database error: nothing was committed, and the command may be
    /// handed in again.
    pub async fn answer(
        &self,
        command: &sagas::protocol::Command,
        delivered: u32,
    ) -> Result<Option<sagas::protocol::Outcome>, sea_orm::DbErr> {
        Ok(match crate::execute::execute(&self.engine, command, delivered).await? {
            crate::execute::Answer::Reply(outcome) => Some(outcome),
            crate::execute::Answer::Silent => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HandlerResult;
    use crate::handler::HandlerCtx;

    async fn noop(_ctx: HandlerCtx<'_>) -> HandlerResult {
        Ok(serde_json::Value::Null)
    }

    #[test]
    fn bad_names_and_duplicates_are_collected() {
        let p = Participant::new("led.ger")
            .action("hold", noop)
            .action("hold", noop)
            .compensation("", noop)
            .compensation("hold", noop);
        assert_eq!(p.problems.len(), 3, "{:?}", p.problems);
        assert!(p.problems[0].contains("participant name `led.ger`"));
        assert!(p.problems[1].contains("registered twice"));
        assert!(p.problems[2].contains("compensation ``"));
    }
}
