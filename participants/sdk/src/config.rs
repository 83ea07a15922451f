//! How a participant connects and the limits it keeps.

use sagas::protocol::Namespace;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Default for [`Config::in_flight_max`].
pub const IN_FLIGHT_MAX_DEFAULT: usize = 64;
/// Default for [`Config::panic_retries_max`].
pub const PANIC_RETRIES_MAX_DEFAULT: u32 = 3;
/// Default for [`Config::redelivery_delay`].
pub const REDELIVERY_DELAY_DEFAULT: Duration = Duration::from_secs(1);
/// Default for [`Config::shutdown_grace`].
pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(30);
/// Largest accepted [`Config::in_flight_max`]: JetStream's own bound for the
/// consumer (shared by all replicas) is [`skald_transport::consumers::COMMAND_ACK_PENDING_MAX`].
pub const IN_FLIGHT_MAX_LIMIT: usize = 256;
/// Largest accepted [`Config::commit_group_max`].
pub const COMMIT_GROUP_MAX_LIMIT: usize = 256;

/// Where a participant reads commands, where it keeps its inbox, and its limits.
///
/// ```no_run
/// # async fn f(nats: async_nats::Client, db: sea_orm::DatabaseConnection) {
/// use skald_participant::Config;
/// let config = Config { in_flight_max: 8, ..Config::new(nats, Default::default(), db) };
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub nats: async_nats::Client,
    /// Subject and stream prefix; `Namespace::default()` (`skald`) outside tests.
    pub namespace: sagas::protocol::Namespace,
    /// The participant's own database (SQLite or PostgreSQL). The SDK creates
    /// its `skald_inbox` table there and runs every handler in a transaction on it.
    pub db: DatabaseConnection,
    /// Most commands handled at once by this replica (1..=256).
    pub in_flight_max: usize,
    /// How many times a panicking handler is answered `retry` before the
    /// command is refused for good (`failed`, code `handler_panicked`).
    pub panic_retries_max: u32,
    /// How long JetStream waits before redelivering a command the SDK could not
    /// finish (database error, reply not published).
    pub redelivery_delay: Duration,
    /// On shutdown, how long in-flight handlers may run before they are
    /// abandoned (rolled back, command handed back to JetStream, no reply).
    pub shutdown_grace: Duration,
    /// Fault injection for crash tests, off (`None`) by default: abort the
    /// process right after a handler of this action has committed its effect
    /// and inbox row, before the reply is published — as a `kill -9` there would.
    pub crash_after_commit: Option<String>,
    /// On SQLite, how many commands may share one commit (group commit, see
    /// the `tx` module): 1 (the default) commits every command on its own;
    /// more lets the commands that queue at SQLite's single writer commit
    /// together, each still only after its own effect and inbox row are
    /// written and before its reply. Ignored on PostgreSQL, which commits
    /// concurrent transactions together by itself. 1..=256.
    pub commit_group_max: usize,
    /// How commands arrive and replies leave: directly on core NATS (the
    /// default), or through the JetStream streams (`--delivery jetstream`),
    /// as the orchestrator sends them. See [`skald_transport::Delivery`].
    pub delivery: skald_transport::Delivery,
    /// Counts every commit of the SDK's transactions on `db` (a group's
    /// shared commit once; an inbox row written alone is one): what a
    /// benchmark divides by the commands it ran. A fresh counter by default.
    pub commits: Arc<AtomicU64>,
}

impl Config {
    /// A configuration with the default limits.
    #[must_use]
    pub fn new(nats: async_nats::Client, namespace: Namespace, db: DatabaseConnection) -> Self {
        Self {
            nats,
            namespace,
            db,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            panic_retries_max: PANIC_RETRIES_MAX_DEFAULT,
            redelivery_delay: REDELIVERY_DELAY_DEFAULT,
            shutdown_grace: SHUTDOWN_GRACE_DEFAULT,
            crash_after_commit: None,
            commit_group_max: 1,
            delivery: skald_transport::Delivery::default(),
            commits: Arc::default(),
        }
    }
}
