//! What the orchestrator's integration tests share, included by each with
//! `mod common;` (cargo builds no test of its own from this folder): the
//! engine on a throwaway database ([`engine`]) and requests through the API
//! router without a socket ([`http`]). Each test uses a part of it.

#![allow(dead_code, unused_imports, reason = "each test binary uses a part")]

pub mod engine;
pub mod http;

pub use engine::{BENCH, Engine, PARTITIONS, driver, offline, store, take_commands};
pub use http::send;
