//! Test harness: a private namespace on the test NATS server with the
//! orchestrator's side of the wire, and a private database (both from the
//! test kit), participants run in-process. Everything is removed when the
//! harness is dropped.
//!
//! NATS: `SKALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`, JetStream on).
//! PostgreSQL: `SKALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), used to create and drop databases.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_nats::HeaderMap;
use sagas::protocol::{Command, HEADER_MSG_ID, HEADER_TRACEPARENT, Reply};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, Statement};
use skald_participant::{Config, Participant, SdkError, inbox, streams};
use skald_testkit::{OrchestratorSide, Service, TempDatabase};
use std::time::Duration;

/// The participant name every test uses (each test has its own namespace).
pub const NAME: &str = "p";
/// How long a participant may take to stop: its shutdown grace and a margin.
const STOP_WITHIN: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// SQLite with group commit (`Config::commit_group_max` 16).
    SqliteGrouped,
}

impl Backend {
    fn database(self) -> skald_testkit::Backend {
        match self {
            Self::Sqlite | Self::SqliteGrouped => skald_testkit::Backend::Sqlite,
            Self::Postgres => skald_testkit::Backend::Postgres,
        }
    }
}

pub struct Harness {
    pub backend: Backend,
    /// Participants running, stopped (cancelled) first on drop.
    running: Vec<Service<SdkError>>,
    pub wire: OrchestratorSide,
    pub db: DatabaseConnection,
    database: TempDatabase,
}

impl Harness {
    pub async fn new(backend: Backend) -> Self {
        let wire = OrchestratorSide::open(NAME, streams::ensure_streams).await.unwrap();
        let database = TempDatabase::new(backend.database()).await.unwrap();
        let db = database.connect().await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE effects (command_id TEXT NOT NULL, note TEXT NOT NULL)",
        )
        .await
        .unwrap();
        Self { backend, running: Vec::new(), wire, db, database }
    }

    /// A second, separate connection pool to the same database (another replica).
    pub async fn connect_again(&self) -> DatabaseConnection {
        self.database.connect().await.unwrap()
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(self.wire.nats.clone(), self.wire.ns.clone(), self.db.clone());
        config.redelivery_delay = Duration::from_millis(200);
        config.delivery = OrchestratorSide::DELIVERY;
        if self.backend == Backend::SqliteGrouped {
            config.commit_group_max = 16;
        }
        config
    }

    /// Run a participant until [`Harness::stop`].
    pub fn start(&mut self, participant: Participant, config: Config) {
        self.running.push(Service::spawn(|token| participant.run(config, token)));
    }

    /// Stop every participant and check that each returned cleanly.
    pub async fn stop(&mut self) {
        for service in &self.running {
            service.cancel();
        }
        for service in self.running.drain(..) {
            service.stop(STOP_WITHIN).await.expect("the participant stops cleanly");
        }
    }

    /// The `traceparent` every command carries (W3C trace context).
    pub const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// Publish a command as the orchestrator does, with a trace context.
    pub async fn send(&self, command: &Command) {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_TRACEPARENT, Self::TRACEPARENT);
        self.wire.send_with(command, headers).await;
    }

    /// The next reply and its `Nats-Msg-Id` and `traceparent` headers.
    pub async fn reply_with_headers(&mut self) -> (Reply, String, String) {
        let msg = self.wire.reply_message().await;
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let (id, traceparent) = (header(HEADER_MSG_ID), header(HEADER_TRACEPARENT));
        (serde_json::from_slice(&msg.payload).unwrap(), id, traceparent)
    }

    pub async fn inbox_row(&self, command_id: &str) -> Option<inbox::Model> {
        inbox::Entity::find_by_id(command_id.to_owned()).one(&self.db).await.unwrap()
    }

    /// Effects the handlers wrote for one command.
    pub async fn effects(&self, command_id: &str) -> i64 {
        self.count("SELECT COUNT(*) AS n FROM effects WHERE command_id = ", Some(command_id)).await
    }

    pub async fn all_effects(&self) -> i64 {
        self.count("SELECT COUNT(*) AS n FROM effects", None).await
    }

    async fn count(&self, sql: &str, arg: Option<&str>) -> i64 {
        #[derive(FromQueryResult)]
        struct N {
            n: i64,
        }
        let backend = self.db.get_database_backend();
        let stmt = match arg {
            Some(a) => Statement::from_sql_and_values(
                backend,
                format!("{sql}{}", if self.backend == Backend::Postgres { "$1" } else { "?" }),
                [a.into()],
            ),
            None => Statement::from_string(backend, sql.to_owned()),
        };
        N::find_by_statement(stmt).one(&self.db).await.unwrap().unwrap().n
    }

    /// Wait until `replicas` participants are pulling (each keeps a pull
    /// request waiting on the consumer while idle).
    pub async fn wait_for_pullers(&mut self, replicas: usize) {
        let stream = self.wire.js.get_stream(self.wire.ns.commands_stream()).await.unwrap();
        for _ in 0..200 {
            // The consumer exists once the first participant has started.
            if let Ok(info) = stream.consumer_info(NAME).await
                && info.num_waiting >= replicas
            {
                return;
            }
            if let Some(i) = self.running.iter().position(Service::is_finished) {
                let service = self.running.remove(i);
                panic!("a participant stopped at start-up: {:?}", service.join().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{replicas} replicas did not start pulling within 10 s");
    }
}

/// Write one effect row in the SDK's transaction (what a real handler does).
pub async fn write_effect(
    ctx: &skald_participant::HandlerCtx<'_>,
    note: &str,
) -> Result<(), skald_participant::HandlerError> {
    let tx = ctx.tx().await?;
    tx.execute(effect(tx.get_database_backend(), &ctx.command().command_id, note)).await?;
    Ok(())
}

/// The insert of one effect row of `command_id`, noted `note`.
pub fn effect(backend: sea_orm::DbBackend, command_id: &str, note: &str) -> Statement {
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "INSERT INTO effects (command_id, note) VALUES ($1, $2)",
        _ => "INSERT INTO effects (command_id, note) VALUES (?, ?)",
    };
    Statement::from_sql_and_values(backend, sql, [command_id.into(), note.into()])
}
