//! Known mistakes that can be put back into the engine on purpose, to show
//! that the deterministic simulation (`tests/sim`) catches them.
//!
//! Compiled only with the `planted` cargo feature, which only the simulator
//! turns on (through `orchestrator/planted`, `skald-participant/planted` and
//! `payment/planted`):
//! the release `skald` never has it. Even where it is compiled, nothing
//! changes until a process calls [`plant`]; the simulator does so for
//! `skald-sim --plant <mistake>` alone, and the switch is process-wide, so a
//! planted run keeps to its own process.

use std::sync::atomic::{AtomicU8, Ordering};

/// A mistake the engine once could have made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mistake {
    /// Compensation runs oldest outcome first instead of newest first.
    UndoOldestFirst = 1,
    /// A step whose outcome is unknown is not compensated (as if it had
    /// surely not taken effect).
    UnknownNotUndone = 2,
    /// An append is not checked against its partition's lease: a deposed
    /// instance can still write a saga's history.
    NoFence = 3,
    /// A participant keeps no tombstones: an `undo` that came before its
    /// `do` leaves no mark, and the late `do` still takes effect.
    NoTombstone = 4,
    /// The payment service calls the provider with a new idempotency key
    /// for each retry of a charge: a charge whose answer was lost is made
    /// again.
    KeyPerAttempt = 5,
}

impl Mistake {
    /// Every mistake, in the order `--plant` lists them.
    pub const ALL: [Mistake; 5] = [
        Mistake::UndoOldestFirst,
        Mistake::UnknownNotUndone,
        Mistake::NoFence,
        Mistake::NoTombstone,
        Mistake::KeyPerAttempt,
    ];

    /// The name `--plant` takes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mistake::UndoOldestFirst => "undo-oldest-first",
            Mistake::UnknownNotUndone => "unknown-not-undone",
            Mistake::NoFence => "no-fence",
            Mistake::NoTombstone => "no-tombstone",
            Mistake::KeyPerAttempt => "key-per-attempt",
        }
    }

    /// The mistake named `name`, if any.
    #[must_use]
    pub fn parse(name: &str) -> Option<Mistake> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

static PLANTED: AtomicU8 = AtomicU8::new(0);

/// Put `mistake` into this process's engine (`None`: take it out again).
pub fn plant(mistake: Option<Mistake>) {
    PLANTED.store(mistake.map_or(0, |m| m as u8), Ordering::SeqCst);
}

/// Whether `mistake` is planted in this process.
#[must_use]
pub fn is_planted(mistake: Mistake) -> bool {
    PLANTED.load(Ordering::Relaxed) == mistake as u8
}
