//! Skald's end-to-end tests, over real processes, NATS and databases.
//!
//! The tests in `tests/tests/` exercise Skald from outside: they start what they
//! need (nats-server, a database, orchestrator and participant processes) on
//! random ports, drive sagas through them, inject faults, and check the
//! invariants listed in `DESIGN.md`. The helpers that start and clean up those
//! processes will live in this library; they arrive with the orchestrator. For
//! now the crate checks the shipped saga definitions as a set.
