//! Messages dropped, duplicated, delayed and reordered: the orchestrator's
//! seeded fault layer (`SKALD_FAULTS`) loses, copies, holds back and swaps
//! its own commands and replies; step timeouts and the participant's stored
//! replies must recover every loss.

use crate::tally::Tally;
use crate::world::{FLOW_FILE, FlowRun, TURN, World, sagas};
use sagas::machine::SagaEvent;
use skald_tests::{NATS_URL, token};
use std::collections::BTreeMap;
use std::process::{Command as Process, Stdio};
use std::time::Instant;

const FAULTS: &str = "drop=0.05,dup=0.05,delay=0.2,delay_ms=200,reorder=0.05,seed=42";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_dropped_duplicated_delayed_reordered() {
    let _turn = TURN.lock().await;
    // A setting that does not parse stops the start, naming the variable.
    let unused = std::env::temp_dir().join(format!("skald-faults-{}.db", token()));
    let out = Process::new(env!("CARGO_BIN_EXE_skald-e2e"))
        .args(["serve", "--http-addr", "off", "--database-url"])
        .arg(format!("sqlite://{}", unused.display()))
        .env("SKALD_FAULTS", "drop=2")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut tally = Tally::default();
    let _ = std::fs::remove_file(&unused);
    let stderr = String::from_utf8_lossy(&out.stderr);
    tally.expect(!out.status.success() && stderr.contains("SKALD_FAULTS"), || {
        format!("a bad SKALD_FAULTS did not stop skald clearly: {} {stderr}", out.status)
    });

    let n = sagas(200, 1_500);
    let run = FlowRun::new(World::new("message_faults", NATS_URL, &[FLOW_FILE]).await).await;
    let _bench = run.w.bench_ready(&[]).await;
    let env = [("SKALD_FAULTS", FAULTS), ("RUST_LOG", "warn,orchestrator::bus::faulty=info")];
    let _skald = run.skald_ready("o-0", &env).await;
    let begun = run.load(n, 0).await.finish().await;
    let heal = run.ended(&begun, Instant::now(), &mut tally).await;

    // The faults happened, and were recovered by retries.
    let log = std::fs::read_to_string(run.w.logs.join("o-0.log")).unwrap_or_default();
    tally.expect(log.contains("FAULT INJECTION IS ON"), || "no loud start-up warning".into());
    let mut injected = BTreeMap::new();
    for (what, line) in [
        ("commands dropped", "command dropped"),
        ("commands duplicated", "command published twice"),
        ("commands held", "command held"),
        ("replies lost", "reply lost"),
        ("replies applied twice", "reply applied twice"),
        ("replies held", "reply held"),
    ] {
        let k = log.matches(line).count();
        tally.expect(k > 0, || format!("no {what}"));
        injected.insert(what, k);
    }
    injected.insert("batches reordered", log.matches("batch reordered").count());
    println!("injected: {injected:?}");
    let mut timed_out = 0;
    for b in &begun {
        if let Ok(Some(l)) = run.store.load(&b.id).await
            && l.events
                .iter()
                .any(|e| matches!(e, SagaEvent::AttemptFailed { timed_out: true, .. }))
        {
            timed_out += 1;
        }
    }
    tally.expect(timed_out > 0, || "no step timed out: were the losses recovered?".into());
    run.finish(tally, heal).await;
}
