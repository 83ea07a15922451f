//! The `skald` command line, one module per subcommand group.
//!
//! Each module holds its clap arguments and the code that runs them, writing to
//! the streams it is given so that tests can read what a user would see.
//! [`main`] parses arguments and dispatches; the `skald` binary only calls it.

pub mod definitions;

use clap::Parser;
use definitions::DefinitionsCommand;
use std::process::ExitCode;

/// Skald runs sagas: business transactions across services, with compensation.
#[derive(Debug, Parser)]
#[command(
    name = "skald",
    version,
    long_about = "Skald runs sagas: business transactions that span services, each step a \
        command to a participant over NATS, with compensations when a step fails.\n\n\
        `skald serve` runs the orchestrator; `skald definitions` checks saga definitions.",
    after_help = "Examples:\n  \
        skald serve\n  \
        DATABASE_URL=postgres://postgres@127.0.0.1/skald skald serve\n  \
        skald definitions validate sagas/definitions/*.yaml\n  \
        skald definitions show sagas/definitions/topup.yaml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check and inspect saga definition files (YAML).
    #[command(
        subcommand,
        long_about = "Check and inspect saga definition files (YAML): the steps of a saga, \
            the participant and action of each, its compensation, input mapping, timeout \
            and retry policy.",
        after_help = "Examples:\n  \
            skald definitions validate sagas/definitions/*.yaml\n  \
            skald definitions show sagas/definitions/topup.yaml"
    )]
    Definitions(DefinitionsCommand),
    /// Run the orchestrator until SIGTERM or Ctrl-C.
    #[command(
        long_about = "Run the orchestrator: it records every saga as events in the database, \
            publishes commands to participants over NATS JetStream through an outbox, takes \
            their replies, fires timeouts and deadlines, and accepts start requests on \
            `<prefix>.start.<saga type>`.\n\n\
            SIGTERM or Ctrl-C stops taking new work, finishes in-flight writes, publishes \
            what is committed, and exits 0. Unreachable NATS or database: exit 1 with the URL \
            and how to start it.",
        after_help = "Examples:\n  \
            skald serve\n  \
            skald serve --database-url postgres://postgres@127.0.0.1/skald --partitions 32"
    )]
    Serve(crate::serve::ServeConfig),
    /// Benchmark the `bench` saga end to end over real NATS and a database.
    #[command(
        long_about = "Run the shipped `bench` saga (three steps on the bench participant) end to \
            end: an orchestrator in this process, the `bench-participant` process, real NATS, and \
            a fresh SQLite file (or --database-url). Keeps --concurrency sagas in flight until \
            --sagas have ended, then prints completed / compensated / parked / failed counts, \
            sagas per second, p50 / p99 / max latency from start to end state, and peak memory. \
            A benchmark, not a test: it asserts nothing.",
        after_help = "Examples:\n  \
            skald bench --sagas 2000 --concurrency 64\n  \
            skald bench --sagas 2000 --concurrency 64 --fail-step 3 --json\n  \
            skald bench --database-url postgres://postgres@127.0.0.1/skald_bench"
    )]
    Bench(crate::bench::BenchConfig),
    /// Run the whole stack on SQLite with a batch of sample money sagas.
    #[command(
        long_about = "Start psp-sim, the ledger and payment participants (as processes built next \
            to `skald`) and an orchestrator, all on SQLite files in --data-dir and the local NATS; \
            open wallets; run a batch of sample topup and payout sagas (good cards, declined cards, \
            payouts larger than a wallet); print how each ended, the balances and `ledger verify`. \
            Then stop, or keep running with --keep-running until Ctrl-C. Exit 0 when every saga \
            ended as expected and the ledger is sound, 1 otherwise.",
        after_help = "Example:\n  \
            cargo build --release -p orchestrator -p ledger -p payment && target/release/skald quickstart"
    )]
    Quickstart(crate::quickstart::QuickstartConfig),
}

/// Parse the arguments and run the command: the whole `skald` binary.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Definitions(command) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            Ok(definitions::run(command, &mut out, &mut err)?.into())
        }
        Command::Serve(config) => serve(config),
        Command::Bench(config) => bench(config),
        Command::Quickstart(config) => quickstart(config),
    }
}

fn quickstart(config: &crate::quickstart::QuickstartConfig) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match runtime.block_on(crate::quickstart::run(config)) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(e) => {
            eprintln!("skald quickstart: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn bench(config: &crate::bench::BenchConfig) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match runtime.block_on(crate::bench::run(config)) {
        Ok(report) if config.json => println!("{}", report.to_json()),
        Ok(report) => print!("{}", report.to_table()),
        Err(e) => {
            eprintln!("skald bench: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(config: &crate::serve::ServeConfig) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Listen before connecting, so an early SIGTERM is a clean stop too.
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let signals = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            signals.cancel();
        });
        let orchestrator = tokio::select! {
            () = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
            o = crate::serve::Orchestrator::connect(config) => match o {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("skald: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            },
        };
        orchestrator.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
