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
//! - [`starter`]: start requests over NATS;
//! - [`serve`]: wiring all of it into `skald serve`;
//! - [`bench`]: `skald bench`, the end-to-end benchmark;
//! - [`quickstart`]: `skald quickstart`, the whole stack and sample sagas in one command;
//! - [`cli`]: the `skald` command line.

pub mod bench;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod driver;
pub mod intake;
pub mod quickstart;
pub mod registry;
pub mod relay;
pub mod serve;
pub mod starter;
pub mod store;
pub mod timers;
