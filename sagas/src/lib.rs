//! Skald's pure core.
//!
//! This crate owns everything about a saga that can be decided without I/O:
//! - [`definition`]: the YAML definition language, its loader and validation;
//! - [`protocol`]: the JSON wire protocol spoken with participants over NATS;
//! - [`machine`]: the saga state machine (`decide` / `evolve` / `replay`).
//!
//! It never reads a clock, never touches the network or a database: time is an
//! input ([`UnixMillis`]), and every effect is returned as data in a
//! [`machine::Decision`] for the orchestrator's shell to perform.

pub mod backoff;
pub mod definition;
pub mod duration;
pub mod hash;
pub mod machine;
#[cfg(feature = "planted")]
pub mod planted;
pub mod protocol;
pub mod time;

pub use definition::{Definition, DefinitionError, DefinitionErrors, StepDef};
pub use duration::Duration;
pub use machine::{Decision, Input, SagaEvent, SagaState, SagaStatus, TransitionError};
pub use time::UnixMillis;
