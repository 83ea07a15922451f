//! The Skald ledger: an event-sourced double-entry ledger with two-phase
//! transfers, and the saga participant `ledger` that reserves, confirms and
//! releases money for the `topup` and `payout` sagas.
//!
//! - [`model`]: accounts, transfers, limits and the pure rules (`decide_*`,
//!   `apply`), with no database or clock;
//! - [`events`]: the event log's format, the record;
//! - [`store`]: the database (SQLite or PostgreSQL), schema, transactions;
//! - [`ops`]: operations in a transaction, locking what they read;
//! - [`handlers`]: the saga actions `hold`, `post` and compensation `void`;
//! - [`verify`]: replay the log and check the projections;
//! - [`serve`] and [`cli`]: the `ledger` binary.
//!
//! The binary's `main` only calls [`main`], so end-to-end tests can build the
//! same program inside their own crate and run it as a process.

pub mod cli;
pub mod events;
pub mod handlers;
pub mod model;
pub mod ops;
pub mod serve;
pub mod store;
pub mod verify;

pub use cli::main;
