//! What the end-to-end suites share (the fault suite, `failover.rs`,
//! `crash.rs`, `money.rs`, …): starting the programs as child processes and
//! waiting until they are up, starting sagas as a client does (one, or a load
//! of many), reading a cluster's leases and open sagas from its database, and
//! running one scenario as a test on each database.
//!
//! A test target includes it with `mod common;` (from `tests/tests/*.rs`) or
//! `#[path = "../common/mod.rs"] mod common;` (from a target directory).

// Each target uses a part of it; the part another target uses is no dead code.
#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod money;
pub mod processes;

/// Two tests of one scenario, named `$sqlite` and `$postgres`: `$scenario`,
/// an `async fn(Backend)`, runs over each database. (A target that runs no
/// scenario on both leaves it unused, as it does the rest of this module.)
#[allow(unused_macros)]
macro_rules! on_each_backend {
    ($scenario:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(skald_tests::Backend::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario(skald_tests::Backend::Postgres).await;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_each_backend;
