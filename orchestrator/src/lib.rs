//! Skald's orchestrator: the I/O shell around the pure `sagas` core.
//!
//! `sagas` decides what should happen to a saga; this crate makes it happen:
//! it will own the event store, the outbox relay, the NATS bus, timers,
//! partition leases and the HTTP operations API (see `DESIGN.md`). For now it
//! holds the `skald` command line, whose `definitions` commands check saga
//! definition files before they are deployed.

pub mod cli;
