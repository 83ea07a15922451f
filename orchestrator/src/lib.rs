//! Skald's orchestrator: the I/O shell around the pure `sagas` core.
//!
//! `sagas` decides what should happen to a saga; this crate makes it happen:
//! - [`store`]: saga histories, projection, outbox, definitions (sea-orm);
//! - [`registry`]: the definitions served, by name and content hash;
//! - [`driver`]: load → replay → decide → append, the one place logic meets I/O;
//! - [`bus`]: NATS connection, streams and consumers;
//! - [`relay`]: outbox → JetStream;
//! - [`intake`]: replies → driver;
//! - [`timers`]: timeouts, backoff and deadlines from the store;
//! - [`metrics`]: Prometheus metrics, one registry per orchestrator;
//! - [`trace`]: one trace per saga (`traceparent`), log set-up, optional OTLP export;
//! - [`starter`]: start requests over NATS;
//! - [`serve`]: wiring all of it into `skald serve`;
//! - [`api`]: the operator's HTTP API, docs, health and metrics;
//! - [`partitions`]: which partitions this instance owns;
//! - [`bench`]: `skald bench`, the end-to-end benchmark;
//! - [`up`]: `skald up`, the whole stack, sample sagas and the console in one command;
//! - [`cli`]: the `skald` command line.

pub mod api;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod driver;
pub mod intake;
pub mod metrics;
pub mod partitions;
pub mod registry;
pub mod relay;
pub mod serve;
pub mod starter;
pub mod store;
pub mod timers;
pub mod trace;
pub mod up;
