//! Throwaway databases: a SQLite file in a temporary directory of its own, or
//! a fresh database `skald_<label>_<token>` created on a PostgreSQL server
//! through its admin URL. The directory always exists (a run may keep logs and
//! definitions beside the database); both go when the value is removed or
//! dropped.
//!
//! Tests call [`TempDatabase::new`] with a [`Backend`] and the test server
//! (`SKALD_TEST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`);
//! the benchmark tools call [`TempDatabase::create`] with the admin URL they
//! were given and a label naming the benchmark.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use std::path::PathBuf;
use std::time::Duration;

/// The PostgreSQL admin URL tests use when `SKALD_TEST_POSTGRES_URL` is unset.
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long connecting to the admin database may take.
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The SQLite file inside the temporary directory.
const SQLITE_FILE: &str = "skald.db";

/// The PostgreSQL admin URL of the tests: `SKALD_TEST_POSTGRES_URL`, else
/// [`POSTGRES_ADMIN_URL`]. Databases are created and dropped through it.
#[must_use]
pub fn postgres_admin_url() -> String {
    std::env::var("SKALD_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_ADMIN_URL.to_owned())
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Both, for tests that run on each.
    pub const ALL: [Self; 2] = [Self::Sqlite, Self::Postgres];

    /// `sqlite` or `postgres`, for names and reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Why a temporary database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TempDatabaseError {
    #[error("cannot create {}: {source}", dir.display())]
    Directory { dir: PathBuf, source: std::io::Error },
    /// The admin URL given is not a PostgreSQL URL (shown without its password).
    #[error("`{url}` is not a PostgreSQL admin URL (postgres://USER@HOST/DB)")]
    NotPostgres { url: String },
    #[error(
        "cannot connect to PostgreSQL at {url}: {source}. Is it running? \
         (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)"
    )]
    Connect { url: String, source: DbErr },
    #[error("cannot create database {name}: {source}")]
    Create { name: String, source: DbErr },
}

/// A database that exists for one test or one benchmark run.
///
/// Dropping it removes the directory and drops the PostgreSQL database (on a
/// thread of its own, since `Drop` cannot await); [`TempDatabase::remove`]
/// does the same from async code and says when the drop failed.
#[derive(Debug)]
pub struct TempDatabase {
    /// The URL to connect to (`sqlite://DIR/skald.db`, or the PostgreSQL
    /// database on the admin URL's server).
    pub url: String,
    /// The temporary directory: the SQLite file, and anything else the run keeps.
    pub dir: PathBuf,
    /// The PostgreSQL database to drop, until it is dropped.
    postgres: Option<PostgresDatabase>,
}

#[derive(Debug)]
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl TempDatabase {
    /// A fresh database for a test: a SQLite file, or a database on the test
    /// PostgreSQL server ([`postgres_admin_url`]).
    ///
    /// # Errors
    /// When the directory cannot be made or PostgreSQL refuses.
    pub async fn new(backend: Backend) -> Result<Self, TempDatabaseError> {
        let admin_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres_admin_url()),
        };
        Self::create(admin_url.as_deref(), "test").await
    }

    /// A fresh SQLite file in a new directory `skald-<label>-<token>` under
    /// `parent` (e.g. a memory file system, for a database that needs no
    /// durability, as in the simulator).
    ///
    /// # Errors
    /// When the directory cannot be made.
    pub fn sqlite_under(parent: &std::path::Path, label: &str) -> Result<Self, TempDatabaseError> {
        let dir = parent.join(format!("skald-{label}-{}", crate::token()));
        std::fs::create_dir_all(&dir)
            .map_err(|source| TempDatabaseError::Directory { dir: dir.clone(), source })?;
        let url = format!("sqlite://{}", dir.join(SQLITE_FILE).display());
        Ok(Self { url, dir, postgres: None })
    }

    /// A fresh database `skald_<label>_<token>` on the PostgreSQL server of
    /// `admin_url`, or a SQLite file when there is none; either way with a new
    /// temporary directory `skald-<label>-<token>`.
    ///
    /// # Errors
    /// When the directory cannot be made, `admin_url` is not a PostgreSQL URL,
    /// or the server cannot be reached or refuses the database.
    pub async fn create(admin_url: Option<&str>, label: &str) -> Result<Self, TempDatabaseError> {
        let tag = crate::token();
        let dir = std::env::temp_dir().join(format!("skald-{label}-{tag}"));
        std::fs::create_dir_all(&dir)
            .map_err(|source| TempDatabaseError::Directory { dir: dir.clone(), source })?;
        let Some(admin_url) = admin_url else {
            let url = format!("sqlite://{}", dir.join(SQLITE_FILE).display());
            return Ok(Self { url, dir, postgres: None });
        };
        // From here on a failure leaves nothing behind: dropping `made` removes the directory.
        let mut made = Self { url: String::new(), dir, postgres: None };
        if !admin_url.starts_with("postgres://") && !admin_url.starts_with("postgresql://") {
            return Err(TempDatabaseError::NotPostgres { url: redact(admin_url) });
        }
        let name = format!("skald_{label}_{tag}");
        let admin = admin_connection(admin_url)
            .await
            .map_err(|source| TempDatabaseError::Connect { url: redact(admin_url), source })?;
        let created = admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await;
        let _ = admin.close().await;
        created.map_err(|source| TempDatabaseError::Create { name: name.clone(), source })?;
        made.url = with_database(admin_url, &name);
        made.postgres = Some(PostgresDatabase { admin_url: admin_url.to_owned(), name });
        Ok(made)
    }

    /// Which database this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        if self.postgres.is_some() { Backend::Postgres } else { Backend::Sqlite }
    }

    /// Whether this is a PostgreSQL database.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// A name for reports: `sqlite` or `postgres`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.backend().name()
    }

    /// The URL for a plain sea-orm connection: on SQLite with `mode=rwc`, so
    /// the file is created if missing (Skald's own stores add it themselves).
    #[must_use]
    pub fn connect_url(&self) -> String {
        match self.backend() {
            Backend::Sqlite => format!("{}?mode=rwc", self.url),
            Backend::Postgres => self.url.clone(),
        }
    }

    /// A plain sea-orm connection pool to this database.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub async fn connect(&self) -> Result<DatabaseConnection, DbErr> {
        Database::connect(self.connect_url()).await
    }

    /// Drop the PostgreSQL database (closing other sessions) and delete the
    /// directory. Best effort: a failure is printed, not returned.
    pub async fn remove(mut self) {
        if let Some(database) = self.postgres.take()
            && let Err(e) = drop_database(&database).await
        {
            eprintln!("warning: cannot drop database {}: {e}", database.name);
        }
        // Drop deletes the directory.
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let Some(database) = self.postgres.take() else { return };
        // Drop cannot await: a thread with a runtime of its own does it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => {
                    runtime.block_on(drop_database(&database)).map_err(|e| (database, e))
                }
                Err(e) => Err((database, DbErr::Custom(e.to_string()))),
            }
        })
        .join();
        if let Ok(Err((database, e))) = dropped {
            let name = &database.name;
            eprintln!("warning: cannot drop database {name} ({e}); drop it with `dropdb {name}`");
        }
    }
}

async fn drop_database(database: &PostgresDatabase) -> Result<(), DbErr> {
    let admin = admin_connection(&database.admin_url).await?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", database.name);
    let dropped = admin.execute_unprepared(&sql).await;
    let _ = admin.close().await;
    dropped.map(|_| ())
}

/// One quiet connection to the admin database (no slow-statement warnings
/// for CREATE and DROP DATABASE).
async fn admin_connection(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).connect_timeout(ADMIN_CONNECT_TIMEOUT).sqlx_logging(false);
    Database::connect(options).await
}

/// `url` with its database (path) replaced by `name`, keeping any query.
#[must_use]
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let after_at =
        base[authority_start..].rfind('@').map_or(authority_start, |i| authority_start + i + 1);
    let host_end = base[after_at..].find('/').map_or(base.len(), |i| after_at + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `url` with its password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let (Some(scheme), Some(at)) = (url.find("://"), url.rfind('@')) else {
        return url.to_owned();
    };
    if at < scheme {
        return url.to_owned();
    }
    let credentials = &url[scheme + 3..at];
    match credentials.find(':') {
        Some(colon) => {
            format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn database_is_replaced_in_admin_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u:p@h", "x"), "postgres://u:p@h/x");
        assert_eq!(
            with_database("postgres://u:p/w@h/db?sslmode=disable", "x"),
            "postgres://u:p/w@h/x?sslmode=disable"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:s3cret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn a_sqlite_database_lives_in_its_directory_until_dropped() {
        let db = TempDatabase::new(Backend::Sqlite).await.unwrap();
        assert_eq!((db.backend(), db.kind()), (Backend::Sqlite, "sqlite"));
        assert!(db.url.starts_with("sqlite://") && db.url.ends_with("/skald.db"), "{}", db.url);
        let conn = db.connect().await.unwrap();
        conn.execute_unprepared("CREATE TABLE t (x INTEGER)").await.unwrap();
        conn.close().await.unwrap();
        assert!(db.dir.join(SQLITE_FILE).exists());
        let dir = db.dir.clone();
        drop(db);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_non_postgres_admin_url_is_refused_without_its_password() {
        let err = TempDatabase::create(Some("mysql://u:s3cret@h/db"), "t").await.unwrap_err();
        assert!(matches!(err, TempDatabaseError::NotPostgres { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_database_exists_until_removed_or_dropped() {
        let exists = async |name: &str| {
            let admin = admin_connection(&postgres_admin_url()).await.unwrap();
            let sql = format!("SELECT 1 FROM pg_database WHERE datname = '{name}'");
            let row =
                admin.query_one(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql));
            let found = row.await.unwrap().is_some();
            admin.close().await.unwrap();
            found
        };
        for explicit in [true, false] {
            let db = TempDatabase::new(Backend::Postgres).await.unwrap();
            assert_eq!(db.kind(), "postgres");
            let name = db.url.rsplit('/').next().unwrap().to_owned();
            assert!(name.starts_with("skald_test_"), "{name}");
            db.connect().await.unwrap().execute_unprepared("SELECT 1").await.unwrap();
            assert!(exists(&name).await);
            if explicit {
                db.remove().await;
            } else {
                drop(db);
            }
            assert!(!exists(&name).await, "{name} is dropped");
        }
    }
}
