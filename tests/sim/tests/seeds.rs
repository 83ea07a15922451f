//! The simulation in the test suite: `SIM_SEEDS` seeds (default 200) pass,
//! and a seed run twice gives the same trace, line for line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skald_sim::{Batch, Options, default_jobs, run_batch, run_seed};

#[test]
fn seeds_pass() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let batch = Batch { from: 0, seeds, jobs: default_jobs(), twice: false };
    let mut failed = Vec::new();
    let mut ran = 0;
    run_batch(&batch, &Options::default(), |run| {
        ran += 1;
        if !run.failures.is_empty() {
            failed.push((run.seed, run.failures));
        }
    })
    .unwrap();
    assert_eq!(ran, seeds, "every seed ran");
    assert!(
        failed.is_empty(),
        "failing seeds (replay: cargo run -p skald-sim -- --from SEED --seeds 1 --trace): {failed:#?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_seed_replays_the_same_trace() {
    let options = Options { keep_trace: true, ..Options::default() };
    let first = run_seed(11, &options).await.unwrap();
    let second = run_seed(11, &options).await.unwrap();
    assert!(first.trace.len() > 100, "a world does things: {}", first.trace.len());
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.trace_hash, second.trace_hash);
    let other = run_seed(12, &options).await.unwrap();
    assert_ne!(first.trace_hash, other.trace_hash, "another seed, another world");
}

#[test]
fn seeds_side_by_side_run_as_they_run_alone() {
    let options = Options::default();
    let hashes = |jobs| {
        let mut runs = Vec::new();
        let batch = Batch { from: 40, seeds: 6, jobs, twice: false };
        run_batch(&batch, &options, |run| runs.push((run.seed, run.trace_hash))).unwrap();
        runs
    };
    let alone = hashes(1);
    assert_eq!(alone.iter().map(|r| r.0).collect::<Vec<_>>(), (40..46).collect::<Vec<_>>());
    assert_eq!(alone, hashes(3), "in seed order, each seed's trace unchanged");
}

/// Seeds that once failed, kept as regression cases: the 100,000-seed run
/// found these four (a top-up compensated while the provider still held its
/// charge) because the healed world stopped the reconciler after a pass that
/// settled nothing, although that pass had met a provider fault and left the
/// charge for the next one. The 20,000-seed run with statement faults found
/// three more (203,837, 209,978 and 214,051: an instance waited out the busy
/// timeout on a lock nobody released) because the world kept a connection
/// whose interrupt had come after another connection's release — the driver
/// then counted a transaction SQLite had already ended, and a later rollback
/// left a write transaction open. A connection is now judged by its own
/// interrupts, once what it queued has run. Seed 132 failed in the suite's
/// 200 once a migration shifted where the statement faults fell: a start
/// whose first try committed although its caller saw it fail was tried
/// again, written alone, and refused as a conflict instead of a duplicate
/// (its events were inserted before its saga's row).
#[tokio::test(flavor = "current_thread")]
async fn seeds_that_once_failed_pass() {
    let options = Options::default();
    for seed in [132, 42_329, 68_230, 94_385, 97_843, 203_837, 209_978, 214_051] {
        let run = run_seed(seed, &options).await.unwrap();
        assert!(run.failures.is_empty(), "seed {seed}: {:?}", run.failures);
    }
}
