//! Crashes: `kill -9` of a process with sagas in flight, and its restart.
//! Here the orchestrators and the bench participant; the money programs
//! (ledger, payment, psp-sim) in [`money`].

mod money;

use crate::common::cluster::wait_owners;
use crate::invariants::count;
use crate::world::{BENCH_DELAYED, FLOW_FILE, FlowRun, TURN, World, sagas};
use skald_tests::{NATS_URL, PARTITIONS};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a killed process stays down.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// A `skald` instance dies (`kill -9`) with sagas in flight and comes back;
/// its partitions move to the other instance meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let run = FlowRun::new(World::new("orchestrator_kill9", NATS_URL, &[FLOW_FILE]).await).await;
    let _bench = run.w.bench_ready(&[]).await;
    let mut o0 = run.skald_ready("o-0", &[]).await;
    let _o1 = run.skald_ready("o-1", &[]).await;
    wait_owners(&run.store, PARTITIONS, &["o-0", "o-1"], Duration::from_secs(30)).await.unwrap();
    let load = run.load(n, n * 2 / 5).await;
    let held: Vec<(i32, i64)> = run
        .store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.owner == "o-0")
        .map(|l| (l.partition, l.epoch))
        .collect();
    o0.kill9();
    let open = run.in_flight().await;
    tokio::time::sleep(DOWN_FOR).await;
    let _o0 = run.w.skald("o-0", &[]);
    let what =
        format!("orchestrator o-0 killed with {open} sagas in flight, restarted 500 ms later");
    let (mut tally, heal) = run.healed(what, load).await;
    // What o-0 held was taken again (by o-1, or by o-0 after its restart) at a new epoch.
    let after: HashMap<i32, i64> =
        run.store.leases().await.unwrap().into_iter().map(|l| (l.partition, l.epoch)).collect();
    tally.expect(!held.is_empty(), || "o-0 held no partition when it was killed".into());
    for (partition, epoch) in &held {
        tally.expect(after.get(partition).is_some_and(|e| e > epoch), || {
            format!("partition {partition} of o-0 still at epoch {epoch} after the kill")
        });
    }
    run.finish(tally, heal).await;
}

/// An instance dies (`kill -9`) holding every partition, before it could hand
/// any over to a second instance that has just joined, and restarts under the
/// same name: the leases it held that now hash to the other instance must
/// reach it (the restarted instance does not drive them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_restarted_under_its_name() {
    let _turn = TURN.lock().await;
    let n = sagas(150, 1_000);
    let mut w = World::new("orchestrator_same_name", NATS_URL, &[FLOW_FILE]).await;
    // Long enough that the restarted instance renews the old leases before they expire.
    w.lease_ttl_ms = "6000";
    let run = FlowRun::new(w).await;
    let _bench = run.w.bench_ready(&[]).await;
    let mut o0 = run.skald_ready("o-0", &[]).await;
    wait_owners(&run.store, PARTITIONS, &["o-0"], Duration::from_secs(30)).await.unwrap();
    let load = run.load(n, n / 4).await;
    o0.kill9();
    let open = run.in_flight().await;
    let _o1 = run.w.skald("o-1", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(run.store.db(), "SELECT count(*) AS n FROM members WHERE instance = 'o-1'").await
        != Ok(1)
    {
        assert!(Instant::now() < deadline, "o-1 never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _o0 = run.w.skald("o-0", &[]);
    let what = format!(
        "o-0 killed holding every partition with {open} sagas in flight; o-1 joined; o-0 back"
    );
    let (mut tally, heal) = run.healed(what, load).await;
    let owners = wait_owners(&run.store, PARTITIONS, &["o-0", "o-1"], Duration::from_secs(20));
    if let Err(e) = owners.await {
        tally.fail(e);
    }
    run.finish(tally, heal).await;
}

/// The bench participant dies (`kill -9`) mid-run and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participant_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let run = FlowRun::new(World::new("participant_kill9", NATS_URL, &[FLOW_FILE]).await).await;
    let mut bench = run.w.bench_ready(BENCH_DELAYED).await;
    let _o = run.skald_ready("o-0", &[]).await;
    let load = run.load(n, n * 2 / 5).await;
    bench.kill9();
    let open = run.in_flight().await;
    tokio::time::sleep(DOWN_FOR).await;
    let _bench = run.w.bench(BENCH_DELAYED);
    let what =
        format!("bench participant killed with {open} sagas in flight, restarted 500 ms later");
    let (mut tally, heal) = run.healed(what, load).await;
    tally.expect(open > 0, || "the kill hit no saga in flight".into());
    run.finish(tally, heal).await;
}
