//! What the suites over `skald serve` processes share (the fault suite,
//! `failover.rs`, `crash.rs`): starting the programs as child processes and
//! waiting until they are up, starting sagas as a client does (one, or a load
//! of many), and reading a cluster's leases and open sagas from its database.
//!
//! A test target includes it with `mod common;` (from `tests/tests/*.rs`) or
//! `#[path = "../common/mod.rs"] mod common;` (from a target directory).

// Each target uses a part of it; the part another target uses is no dead code.
#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod processes;
