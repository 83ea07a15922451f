//! Test harness: a private namespace on the real NATS server, a private
//! database (a temp SQLite file, or a fresh PostgreSQL database), participants
//! run in-process, and a consumer on the replies stream playing orchestrator.
//! Everything is removed when the harness is dropped.
//!
//! NATS: `SKALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`, JetStream on).
//! PostgreSQL: `SKALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), used to create and drop databases.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use futures::StreamExt;
use sagas::UnixMillis;
use sagas::protocol::{
    Command, HEADER_MSG_ID, HEADER_TRACEPARENT, Kind, Namespace, Reply, command_id, msg_id,
};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, EntityTrait, FromQueryResult, Statement,
};
use skald_participant::{Config, Participant, SdkError, inbox, streams};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The participant name every test uses (each test has its own namespace).
pub const NAME: &str = "p";
/// How long a test waits for a reply before it fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// SQLite with group commit (`Config::commit_group_max` 16).
    SqliteGrouped,
}

fn nats_url() -> String {
    std::env::var("SKALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn postgres_admin_url() -> String {
    std::env::var("SKALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// What to remove at the end.
struct Cleanup {
    namespace: Namespace,
    database: TestDb,
}

enum TestDb {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

pub struct Harness {
    pub backend: Backend,
    pub ns: Namespace,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub db: DatabaseConnection,
    db_url: String,
    replies: pull::Stream,
    running: Vec<(CancellationToken, JoinHandle<Result<(), SdkError>>)>,
    cleanup: Option<Cleanup>,
}

impl Harness {
    pub async fn new(backend: Backend) -> Self {
        let ns = Namespace::new(&format!("t{}", random_hex())).unwrap();
        let nats = async_nats::connect(nats_url()).await.expect("NATS must run at 127.0.0.1:4222");
        let js = jetstream::new(nats.clone());
        let (_, replies_stream) = streams::ensure_streams(&js, &ns).await.unwrap();
        let replies = replies_stream
            .get_or_create_consumer(
                "test",
                pull::Config {
                    durable_name: Some("test".into()),
                    filter_subject: format!("{}.reply.>", ns.prefix()),
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .messages()
            .await
            .unwrap();

        let (db_url, database) = match backend {
            Backend::Sqlite | Backend::SqliteGrouped => {
                let path = std::env::temp_dir().join(format!("skald-sdk-{}.db", random_hex()));
                (format!("sqlite://{}?mode=rwc", path.display()), TestDb::Sqlite(path))
            }
            Backend::Postgres => {
                let name = format!("sdk_{}", random_hex());
                let admin = Database::connect(postgres_admin_url()).await.unwrap();
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
                admin.close().await.unwrap();
                let base = postgres_admin_url();
                let server = &base[..base.rfind('/').unwrap()];
                (format!("{server}/{name}"), TestDb::Postgres(name))
            }
        };
        let cleanup = Some(Cleanup { namespace: ns.clone(), database });
        let db = Database::connect(&db_url).await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE effects (command_id TEXT NOT NULL, note TEXT NOT NULL)",
        )
        .await
        .unwrap();
        Self { backend, ns, nats, js, db, db_url, replies, running: Vec::new(), cleanup }
    }

    /// A second, separate connection pool to the same database (another replica).
    pub async fn connect_again(&self) -> DatabaseConnection {
        Database::connect(&self.db_url).await.unwrap()
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(self.nats.clone(), self.ns.clone(), self.db.clone());
        config.redelivery_delay = Duration::from_millis(200);
        if self.backend == Backend::SqliteGrouped {
            config.commit_group_max = 16;
        }
        config
    }

    /// Run a participant until [`Harness::stop`].
    pub fn start(&mut self, participant: Participant, config: Config) {
        let token = CancellationToken::new();
        let handle = tokio::spawn(participant.run(config, token.clone()));
        self.running.push((token, handle));
    }

    /// Stop every participant and check that each returned cleanly.
    pub async fn stop(&mut self) {
        for (token, _) in &self.running {
            token.cancel();
        }
        for (_, handle) in self.running.drain(..) {
            tokio::time::timeout(Duration::from_secs(40), handle)
                .await
                .expect("participant stops within its shutdown grace")
                .unwrap()
                .unwrap();
        }
    }

    pub fn command(
        &self,
        saga: &str,
        step: &str,
        kind: Kind,
        action: &str,
        attempt: u32,
    ) -> Command {
        Command {
            command_id: command_id(saga, step, kind),
            saga_id: saga.into(),
            saga_type: "test".into(),
            step: step.into(),
            kind,
            action: action.into(),
            attempt,
            payload: serde_json::json!({ "saga": saga }),
            deadline_unix_ms: UnixMillis(u64::MAX / 2),
            reply_subject: self.ns.reply_subject(0),
        }
    }

    /// The `traceparent` every command carries (W3C trace context).
    pub const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// Publish a command as the orchestrator does.
    pub async fn send(&self, command: &Command) {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, msg_id(&command.command_id, command.attempt).as_str());
        headers.insert(HEADER_TRACEPARENT, Self::TRACEPARENT);
        let body = serde_json::to_vec(command).unwrap();
        let subject = self.ns.command_subject(NAME, &command.action);
        self.js.publish_with_headers(subject, headers, body.into()).await.unwrap().await.unwrap();
    }

    pub async fn send_raw(&self, action: &str, body: &[u8]) {
        let subject = self.ns.command_subject(NAME, action);
        self.js.publish(subject, body.to_vec().into()).await.unwrap().await.unwrap();
    }

    /// The next reply and its `Nats-Msg-Id` and `traceparent` headers.
    pub async fn reply_with_headers(&mut self) -> (Reply, String, String) {
        let msg = tokio::time::timeout(REPLY_TIMEOUT, self.replies.next())
            .await
            .expect("a reply within the timeout")
            .unwrap()
            .unwrap();
        msg.ack().await.unwrap();
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

    pub async fn reply(&mut self) -> Reply {
        self.reply_with_headers().await.0
    }

    /// True when no reply arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.replies.next()).await.is_err()
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
        let stream = self.js.get_stream(self.ns.commands_stream()).await.unwrap();
        for _ in 0..200 {
            // The consumer exists once the first participant has started.
            if let Ok(info) = stream.consumer_info(NAME).await
                && info.num_waiting >= replicas
            {
                return;
            }
            if let Some(i) = self.running.iter().position(|(_, handle)| handle.is_finished()) {
                let (_, handle) = self.running.remove(i);
                panic!("a participant stopped at start-up: {:?}", handle.await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{replicas} replicas did not start pulling within 10 s");
    }

    /// The participant's consumer as JetStream sees it.
    pub async fn consumer_info(&self) -> jetstream::consumer::Info {
        self.js
            .get_stream(self.ns.commands_stream())
            .await
            .unwrap()
            .consumer_info(NAME)
            .await
            .unwrap()
    }
}

/// Write one effect row in the SDK's transaction (what a real handler does).
pub async fn write_effect(
    ctx: &skald_participant::HandlerCtx<'_>,
    note: &str,
) -> Result<(), skald_participant::HandlerError> {
    let tx = ctx.tx().await?;
    let backend = tx.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "INSERT INTO effects (command_id, note) VALUES ($1, $2)",
        _ => "INSERT INTO effects (command_id, note) VALUES (?, ?)",
    };
    tx.execute(Statement::from_sql_and_values(
        backend,
        sql,
        [ctx.command().command_id.clone().into(), note.into()],
    ))
    .await?;
    Ok(())
}

impl Drop for Harness {
    fn drop(&mut self) {
        for (token, _) in &self.running {
            token.cancel();
        }
        let Some(cleanup) = self.cleanup.take() else { return };
        // Async clean-up on a thread of its own: Drop cannot await.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(nats) = async_nats::connect(nats_url()).await {
                    let js = jetstream::new(nats);
                    let _ = js.delete_stream(cleanup.namespace.commands_stream()).await;
                    let _ = js.delete_stream(cleanup.namespace.replies_stream()).await;
                }
                match cleanup.database {
                    TestDb::Sqlite(path) => {
                        for suffix in ["", "-wal", "-shm", "-journal"] {
                            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                        }
                    }
                    TestDb::Postgres(name) => {
                        if let Ok(admin) = Database::connect(postgres_admin_url()).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                        }
                    }
                }
            });
        });
        let _ = done.join();
    }
}
