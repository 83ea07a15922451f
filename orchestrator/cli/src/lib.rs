//! The `skald` command line, one module per subcommand group.
//!
//! Each module holds its clap arguments and the code that runs them, writing to
//! the streams it is given so that tests can read what a user would see.
//! [`main`] parses arguments and dispatches; the `skald` binary only calls it.
//! The operator commands (`sagas`, `definitions list|show|apply`) talk to a
//! running `skald serve` through [`client`]; their errors are one line on
//! stderr and an exit status: 1 the API refused or failed, 2 usage, 3 the API
//! cannot be reached.

pub mod client;
pub mod commands;
pub mod signals;
pub mod tools;

use clap::Parser;
use client::{CliError, Outcome};
use commands::bus::{self, BusCommand};
use commands::definitions::{self, DefinitionsCommand};
use commands::sagas::{self, SagasCommand};
use commands::token::{self, TokenCommand};
use std::io::Write;
use std::process::ExitCode;

/// Skald runs sagas: business transactions across services, with compensation.
#[derive(Debug, Parser)]
#[command(
    name = "skald",
    version,
    long_about = "Skald runs sagas: business transactions that span services, each step a \
        command to a participant over NATS, with compensations when a step fails.\n\n\
        `skald serve` runs the orchestrator and its HTTP API; `skald sagas` lists, starts \
        and repairs sagas through that API; `skald definitions` checks saga definition files \
        and manages the definitions a server runs; `skald token new` makes API tokens.\n\n\
        The API commands find the server at --api-url (SKALD_API_URL, default \
        http://127.0.0.1:8080) and send --token (SKALD_TOKEN). They print tables, or the \
        API's JSON with --json. Exit status: 0 ok, 1 the API refused or failed, 2 usage, \
        3 the API cannot be reached.",
    after_help = "Examples:\n  \
        skald serve\n  \
        DATABASE_URL=postgres://postgres@127.0.0.1/skald skald serve\n  \
        skald definitions validate sagas/definitions/*.yaml\n  \
        skald definitions show sagas/definitions/topup.yaml\n  \
        export SKALD_TOKEN=skald_...   # from `skald token new`\n  \
        skald sagas list --stuck any\n  \
        skald sagas show 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check saga definition files (YAML); list, show and register a server's definitions.
    #[command(
        subcommand,
        long_about = "Check and inspect saga definition files (YAML): the steps of a saga, \
            the participant and action of each, its compensation, input mapping, timeout \
            and retry policy. `validate` and `show FILE` work on files, with no server; \
            `list`, `show TYPE` and `apply` use the API of a running `skald serve`.",
        after_help = "Examples:\n  \
            skald definitions validate sagas/definitions/*.yaml\n  \
            skald definitions show sagas/definitions/topup.yaml\n  \
            skald definitions list\n  \
            skald definitions show topup --version 1\n  \
            skald definitions apply sagas/definitions/topup.yaml"
    )]
    Definitions(DefinitionsCommand),
    /// List, show, start and repair sagas on a running `skald serve`.
    #[command(
        subcommand,
        long_about = "List, show, start and repair sagas through the operator API of a running \
            `skald serve`: one saga (retry, skip, abort, resume, resolve) or every saga a \
            filter matches (bulk, with --dry-run first). Reading needs a viewer token, \
            starting and repairing an operator token.\n\n\
            --api-url (SKALD_API_URL, default http://127.0.0.1:8080) says where the API is, \
            --token (SKALD_TOKEN) who asks; --json prints the API's JSON instead of a table.",
        after_help = "Examples:\n  \
            skald sagas list --status parked\n  \
            skald sagas show 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11\n  \
            skald sagas start topup --key order-1042 --input @order-1042.json\n  \
            skald sagas abort 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --reason 'customer cancelled'\n  \
            skald sagas bulk resume --filter stuck=parked --reason 'ledger fixed' --dry-run\n\n\
            Exit status: 0 ok, 1 the API refused or a repair failed, 2 usage, \
            3 the API cannot be reached."
    )]
    Sagas(SagasCommand),
    /// Write a secured NATS bus: a nats-server configuration and an identity per process.
    #[command(
        subcommand,
        long_about = "Secure the bus Skald's processes talk over: `skald bus init` writes a \
            nats-server configuration in which anonymous clients are refused and each process \
            (orchestrator, each participant, each starter) has an nkey identity allowed only \
            the subjects of its part, and a seed and environment file per identity. Every Skald \
            process takes its credentials and TLS options from --nats-* flags or NATS_* \
            variables (see `skald serve --help`).",
        after_help = "Example:\n  skald bus init --dir bus && nats-server -c bus/nats-server.conf"
    )]
    Bus(BusCommand),
    /// Audit the sagas that ended lately across services; exit 1 on any disagreement.
    #[command(
        long_about = "Audit every saga that ended (completed, compensated or failed) within \
            --since, optionally of one --type or --tag: for each, the server asks every \
            participant of the saga what it recorded and compares it with the saga's history \
            (see `skald sagas audit --help` for the kinds of disagreement). Prints how many \
            sagas agree, disagree or could not be checked, the disagreements by kind, and the \
            first sagas to look at. Pages of 200 sagas; changes nothing anywhere.",
        after_help = "Examples:\n  \
            skald audit --since 1h\n  \
            skald audit --since 1d --type topup\n  \
            skald audit --since 30m --json | jq .by_kind\n\n\
            Exit status: 0 every saga agrees, 1 any disagreement or a participant that could \
            not be asked (or the API refused), 2 usage, 3 the API cannot be reached."
    )]
    Audit(commands::audit::AuditArgs),
    /// Make API tokens.
    #[command(
        subcommand,
        long_about = "Make API tokens for `skald serve`: the token for its user and the line \
            with its SHA-256 for the server's --api-tokens-file.",
        after_help = "Example:\n  skald token new --name ann --role operator"
    )]
    Token(TokenCommand),
    /// Run the orchestrator until SIGTERM or Ctrl-C.
    #[command(
        long_about = "Run the orchestrator: it records every saga as events in the database, \
            publishes commands to participants over NATS JetStream through an outbox, takes \
            their replies, fires timeouts and deadlines, and accepts start requests on \
            `<prefix>.start.<saga type>`.\n\n\
            SIGTERM or Ctrl-C stops taking new work, finishes in-flight writes, publishes \
            what is committed, and exits 0. SIGHUP loads --api-tokens-file again (an invalid \
            file leaves the tokens in force). Unreachable NATS or database: exit 1 with the URL \
            and how to start it. NATS credentials and TLS: the --nats-* options (README, \
            \"Securing the bus\").",
        after_help = "Examples:\n  \
            skald serve\n  \
            skald serve --database-url postgres://postgres@127.0.0.1/skald --partitions 32"
    )]
    Serve(orchestrator::serve::ServeConfig),
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
    Bench(crate::tools::bench::e2e::BenchConfig),
    /// Benchmark the infrastructure alone: JetStream, NATS request/reply, PostgreSQL, SQLite.
    #[command(
        long_about = "Measure what the infrastructure alone can do on this machine, in one run: \
            JetStream publish-with-ack to a temporary file-storage stream (publish, await the \
            ack, repeat; then 64 acks in flight), NATS core request/reply round trips to an \
            in-process responder (1 and 64 in flight), PostgreSQL single-row commits (each \
            INSERT its own transaction, over 1 and 16 connections; `synchronous_commit` as the \
            server has it, printed) and SQLite single-row commits (one connection, WAL). Prints \
            operations per second and p50 / p99 / max latency in µs: the floor under \
            `skald bench`. The stream and the database `skald_floor_<random>` (created on the \
            server of --database-url, a PostgreSQL admin URL) are removed at the end.",
        after_help = "Examples:\n  \
            skald bench-floor\n  \
            skald bench-floor --messages 10000 --json\n  \
            skald bench-floor --database-url postgres://postgres@127.0.0.1/postgres\n  \
            skald bench-floor --database-url off   # NATS and SQLite only"
    )]
    BenchFloor(crate::tools::bench::floor::FloorConfig),
    /// Benchmark how query and start latency grow with the number of stored sagas.
    #[command(
        long_about = "Measure how the orchestrator's costs grow with the store: for an empty \
            store and each size in --sizes, fill a fresh database with that many synthetic \
            `bench` sagas (projection rows and a `saga_started` event each, inserted in \
            batches of 1,000; mostly completed, about 1% running, parked, retrying or overdue), \
            then time the console's stuck inbox query (first page, any stuck class), the \
            overview's stuck count and `Driver::start` (--runs each, p50 / p99), and read this \
            process's memory. Each database is temporary: a SQLite file, or \
            `skald_scale_<random>` on the server of --database-url (a PostgreSQL admin URL; \
            ANALYZE runs after the fill).",
        after_help = "Examples:\n  \
            skald bench-scale --sizes 10000,100000\n  \
            skald bench-scale --sizes 100000 --database-url postgres://postgres@127.0.0.1/postgres\n  \
            skald bench-scale --sizes 1000000 --runs 500 --json"
    )]
    BenchScale(crate::tools::bench::scale::ScaleConfig),
    /// Benchmark recovery after `kill -9` with many sagas in flight.
    #[command(
        long_about = "Measure recovery after a crash: run `skald serve` (this program) as a \
            child on a fresh database, start --in-flight `bench` sagas through NATS start \
            requests while no participant answers, `kill -9` it, then start the \
            `bench-participant` and a new `skald serve` on the same database and time, from that \
            restart, the first partition lease, all leases and every saga terminal. Also prints \
            memory: the first instance idle and with every saga in flight, the restarted one \
            while it recovers, and KiB per in-flight saga. On SQLite the restarted instance \
            waits for the killed one's heartbeat and leases to expire (up to --lease-ttl-ms). \
            The `bench` saga is served with 10-minute step timeouts so that a long queue at the \
            participant is not mistaken for lost commands. The database (a temporary SQLite \
            file, or `skald_recovery_<random>` on the server of --database-url, a PostgreSQL \
            admin URL) and the streams are removed at the end.",
        after_help = "Examples:\n  \
            cargo build --release -p skald-cli -p bench-participant\n  \
            target/release/skald bench-recovery --in-flight 10000\n  \
            skald bench-recovery --in-flight 10000 --database-url postgres://postgres@127.0.0.1/postgres\n  \
            skald bench-recovery --in-flight 1000 --lease-ttl-ms 1000 --json"
    )]
    BenchRecovery(crate::tools::bench::recovery::RecoveryConfig),
    /// Benchmark the `topup` saga with the ledger, payment and psp-sim processes.
    #[command(
        long_about = "Run the `topup` saga (ledger hold, card charge through the payment \
            service and psp-sim over HTTP, ledger post) end to end: psp-sim without faults, the \
            `ledger` and `payment` participants as processes on their own SQLite files, an \
            orchestrator in this process on a fresh database (a temporary SQLite file, or \
            `skald_topup_<random>` on the server of --database-url, a PostgreSQL admin URL). \
            After a few warm-up top-ups, keeps --concurrency top-ups with good cards in flight \
            until --sagas have ended, then prints counts by end state, sagas per second, \
            p50 / p99 / max latency from start to end state, peak memory and `ledger verify`.",
        after_help = "Examples:\n  \
            cargo build --release -p skald-cli -p ledger -p payment\n  \
            target/release/skald bench-topup --sagas 1000 --concurrency 16\n  \
            skald bench-topup --sagas 1000 --concurrency 64 --json\n  \
            skald bench-topup --database-url postgres://postgres@127.0.0.1/postgres --psp-latency-ms 20"
    )]
    BenchTopup(crate::tools::bench::topup::TopupConfig),
    /// Run the whole stack on SQLite with sample money sagas and the console.
    #[command(
        visible_alias = "quickstart",
        long_about = "Start a nats-server of its own on a free port (secured as `skald bus init` writes \
            one; or use --nats-url), psp-sim with \
            some provider faults, the ledger and payment participants (as processes built next to \
            `skald`) and an orchestrator with its API and console, all on SQLite files in \
            --data-dir; open wallets; run a batch of sample topup, topup_3ds and payout sagas (good \
            cards, declined cards, 3-D Secure cards that pass or fail the challenge, a card the \
            sanctions screening refuses (screened beside the ledger's hold), payouts larger \
            than a wallet) with a progress bar; print how they \
            ended, the balances and `ledger verify`; audit every saga across services (its history \
            beside what the ledger, the payment service and the provider recorded). Then serve the \
            console at --http-addr until Ctrl-C (the admin token is printed and kept in \
            <data-dir>/admin.token), or exit with --exit: 0 when every saga ended as expected, the \
            ledger verifies and every saga agrees across services, 1 otherwise.",
        after_help = "Examples:\n  \
            cargo build --release -p skald-cli -p ledger -p payment && target/release/skald up\n  \
            skald up --sagas 500 --exit\n  \
            skald up --sagas 100 --exit --json"
    )]
    Up(crate::tools::up::UpConfig),
}

/// Parse the arguments and run the command: the whole `skald` binary.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Definitions(command) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let result = runtime()?.block_on(definitions::run(command, &mut out, &mut err));
            Ok(finish(result, &mut out, &mut err))
        }
        Command::Sagas(command) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let result = runtime()?.block_on(sagas::run(command, &mut out, &mut err));
            Ok(finish(result, &mut out, &mut err))
        }
        Command::Audit(args) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let result = runtime()?.block_on(commands::audit::run(args, &mut out, &mut err));
            Ok(finish(result, &mut out, &mut err))
        }
        Command::Bus(command) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let result = bus::run(command, &mut out, &mut err);
            Ok(finish(result, &mut out, &mut err))
        }
        Command::Token(command) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let result = token::run(command, &mut out, &mut err);
            Ok(finish(result, &mut out, &mut err))
        }
        Command::Serve(config) => commands::serve::main(config),
        Command::Bench(config) => crate::tools::bench::e2e::main(config),
        Command::BenchFloor(config) => crate::tools::bench::floor::main(config),
        Command::BenchScale(config) => crate::tools::bench::scale::main(config),
        Command::BenchRecovery(config) => crate::tools::bench::recovery::main(config),
        Command::BenchTopup(config) => crate::tools::bench::topup::main(config),
        Command::Up(config) => commands::up::main(config),
    }
}

/// A runtime for one command's requests (they run one after another).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// The exit status of a command; its error, if any, as one line on stderr.
fn finish(result: Result<Outcome, CliError>, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let _ = out.flush();
    match result {
        Ok(outcome) => outcome.into(),
        Err(e) => {
            let _ = writeln!(err, "skald: {}", client::one_line(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}
