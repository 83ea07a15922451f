//! Skald's orchestrator engine: the I/O shell around the pure `sagas` core.
//!
//! `sagas` decides what should happen to a saga; this crate makes it happen.
//! Arrows point down: a module uses those below it, never those above.
//! - [`serve`]: the wiring of `skald serve` (every task, started and stopped);
//! - [`api`]: the operator's HTTP API, console, health and metrics, and the
//!   view model the `skald` command line shares;
//! - [`bus`]: intake (replies → driver), relay (outbox → publisher), starter
//!   (start requests over NATS); fault injection behind the `faults` feature;
//! - [`timers`]: timeouts, backoff and deadlines from the store;
//! - [`audit`]: one saga across services (the orchestrator's record beside
//!   each participant's, asked over NATS);
//! - [`retention`]: ended sagas archived to files and removed from the store;
//! - [`cluster`]: partitions, fenced leases, takeover;
//! - [`engine`]: the driver (load → replay → decide → append), the owner's
//!   cache, the definitions served, the deadline bell;
//! - [`metrics`]: Prometheus families, pure observation, the sampler;
//! - [`store`]: saga histories, projection, outbox, definitions (sea-orm);
//! - [`trace`]: one trace per saga (`traceparent`), log set-up, optional OTLP;
//! - [`clock`]: time as an input.
//!
//! Stream and consumer settings come from `skald-transport`; the `skald`
//! binary, the quickstart and the benchmarks live in `skald-cli`.

pub mod api;
pub mod audit;
pub mod bus;
pub mod clock;
pub mod cluster;
pub mod engine;
pub mod metrics;
pub mod retention;
pub mod serve;
pub mod store;
pub mod timers;
pub mod trace;
