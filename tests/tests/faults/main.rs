//! The fault suite: Skald under load on PostgreSQL while things break, each
//! scenario checked against DESIGN.md's invariants 1-6 once it has healed.
//!
//! One test per scenario: `kill -9` of an orchestrator, of each participant
//! (bench, ledger, payment) and of psp-sim; PostgreSQL stopped with
//! `-m immediate` and started again; nats-server killed and restarted; commands
//! and replies dropped, duplicated, delayed and reordered by the orchestrator's
//! seeded fault layer (`SKALD_FAULTS`); a participant that answers twice or
//! after the step timed out; a poison command whose handler panics every time;
//! oversized payloads; malformed JSON on every subject and API route; hostile
//! strings (SQL, NUL, 64 KiB) in every input; calls without a token, with an
//! expired or forged one, and a viewer's repair; a flood of replies published
//! on another instance's partition.
//!
//! After each, [`invariants`] checks invariants 1 (one saga per accepted start
//! and key, no saga lost or added), 2 (every saga ended; parked only with a
//! reason), 5 (seq 1..n without gaps, one terminal event and nothing after it,
//! one recorded success and compensation per step, and at the participant one
//! effect per command, matching how the saga ended) and 6 (a write under a
//! stale epoch or by another owner is rejected, probed on every partition);
//! the money scenario also checks 3 (`ledger verify`, and each saga's hold
//! posted or voided as it ended) and 4 (the provider's charges). A panic in any
//! process's log fails the scenario too. Each test prints one line
//! `FAULT-ROW scenario|sagas run|terminal|parked (reasons)|violations|heal ms`
//! that `tests/fault-suite` turns into a table; "heal" runs from the moment
//! the fault was removed until every saga had ended.
//!
//! The processes of a scenario speak the default delivery (direct: commands
//! and replies on core NATS, the outbox sending again what is unanswered;
//! docs/delivery.md) unless the scenario is about the streams themselves
//! (`World::jetstream`) or runs a participant scripted over JetStream.
//!
//! Sizes are small by default (CI); `FAULTS_FULL=1` runs the full ones. The
//! tests take turns (one lock), so `cargo test` may run them on any number of
//! threads. Child processes write their logs under `$TMPDIR/skald-faults/`,
//! kept when a test fails; `FAULTS_SKALD_LOG=info` raises the orchestrators'
//! level (default `warn`).
//!
//! The scenarios, by family: [`crash`], [`infrastructure`], [`messages`],
//! [`misbehaving`] participants, [`hostile`] input. What they share: the
//! [`world`] a scenario runs in (databases, definitions, processes, logs; a
//! [`postgres`] server of its own where it stops one), the [`load`] of sagas
//! and the waits around a fault, the [`invariants`], and the [`tally`] row.
//! The saga definitions they run are in `definitions/`. What the suites over
//! processes share with `failover.rs` and `crash.rs` is in `../common/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

mod invariants;
mod load;
mod postgres;
mod tally;
mod world;

mod crash;
mod hostile;
mod infrastructure;
mod messages;
mod misbehaving;
