//! Misbehaving participants, run inside the test: one that answers every
//! command twice and some only after the step timed out (`lp`), and an SDK
//! participant whose handlers panic on a poison command (`pz`).

use crate::common::load::Make;
use crate::invariants::{verify, verify_effects};
use crate::load::wait_ended;
use crate::tally::Tally;
use crate::world::{TURN, World, sagas};
use async_nats::jetstream;
use sagas::machine::SagaEvent;
use sagas::protocol::{Command, HEADER_MSG_ID, Kind, Namespace, Outcome, Reply};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};
use skald_participant::{HandlerCtx, HandlerError, HandlerResult, Participant};
use skald_tests::{NATS_URL, RunningOrchestrator, Script, Seen, scripted_participant};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Three steps on `lp`, which answers twice, or late.
const LATE: &str = include_str!("definitions/late.yaml");
/// When `lp` answers late: well after its steps' 1 s timeout.
const LATE_BY: Duration = Duration::from_secs(3);

/// Two steps on `pz`, whose handlers panic on poison.
const POISON: &str = include_str!("definitions/poison.yaml");
const POISON_STEPS: [&str; 2] = ["s1", "s2"];

/// A participant answers every command twice, and some only after the step
/// timed out: duplicates are absorbed, a late answer to a retried step is
/// absorbed, a step given up on before its late answer is compensated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_twice_or_after_the_timeout() {
    let _turn = TURN.lock().await;
    let n = sagas(120, 600);
    let w = World::new("late_and_double_answers", NATS_URL, &[("late.yaml", LATE)]).await;
    let mut o = RunningOrchestrator::start(&w.dbs[0], &w.prefix, w.defs.clone()).await.unwrap();
    let (seen, stop) = late_and_double_participant(o.client.clone(), &w.ns).await;
    let make: Make = Arc::new(|i| ("late".to_owned(), format!("k{i}"), json!({ "n": i })));
    let begun = w.starter(&o.client).load(n, 16, make).finish().await;
    let heal = wait_ended(&o.store, Instant::now()).await;
    let mut tally = Tally::default();
    // The late answers come in after the sagas ended; all must be settled.
    tokio::time::sleep(LATE_BY).await;
    if let Err(e) = o.wait_replies_settled(Duration::from_secs(30)).await {
        tally.fail(format!("late replies not settled: {e}"));
    }
    let statuses = verify(&o.store, &begun, &mut tally).await;
    let seen = seen.commands.lock().unwrap().clone();
    for b in &begun {
        let i = b.input["n"].as_i64().unwrap();
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let want = if i % 2 == 1 { "compensated" } else { "completed" };
        tally.expect(status == want, || format!("saga n={i} ended {status}, not {want}"));
        if want == "compensated" {
            let undos: Vec<&str> = seen
                .iter()
                .filter(|c| c.saga_id == b.id && c.kind == Kind::Undo)
                .map(|c| c.step.as_str())
                .collect();
            let first = |s: &str| undos.iter().position(|u| *u == s);
            tally.expect(matches!((first("s2"), first("s1")), (Some(a), Some(b)) if a < b), || {
                format!("saga n={i}: undos sent {undos:?}, not s2 then s1")
            });
        }
    }
    stop.cancel();
    o.stop().await;
    w.finish(tally, heal);
}

/// A command whose handler panics every time: the SDK answers `retry`, then
/// refuses it (`handler_panicked`); the saga compensates, or parks with its
/// reason when the poison is in a compensation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_command() {
    let _turn = TURN.lock().await;
    quiet_poison_panics();
    let n = sagas(100, 600);
    let w = World::new("poison_command", NATS_URL, &[("poison.yaml", POISON)]).await;
    let pdb = Database::connect(&w.pdb_url).await.unwrap();
    pdb.execute_unprepared(
        "CREATE TABLE pz_effects (command_id TEXT NOT NULL, action TEXT NOT NULL)",
    )
    .await
    .unwrap();
    let mut o = w.orchestrator().await;
    let stop = CancellationToken::new();
    let participant = Participant::new("pz")
        .action("a1", pz_a1)
        .action("a2", pz_a2)
        .compensation("u1", pz_u1)
        .compensation("u2", pz_u2);
    let config = skald_participant::Config {
        delivery: o.delivery,
        ..skald_participant::Config::new(o.client.clone(), w.ns.clone(), pdb)
    };
    let running = tokio::spawn(participant.run(config, stop.clone()));
    let poison = |i: usize| match i % 10 {
        3 => "do",
        7 => "undo",
        _ => "",
    };
    let make: Make = Arc::new(move |i| {
        ("poison".to_owned(), format!("k{i}"), json!({ "n": i, "poison": poison(i) }))
    });
    let begun = w.starter(&o.client).load(n, 16, make).finish().await;
    let heal = wait_ended(&o.store, Instant::now()).await;
    let mut tally = Tally::default();
    let statuses = verify(&o.store, &begun, &mut tally).await;
    verify_effects(&w.pdb_url, "pz_effects", &POISON_STEPS, &statuses, &mut tally).await;
    for b in &begun {
        let i = b.input["n"].as_u64().unwrap() as usize;
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let want = match poison(i) {
            "do" => "compensated",
            "undo" => "parked",
            _ => "completed",
        };
        tally.expect(status == want, || format!("saga n={i} ended {status}, not {want}"));
        if poison(i) == "do" {
            let events = o.store.load(&b.id).await.unwrap().unwrap().events;
            let refused = events.iter().any(|e| {
                matches!(e, SagaEvent::StepFailed { step, code, .. }
                    if step == "s2" && code == "handler_panicked")
            });
            tally.expect(refused, || format!("saga n={i}: s2 not refused as handler_panicked"));
        }
    }
    tally.expect(tally.parked.get("compensation_failed").is_some_and(|k| *k > 0), || {
        "no saga parked for its poisoned compensation".into()
    });
    stop.cancel();
    let _ = running.await;
    o.stop().await;
    w.finish(tally, heal);
}

/// Publish a reply to `cmd`, tagged so JetStream keeps every copy.
async fn answer(js: &jetstream::Context, cmd: &Command, outcome: Outcome, tag: &str) {
    let reply = Reply { command_id: cmd.command_id.clone(), attempt: cmd.attempt, outcome };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_MSG_ID, format!("{}/{}/{tag}", cmd.command_id, cmd.attempt).as_str());
    let body = serde_json::to_vec(&reply).unwrap();
    if let Ok(ack) = js.publish_with_headers(cmd.reply_subject.clone(), headers, body.into()).await
    {
        let _ = ack.await;
    }
}

/// Participant `lp` of [`LATE`]: answers `ok` to every command twice, except
/// that it answers once and [`LATE_BY`] late to `s2` of odd `n`, and to the
/// first attempt of `s1` when `n % 4 == 2`. Records every command it saw.
async fn late_and_double_participant(
    client: async_nats::Client,
    ns: &Namespace,
) -> (Seen, CancellationToken) {
    let js = jetstream::new(client.clone());
    // It answers in a task of its own, so it tells the scripted participant not to.
    let script: Script = Arc::new(move |cmd| {
        let n = cmd.payload.get("n").and_then(Value::as_i64).unwrap_or(0);
        let late = cmd.kind == Kind::Do
            && ((cmd.step == "s2" && n % 2 == 1)
                || (cmd.step == "s1" && n % 4 == 2 && cmd.attempt == 1));
        let (js, cmd) = (js.clone(), cmd.clone());
        tokio::spawn(async move {
            let ok = || Outcome::Ok { output: json!({ "n": n }) };
            if late {
                tokio::time::sleep(LATE_BY).await;
                answer(&js, &cmd, ok(), "late").await;
            } else {
                answer(&js, &cmd, ok(), "first").await;
                answer(&js, &cmd, ok(), "again").await;
            }
        });
        None
    });
    scripted_participant(client, ns, "lp", script).await.unwrap()
}

fn poison_of<'a>(ctx: &HandlerCtx<'a>) -> &'a str {
    ctx.payload().get("poison").and_then(Value::as_str).unwrap_or("")
}

/// The effect of a `pz` command: one row, in the SDK's transaction.
async fn pz_record(ctx: &HandlerCtx<'_>) -> Result<(), HandlerError> {
    let tx = ctx.tx().await?;
    let command = ctx.command();
    tx.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO pz_effects (command_id, action) VALUES ($1, $2)",
        [command.command_id.clone().into(), command.action.clone().into()],
    ))
    .await?;
    Ok(())
}

async fn pz_a1(ctx: HandlerCtx<'_>) -> HandlerResult {
    pz_record(&ctx).await?;
    Ok(json!({}))
}

async fn pz_a2(ctx: HandlerCtx<'_>) -> HandlerResult {
    match poison_of(&ctx) {
        "do" => panic!("poison command {}", ctx.command().command_id),
        "undo" => Err(HandlerError::failed("refused", "refused so that step s1 is undone")),
        _ => {
            pz_record(&ctx).await?;
            Ok(json!({}))
        }
    }
}

async fn pz_u1(ctx: HandlerCtx<'_>) -> HandlerResult {
    if poison_of(&ctx) == "undo" {
        panic!("poison command {}", ctx.command().command_id);
    }
    pz_record(&ctx).await?;
    Ok(json!({}))
}

async fn pz_u2(ctx: HandlerCtx<'_>) -> HandlerResult {
    pz_record(&ctx).await?;
    Ok(json!({}))
}

/// Keep the poison handlers' panics out of the test output (the SDK reports
/// them); every other panic is printed as usual.
fn quiet_poison_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with("poison command") {
                default(info);
            }
        }));
    });
}
