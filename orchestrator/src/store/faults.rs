//! Seeded store faults, for the simulator (`tests/sim`).
//!
//! Compiled only with the `faults` cargo feature (test crates turn it on; the
//! release `skald` never has it), and even there a store has none unless it
//! is given a [`StoreFaults`] with [`super::Store::with_faults`]. An injected
//! fault is what a dropped connection looks like to the engine: an error
//! before anything is written, or — for an append — after its transaction
//! committed, so the caller cannot tell whether it was written.

use sea_orm::{DbErr, RuntimeErr};

/// Where an operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before it touched the database: nothing was done.
    Before,
    /// After its transaction committed: done, but the caller hears an error.
    AfterCommit,
}

/// Decides which store operations fail.
pub trait StoreFaults: Send + Sync + std::fmt::Debug {
    /// Whether operation `op` (`append`, `load`, `due`, `outbox`, `lease`)
    /// fails at `stage`.
    fn fail(&self, op: &'static str, stage: Stage) -> bool;
}

/// What the message of every injected fault starts with.
pub const INJECTED: &str = "injected store fault";

/// The error an injected fault returns.
pub(super) fn injected(op: &'static str, stage: Stage) -> super::StoreError {
    let message = format!("{INJECTED}: {op} ({stage:?})");
    super::StoreError::Db(DbErr::Conn(RuntimeErr::Internal(message)))
}

/// Whether an error (as its message shows, through any wrapping) is an
/// injected fault, and at which stage.
#[must_use]
pub fn injected_stage(error: &impl std::fmt::Display) -> Option<Stage> {
    let text = error.to_string();
    let at = text.find(INJECTED)?;
    Some(if text[at..].contains("(AfterCommit)") { Stage::AfterCommit } else { Stage::Before })
}
