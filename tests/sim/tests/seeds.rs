//! The simulation in the test suite: `SIM_SEEDS` seeds (default 200) pass,
//! and a seed run twice gives the same trace, line for line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skald_sim::{Options, run_seed};

#[tokio::test(flavor = "current_thread")]
async fn seeds_pass() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let options = Options::default();
    let mut failed = Vec::new();
    for seed in 0..seeds {
        let run = run_seed(seed, &options).await.unwrap();
        if !run.failures.is_empty() {
            failed.push((seed, run.failures));
        }
    }
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
