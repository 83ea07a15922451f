//! The cluster: which partitions this instance owns ([`partitions`]: members,
//! fenced leases, rendezvous hashing) and what it does when it takes one
//! ([`takeover`]: re-send the commands the partition's open sagas wait on).

pub mod partitions;
pub mod takeover;
