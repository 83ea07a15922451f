//! `bench-participant`: a no-op Skald participant for benchmarks and fault
//! injection. It serves the `bench` saga (`sagas/definitions/bench.yaml`):
//! actions `step1`..`step3` and compensations `undo1`..`undo3`, as the
//! participant `bench`, through the participant SDK, so its answers are
//! deduplicated by the SDK's inbox like any real participant's.
//!
//! The binary's `main` only calls [`main`], so end-to-end tests can build the
//! same program inside their own crate and run it as a process.

pub mod behaviour;

use anyhow::{Context, Result};
use behaviour::Behaviour;
use clap::Parser;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use skald_participant::{Config, Handler, HandlerError, Participant, handler, service};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The participant name the `bench` saga definition uses.
const PARTICIPANT: &str = "bench";
/// Number of steps in the `bench` saga.
const STEPS: u8 = 3;

/// A no-op Skald participant (`bench`) for benchmarks and fault injection.
///
/// Answers actions step1..step3 and compensations undo1..undo3 of the `bench`
/// saga. Faults can be injected per step. SIGTERM or Ctrl-C drains the
/// commands in flight and exits.
#[derive(Debug, Parser)]
#[command(name = "bench-participant", version)]
struct Args {
    /// NATS server (with JetStream), credentials and TLS.
    #[command(flatten)]
    bus: skald_participant::BusOptions,

    /// The participant's own database, for the SDK's inbox: `sqlite://FILE?mode=rwc`
    /// or `postgres://USER:PASSWORD@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://bench-participant.db?mode=rwc")]
    database_url: String,

    /// Subject and stream prefix; must match the orchestrator's.
    #[arg(long, env = "SKALD_PREFIX", default_value = "skald")]
    prefix: String,

    /// Action stepK answers `failed` (code `bench_refused`), so the saga compensates.
    #[arg(long, env = "BENCH_FAIL_STEP", value_name = "K", value_parser = step_number)]
    fail_step: Option<u8>,

    /// Compensation undoK answers `retry` forever (code `bench_unavailable`), so
    /// the saga ends parked once its compensation retries are spent.
    #[arg(long, env = "BENCH_FAIL_UNDO", value_name = "K", value_parser = step_number)]
    fail_undo: Option<u8>,

    /// Action stepK is never answered nor acknowledged, so the step times out.
    #[arg(long, env = "BENCH_NEVER_ANSWER_STEP", value_name = "K", value_parser = step_number)]
    never_answer_step: Option<u8>,

    /// Wait this many milliseconds before every answer.
    #[arg(long, env = "BENCH_DELAY_MS", value_name = "MS", default_value_t = 0)]
    delay_ms: u64,

    /// Fault injection for crash tests: abort the process right after `stepK`
    /// has committed its effect, before the reply is sent (as `kill -9` there would).
    #[arg(long, env = "BENCH_CRASH_AFTER_COMMIT_STEP", value_name = "K", value_parser = step_number)]
    crash_after_commit_step: Option<u8>,

    /// Most commands handled at once (1..=256).
    #[arg(long, env = "BENCH_CONCURRENCY", value_name = "N", default_value_t = skald_participant::IN_FLIGHT_MAX_DEFAULT)]
    concurrency: usize,

    /// On SQLite, most commands that share one commit (the SDK's group
    /// commit); 1 commits each command on its own (1..=256).
    #[arg(long, env = "BENCH_COMMIT_GROUP_MAX", value_name = "N", default_value_t = 64)]
    commit_group_max: usize,

    /// When it stops, write what it cost to this file as JSON: NATS messages
    /// it sent and received, database statements it ran and transactions it
    /// committed (what `skald bench` divides by the sagas of its run), over
    /// its whole life: its start-up adds a few dozen, nothing beside a run of
    /// thousands of sagas.
    #[arg(long, value_name = "FILE")]
    stats_out: Option<std::path::PathBuf>,
}

fn step_number(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(k) if (1..=STEPS).contains(&k) => Ok(k),
        _ => Err(format!("`{s}` is not a step of the bench saga: use 1, 2 or 3")),
    }
}

/// Parse the arguments and run: the whole `bench-participant` binary.
pub fn main() -> ExitCode {
    service::run_main(ExitCode::FAILURE, run(Args::parse()))
}

async fn run(args: Args) -> Result<()> {
    service::init_logging(service::SERVE_LOG_FILTER);
    let namespace = service::namespace(&args.prefix)?;
    let nats = service::connect_nats(&args.bus, "bench-participant").await?;
    let mut db = service::connect_database(&args.database_url).await?;
    let statements = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&statements);
    db.set_metric_callback(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let nats_stats = nats.statistics();

    // The bench participant's "effect": one row per handled command, in the
    // SDK's transaction. No unique key, so a second effect would show.
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS bench_effects (command_id TEXT NOT NULL, action TEXT NOT NULL)",
    )
    .await
    .context("cannot create the bench_effects table")?;

    let behaviour = Arc::new(Behaviour {
        fail_step: args.fail_step,
        fail_undo: args.fail_undo,
        never_answer_step: args.never_answer_step,
        delay: Duration::from_millis(args.delay_ms),
    });
    info!(?behaviour, prefix = %args.prefix, "starting the bench participant");
    let mut participant = Participant::new(PARTICIPANT);
    for k in 1..=STEPS {
        participant = participant
            .action(format!("step{k}"), step_handler(k, Arc::clone(&behaviour)))
            .compensation(format!("undo{k}"), undo_handler(k, Arc::clone(&behaviour)));
    }

    let shutdown = service::shutdown_on_signal("commands");
    let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let config = Config {
        in_flight_max: args.concurrency,
        crash_after_commit: args.crash_after_commit_step.map(|k| format!("step{k}")),
        commit_group_max: args.commit_group_max,
        delivery: args.bus.delivery,
        commits: Arc::clone(&commits),
        ..Config::new(nats, namespace, db)
    };
    participant.run(config, shutdown).await.context("the bench participant stopped")?;
    if let Some(path) = &args.stats_out {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = serde_json::json!({
            "nats_in_messages": nats_stats.in_messages.load(Relaxed),
            "nats_out_messages": nats_stats.out_messages.load(Relaxed),
            "statements": statements.load(Relaxed),
            "commits": commits.load(Relaxed),
        });
        std::fs::write(path, stats.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Wait `delay`, if any: even a zero-length tokio sleep waits for the timer's
/// next tick (about a millisecond), which would dwarf a step's real cost.
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn step_handler(k: u8, behaviour: Arc<Behaviour>) -> impl Handler {
    handler(move |ctx| {
        let behaviour = Arc::clone(&behaviour);
        Box::pin(async move {
            pause(behaviour.delay).await;
            let output = behaviour.step(k, ctx.payload())?;
            record_effect(&ctx).await?;
            Ok(output)
        })
    })
}

fn undo_handler(k: u8, behaviour: Arc<Behaviour>) -> impl Handler {
    handler(move |ctx| {
        let behaviour = Arc::clone(&behaviour);
        Box::pin(async move {
            pause(behaviour.delay).await;
            let output = behaviour.undo(k)?;
            record_effect(&ctx).await?;
            Ok(output)
        })
    })
}

/// Write the command's effect row inside the SDK's transaction.
async fn record_effect(ctx: &skald_participant::HandlerCtx<'_>) -> Result<(), HandlerError> {
    let tx = ctx.tx().await?;
    let command = ctx.command();
    tx.execute(Statement::from_sql_and_values(
        tx.get_database_backend(),
        match tx.get_database_backend() {
            DbBackend::Postgres => "INSERT INTO bench_effects (command_id, action) VALUES ($1, $2)",
            _ => "INSERT INTO bench_effects (command_id, action) VALUES (?, ?)",
        },
        [command.command_id.clone().into(), command.action.clone().into()],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_to_three() {
        assert_eq!(step_number("2"), Ok(2));
        assert!(step_number("0").is_err());
        assert!(step_number("4").is_err());
        assert!(step_number("x").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        let args = Args::try_parse_from([
            "bench-participant",
            "--fail-step",
            "2",
            "--never-answer-step",
            "3",
            "--delay-ms",
            "5",
        ])
        .unwrap();
        assert_eq!((args.fail_step, args.never_answer_step, args.delay_ms), (Some(2), Some(3), 5));
        assert!(Args::try_parse_from(["bench-participant", "--fail-undo", "7"]).is_err());
    }
}
