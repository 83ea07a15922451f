//! Infrastructure goes away mid-run: PostgreSQL stopped with `-m immediate`
//! and started again, nats-server killed and restarted on its store, nodes of
//! a three-node NATS cluster killed. The programs must ride it out (none
//! exits) and every saga must still end.

use crate::postgres::PrivatePostgres;
use crate::world::{BENCH_DELAYED, FLOW_FILE, FlowRun, TURN, World, sagas};
use skald_tests::NATS_URL;
use skald_tests::process::{NatsCluster, NatsServer};
use skald_transport::streams::REPLICAS_ENV;
use std::time::{Duration, Instant};

/// How long a stream's information is asked for after a node went.
const STREAM_INFO_WITHIN: Duration = Duration::from_secs(20);

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

/// A three-node NATS cluster, streams at three replicas: one node killed
/// (`kill -9`) mid-run and restarted on its store, then another killed for
/// good. Two of three nodes keep JetStream's quorum: every saga ends and
/// nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_cluster_nodes_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(200, 1_500);
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let mut w = World::new("nats_cluster_nodes_killed", &cluster.url(), &[FLOW_FILE]).await;
    w.env.push((REPLICAS_ENV, "3".to_owned()));
    let run = FlowRun::new(w).await;
    let _bench = run.w.bench_ready(BENCH_DELAYED).await;
    let _skald = run.skald_ready("o-0", &[]).await;
    let load = run.load(n, n / 4).await;
    let first = run.in_flight().await;
    cluster.nodes[0].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nodes[0].restart().unwrap();
    // Let the restarted node catch up before its peer goes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = run.in_flight().await;
    cluster.nodes[1].kill();
    let what = format!(
        "NATS node 0 killed with {first} sagas in flight and restarted 2 s later; node 1 killed for \
         good with {second} in flight"
    );
    let (mut tally, heal) = run.healed(what, load).await;
    tally.expect(first > 0, || "the first kill hit no saga in flight".into());
    let js = async_nats::jetstream::new(run.client.clone());
    // The streams this delivery uses: the ends', and with JetStream delivery
    // the commands' and replies'.
    let mut streams = vec![run.w.ns.ended_stream()];
    if run.w.delivery == skald_transport::Delivery::JetStream {
        streams.extend([run.w.ns.commands_stream(), run.w.ns.replies_stream()]);
    }
    for stream in streams {
        // Just after a node went, a stream whose leader it was answers only
        // once its remaining replicas have elected another: ask for a while.
        let deadline = Instant::now() + STREAM_INFO_WITHIN;
        let replicas = loop {
            let replicas = async {
                let mut s = js.get_stream(&stream).await?;
                Ok::<_, anyhow::Error>(s.info().await?.config.num_replicas)
            };
            match replicas.await {
                Ok(n) => break Ok(n),
                Err(e) if Instant::now() > deadline => break Err(e.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        tally.expect(replicas == Ok(3), || format!("{stream} has replicas {replicas:?}, not 3"));
    }
    run.finish(tally, heal).await;
}
