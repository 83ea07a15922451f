//! Skald's orchestrator: the I/O shell around the pure `sagas` core.
//!
//! `sagas` decides what should happen to a saga; this crate makes it happen:
//! - [`store`]: saga histories, projection, outbox, definitions (sea-orm);
//! - [`registry`]: the definitions served, by name and content hash;
//! - [`driver`]: load → replay → decide → append, the one place logic meets I/O;
//! - [`cache`]: the partition owner's cache of open sagas, so replies skip load and replay;
//! - [`bus`]: NATS connection, streams and consumers;
//! - [`relay`]: outbox → JetStream;
//! - [`intake`]: replies → driver;
//! - [`faults`]: seeded fault injection for the fault suite (`SKALD_FAULTS`, off by default);
//! - [`timers`]: timeouts, backoff and deadlines from the store;
//! - [`metrics`]: Prometheus metrics, one registry per orchestrator;
//! - [`trace`]: one trace per saga (`traceparent`), log set-up, optional OTLP export;
//! - [`starter`]: start requests over NATS;
//! - [`serve`]: wiring all of it into `skald serve`;
//! - [`api`]: the operator's HTTP API, docs, health and metrics;
//! - [`partitions`]: which partitions this instance owns;
//! - [`bench`]: `skald bench`, the end-to-end benchmark;
//! - [`bench_floor`], [`bench_scale`], [`bench_recovery`], [`bench_topup`]: the other
//!   benchmark commands (infrastructure floor, store size, recovery after `kill -9`, the
//!   `topup` saga), with [`bench_support`] shared between them;
//! - [`up`]: `skald up`, the whole stack, sample sagas and the console in one command;
//! - [`cli`]: the `skald` command line.

pub mod api;
pub mod bench;
pub mod bench_floor;
pub mod bench_recovery;
pub mod bench_scale;
pub mod bench_support;
pub mod bench_topup;
pub mod bus;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod driver;
pub mod faults;
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
