//! Skald's test kit: the set-up every test suite and benchmark tool shares, so
//! none of them carries its own copy.
//!
//! - [`database`]: a throwaway database, a SQLite file in a temporary directory
//!   or a fresh PostgreSQL database dropped afterwards.
//! - [`bus`]: a private nats-server secured as `skald bus init` secures one
//!   (an identity per process), optionally with TLS and client certificates.
//! - [`process`]: free ports, child processes killed on drop, programs built
//!   next to this one, a private `nats-server` on a random port, a private
//!   three-node NATS cluster.
//! - [`wire`]: the orchestrator's end of the wire, played by a test: a private
//!   namespace, commands published as the orchestrator does, replies read back.
//! - [`task`]: an in-process service run until cancelled and checked on stop.
//! - [`fixtures`]: saga definitions kept as files under `tests/kit/fixtures/`,
//!   and the reader of archive and export files.
//! - [`wait`]: polling until a condition holds, with a limit.
//!
//! Where the environment is missing (no PostgreSQL, no NATS) the error says
//! what to start. The kit depends on no Skald crate but `sagas`, for the wire
//! protocol, and `skald-transport`, for the bus's permissions and connect
//! options, so the orchestrator, the SDK and every participant can use it.

pub mod bus;
pub mod database;
pub mod fixtures;
pub mod process;
pub mod task;
pub mod wait;
pub mod wire;

pub use bus::{SecuredBus, TlsFiles};
pub use database::{Backend, TempDatabase, TempDatabaseError, postgres_admin_url, with_database};
pub use process::{ChildGuard, NatsCluster, NatsServer, free_port, sibling_binary, wait_port};
pub use task::Service;
pub use wait::wait_until;
pub use wire::{NATS_URL, OrchestratorSide, delete_streams, namespace, nats_url};

/// A short random token for names (12 lowercase hex digits): databases,
/// directories, subject prefixes, saga ids.
#[must_use]
pub fn token() -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.truncate(12);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_short_hex_and_differ() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
