//! Tools built into `skald` that are not part of operating it: the benchmarks
//! and the quickstart stack (`skald up`), and the processes both start
//! ([`stack`]). Nothing in the engine depends on them.

pub mod bench;
pub mod stack;
pub mod up;
