//! `payment serve`: the payment participant's command line.

use crate::provider::{ProviderConfig, RESPONSE_BYTES_MAX_DEFAULT};
use crate::reconcile::ReconcileConfig;
use crate::serve::{ServeConfig, run};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use skald_participant::service;
use std::process::ExitCode;
use std::time::Duration;

/// The Skald payment participant: charges, refunds and payouts through a
/// payment provider's HTTP API, each at most once per saga step.
#[derive(Debug, Parser)]
#[command(name = "payment", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer the `payment` participant's commands (actions `charge` and
    /// `payout`, compensation `refund`) until SIGTERM or Ctrl-C, which drain
    /// the commands in flight.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// NATS server (with JetStream), credentials and TLS.
    #[command(flatten)]
    bus: skald_participant::BusOptions,

    /// The participant's own database (SDK inbox and `payments` table):
    /// `sqlite://FILE?mode=rwc` or `postgres://USER:PASSWORD@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://payment.db?mode=rwc")]
    database_url: String,

    /// Subject and stream prefix; must match the orchestrator's.
    #[arg(long, env = "SKALD_PREFIX", default_value = "skald")]
    prefix: String,

    /// The payment provider's API (`psp-sim` listens on 7070 by default).
    #[arg(long, env = "PSP_URL", default_value = "http://127.0.0.1:7070")]
    psp_url: String,

    /// Longest wait for a connection to the provider (1..=60000).
    #[arg(long, env = "PSP_CONNECT_TIMEOUT_MS", value_name = "MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    psp_connect_timeout_ms: u64,

    /// Longest wait for a whole call to the provider; past it the answer is
    /// `retry`, and the retry reuses the idempotency key (1..=120000).
    #[arg(long, env = "PSP_TIMEOUT_MS", value_name = "MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=120_000))]
    psp_timeout_ms: u64,

    /// Most commands handled at once (1..=256).
    #[arg(long, env = "PAYMENT_CONCURRENCY", value_name = "N",
          default_value_t = skald_participant::IN_FLIGHT_MAX_DEFAULT)]
    concurrency: usize,

    /// On SQLite, most commands that share one commit (group commit: one
    /// fsync for the intents and answers of many charges, each reply still
    /// after its commit); 1 commits each write on its own (1..=256).
    /// PostgreSQL ignores it.
    #[arg(long, env = "PAYMENT_COMMIT_GROUP_MAX", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    commit_group_max: u16,

    /// Pause between passes of the reconciler, which refunds charges whose
    /// saga step was given up while their outcome was unknown (100..=3600000).
    #[arg(long, env = "PAYMENT_RECONCILE_INTERVAL_MS", value_name = "MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    reconcile_interval_ms: u64,

    /// How long such a charge must have been quiet before it is refunded;
    /// must exceed --psp-timeout-ms (1..=86400000).
    #[arg(long, env = "PAYMENT_RECONCILE_GRACE_MS", value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    reconcile_grace_ms: u64,

    /// Take the provider's webhooks here (`POST /webhooks/psp`, e.g.
    /// 127.0.0.1:7071) and hand each to the saga waiting for it as the event
    /// `psp_result` (3-D Secure charges). Default: not at all.
    #[arg(long, env = "PAYMENT_WEBHOOK_ADDR", value_name = "HOST:PORT")]
    webhook_addr: Option<String>,
}

/// Parse the arguments and run: the whole `payment` binary.
pub fn main() -> ExitCode {
    let Command::Serve(args) = Args::parse().command;
    service::run_main(ExitCode::FAILURE, serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    service::init_logging(service::SERVE_LOG_FILTER);
    let namespace = service::namespace(&args.prefix)?;
    if args.reconcile_grace_ms <= args.psp_timeout_ms {
        bail!(
            "--reconcile-grace-ms ({}) must be longer than --psp-timeout-ms ({}), or a charge \
             whose call is still in flight could be refunded",
            args.reconcile_grace_ms,
            args.psp_timeout_ms
        );
    }
    let provider = ProviderConfig {
        base_url: args.psp_url.clone(),
        connect_timeout: Duration::from_millis(args.psp_connect_timeout_ms),
        request_timeout: Duration::from_millis(args.psp_timeout_ms),
        response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
    };
    // Checked before connecting anywhere: a typo is the likeliest mistake.
    crate::provider::Provider::new(&provider).context(
        "invalid --psp-url / PSP_URL\n  hint: use http://HOST:PORT, e.g. http://127.0.0.1:7070",
    )?;

    let webhook_listener = match &args.webhook_addr {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for webhooks on {addr}\n  hint: choose another --webhook-addr")
        })?),
    };
    let nats = service::connect_nats(&args.bus, "payment").await?;
    let db = service::connect_database(&args.database_url).await?;
    let shutdown = service::shutdown_on_signal("work");
    let config = ServeConfig {
        reconcile: ReconcileConfig {
            interval: Duration::from_millis(args.reconcile_interval_ms),
            grace: Duration::from_millis(args.reconcile_grace_ms),
            ..ReconcileConfig::default()
        },
        in_flight_max: args.concurrency,
        commit_group_max: usize::from(args.commit_group_max),
        webhook_listener,
        delivery: args.bus.delivery,
        ..ServeConfig::new(nats, namespace, db, provider)
    };
    run(config, shutdown).await.context("the payment participant stopped")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses_with_defaults() {
        let Command::Serve(args) = Args::try_parse_from(["payment", "serve"]).unwrap().command;
        assert_eq!(args.psp_url, "http://127.0.0.1:7070");
        assert_eq!(args.database_url, "sqlite://payment.db?mode=rwc");
        assert_eq!((args.psp_connect_timeout_ms, args.psp_timeout_ms), (2_000, 5_000));
        let Command::Serve(args) =
            Args::try_parse_from(["payment", "serve", "--psp-timeout-ms", "800"]).unwrap().command;
        assert_eq!(args.psp_timeout_ms, 800);
        assert!(Args::try_parse_from(["payment", "serve", "--psp-timeout-ms", "0"]).is_err());
        assert!(Args::try_parse_from(["payment"]).is_err(), "the subcommand is required");
    }
}
