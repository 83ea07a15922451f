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
    }
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
        let orchestrator = match crate::serve::Orchestrator::connect(config).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skald: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        orchestrator.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
