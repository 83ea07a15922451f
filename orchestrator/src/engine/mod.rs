//! The engine: where the pure machine meets I/O.
//!
//! - [`driver`]: load → replay → decide → append for every input (start, reply,
//!   timeout, operator repair), with the owner's cache ([`cache`]) and the
//!   definitions served ([`registry`]);
//! - [`bell`]: how an append wakes the timer loop for an earlier deadline;
//! - [`endings`]: callers waiting for a saga to end.
//!
//! It depends on the store, the metrics and the cluster's ownership; never on
//! the bus, the API or the command line (they call it).

mod answers;
pub mod bell;
pub mod cache;
pub mod driver;
pub mod endings;
mod projection;
pub mod registry;

pub use driver::{DriveError, Driver, RepairOutcome, StartError, Started};
