//! Starting a participant service: what every participant binary does around
//! [`crate::Participant::run`].
//!
//! One copy, used by the ledger, the payment participant (and `psp-sim`) and
//! the bench participant:
//! - [`run_main`]: a runtime, and an error printed as what failed with its
//!   hint, then its root cause (never a backtrace), with the binary's exit code;
//! - [`init_logging`]: logs to stderr, filtered by `RUST_LOG`;
//! - [`connect_nats`] and [`connect_database`]: errors that name the URL
//!   (without its password, see [`redact`]) and say how to start the server;
//!   SQLite is switched to WAL ([`use_wal`]);
//! - [`shutdown_on_signal`]: SIGTERM or Ctrl-C lets the work in flight finish.

use sagas::protocol::Namespace;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use skald_transport::TransportError;
use std::error::Error;
use std::future::Future;
use std::process::{ExitCode, Termination};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// The log filter of a serving participant when `RUST_LOG` is not set.
pub const SERVE_LOG_FILTER: &str = "info,sqlx=warn";
/// How long [`connect_database`] waits for the database to answer a connect,
/// and for a pooled connection when all are busy.
pub const DATABASE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a participant service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid --prefix: {reason}")]
    Prefix { reason: String },
    #[error("cannot reach NATS at {url}\n  hint: {}", source.hint())]
    Nats {
        url: String,
        #[source]
        source: Box<TransportError>,
    },
    /// `url` is already redacted.
    #[error(
        "cannot open the database at {url}\n  hint: for SQLite use `sqlite://FILE?mode=rwc` in a \
         writable directory; for PostgreSQL start it (`docker compose up -d postgres`) and check \
         --database-url / DATABASE_URL"
    )]
    Database {
        url: String,
        #[source]
        source: DbErr,
    },
    #[error("cannot switch the SQLite database to WAL")]
    Wal(#[source] DbErr),
}

/// Run `work` on a new runtime: the whole of a participant binary's `main`
/// once its arguments are parsed. What `work` returns on success is the exit
/// code; an error is printed (`error: ...`, and `  cause: ...` when it has
/// one) and exits with `failure`.
pub fn run_main<T, E>(failure: ExitCode, work: impl Future<Output = Result<T, E>>) -> ExitCode
where
    T: Termination,
    E: AsRef<dyn Error + 'static>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return failure;
        }
    };
    match runtime.block_on(work) {
        Ok(done) => done.report(),
        Err(e) => {
            // What failed, with its hint, and the root cause; not a backtrace.
            let e = e.as_ref();
            eprintln!("error: {e}");
            let (mut root, mut causes) = (e, 0);
            while let Some(source) = root.source() {
                (root, causes) = (source, causes + 1);
            }
            if causes > 0 {
                eprintln!("  cause: {root}");
            }
            failure
        }
    }
}

/// Log to stderr, filtered by `RUST_LOG`, or else by `default_filter`
/// (such as [`SERVE_LOG_FILTER`]).
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The subject and stream namespace of `--prefix`.
///
/// # Errors
/// [`StartError::Prefix`] when it is not a safe subject token.
pub fn namespace(prefix: &str) -> Result<Namespace, StartError> {
    Namespace::new(prefix).map_err(|reason| StartError::Prefix { reason })
}

/// Connect to NATS as client `name`, with the credentials and TLS of `bus`
/// (see [`skald_transport::BusOptions`]).
///
/// # Errors
/// [`StartError::Nats`] when no server answers in time or it refuses us.
pub async fn connect_nats(
    bus: &skald_transport::BusOptions,
    name: &str,
) -> Result<async_nats::Client, StartError> {
    bus.connect(name)
        .await
        .map_err(|source| StartError::Nats { url: bus.redacted_url(), source: Box::new(source) })
}

/// Open the participant's database (`sqlite://FILE?mode=rwc` or
/// `postgres://USER:PASSWORD@HOST/DB`); SQLite is switched to WAL.
///
/// # Errors
/// [`StartError::Database`] when it cannot be opened, [`StartError::Wal`].
pub async fn connect_database(url: &str) -> Result<DatabaseConnection, StartError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(DATABASE_CONNECT_TIMEOUT)
        .acquire_timeout(DATABASE_CONNECT_TIMEOUT)
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|source| StartError::Database { url: redact(url), source })?;
    use_wal(&db).await.map_err(StartError::Wal)?;
    Ok(db)
}

/// On SQLite, switch the database to WAL: readers do not block the writer,
/// and writers (the SDK's transactions, a participant's own, replicas sharing
/// the file) wait for each other instead of failing. Persistent: it is set on
/// the file. Does nothing on other databases.
///
/// # Errors
/// When SQLite refuses.
pub async fn use_wal(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    Ok(())
}

/// A token cancelled on the first SIGTERM or SIGINT (Ctrl-C), which is logged
/// as `signal received: finishing the <in_flight> in flight`. Call it inside
/// the runtime.
#[must_use]
pub fn shutdown_on_signal(in_flight: &'static str) -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone(), in_flight));
    shutdown
}

async fn cancel_on_signal(shutdown: CancellationToken, in_flight: &'static str) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        // Either arm finishing is the signal; the other is dropped unneeded.
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("signal received: finishing the {in_flight} in flight");
    shutdown.cancel();
}

/// The URL without its password, for messages. The password ends at the
/// last `@`, so one that holds an `@` is hidden whole.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://skald:secret@db/skald"), "postgres://skald:***@db/skald");
        assert_eq!(redact("postgres://skald@db/skald"), "postgres://skald@db/skald");
        assert_eq!(redact("sqlite://bench.db?mode=rwc"), "sqlite://bench.db?mode=rwc");
        assert_eq!(redact("postgres://pay:secret@db/pay"), "postgres://pay:***@db/pay");
        assert_eq!(redact("postgres://pay@db/pay"), "postgres://pay@db/pay");
        assert_eq!(redact("sqlite://payment.db?mode=rwc"), "sqlite://payment.db?mode=rwc");
        assert_eq!(redact("postgres://led:s3cret@db/ledger"), "postgres://led:***@db/ledger");
        assert_eq!(redact("postgres://led@db/ledger"), "postgres://led@db/ledger");
        assert_eq!(redact("sqlite://ledger.db?mode=rwc"), "sqlite://ledger.db?mode=rwc");
        assert_eq!(redact("postgres://led:p@ss@db/ledger"), "postgres://led:***@db/ledger");
    }

    #[test]
    fn a_bad_prefix_is_named() {
        assert_eq!(namespace("skald").unwrap().prefix(), "skald");
        let err = namespace("a.b").unwrap_err().to_string();
        assert!(err.starts_with("invalid --prefix: prefix `a.b`"), "{err}");
    }

    #[tokio::test]
    async fn a_database_that_cannot_be_opened_is_named_with_a_hint() {
        let url = "sqlite:///nonexistent-skald-dir/sub/x.db?mode=rwc";
        let err = connect_database(url).await.unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(&format!("cannot open the database at {url}\n  hint: ")));
        assert!(err.source().is_some(), "the driver's error is the cause");
    }

    #[tokio::test]
    async fn sqlite_is_switched_to_wal() {
        let dir = std::env::temp_dir().join(format!("skald-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("wal.db").display());
        let db = connect_database(&url).await.unwrap();
        let row = db
            .query_one(sea_orm::Statement::from_string(DbBackend::Sqlite, "PRAGMA journal_mode"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "wal");
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
