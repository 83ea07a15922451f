//! `skald`: the Skald saga orchestrator's command line.
//!
//! Parses arguments and hands each subcommand to its module in
//! `orchestrator::cli`; nothing else lives here.

use clap::Parser;
use orchestrator::cli::definitions::{self, DefinitionsCommand};
use std::process::ExitCode;

/// Skald runs sagas: business transactions across services, with compensation.
#[derive(Debug, Parser)]
#[command(
    name = "skald",
    version,
    long_about = "Skald runs sagas: business transactions that span services, each step a \
        command to a participant over NATS, with compensations when a step fails.\n\n\
        This command line checks saga definitions; running the orchestrator comes later.",
    after_help = "Examples:\n  \
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
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let verdict = match &cli.command {
        Command::Definitions(command) => definitions::run(command, &mut out, &mut err)?,
    };
    Ok(verdict.into())
}
