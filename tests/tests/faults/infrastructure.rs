//! Infrastructure goes away mid-run: PostgreSQL stopped with `-m immediate`
//! and started again, nats-server killed and restarted on its store. The
//! programs must ride it out (none exits) and every saga must still end.

use crate::postgres::PrivatePostgres;
use crate::world::{BENCH_DELAYED, FLOW_FILE, FlowRun, TURN, World, sagas};
use skald_tests::NATS_URL;
use skald_tests::process::NatsServer;
use std::time::Duration;

/// PostgreSQL (a private server, both the orchestrator's and the
/// participant's databases) stopped with `-m immediate` mid-run, then started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_immediately() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let pg = PrivatePostgres::start();
    let db_url = pg.create_database("skald").await;
    let pdb_url = pg.create_database("bench").await;
    let w = World::on("postgres_stop_immediate", NATS_URL, db_url, pdb_url, &[FLOW_FILE], vec![]);
    let run = FlowRun::new(w).await;
    let mut bench = run.w.bench_ready(BENCH_DELAYED).await;
    let mut skald = run.skald_ready("o-0", &[]).await;
    let load = run.load(n, n * 2 / 5).await;
    let open = run.in_flight().await;
    pg.stop_immediate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.up();
    let what =
        format!("PostgreSQL stopped (immediate) with {open} sagas in flight, started 2 s later");
    let (mut tally, heal) = run.healed(what, load).await;
    for (name, child) in [("skald", &mut skald), ("bench", &mut bench)] {
        let exited = child.child.try_wait().unwrap();
        tally.expect(exited.is_none(), || format!("{name} exited during the outage: {exited:?}"));
    }
    tally.expect(open > 0, || "the outage hit no saga in flight".into());
    drop((skald, bench));
    run.finish(tally, heal).await;
}

/// nats-server killed (`kill -9`) mid-run and restarted on its store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let mut nats = NatsServer::start().unwrap();
    let run = FlowRun::new(World::new("nats_kill9", &nats.url(), &[FLOW_FILE]).await).await;
    let _bench = run.w.bench_ready(BENCH_DELAYED).await;
    let _skald = run.skald_ready("o-0", &[]).await;
    let load = run.load(n, n * 2 / 5).await;
    let open = run.in_flight().await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().unwrap();
    let what = format!("nats-server killed with {open} sagas in flight, restarted 1 s later");
    let (mut tally, heal) = run.healed(what, load).await;
    tally.expect(open > 0, || "the kill hit no saga in flight".into());
    run.finish(tally, heal).await;
}
