//! `psp-sim`: the provider simulator's command line.

use super::rate;
use crate::sim::{AMOUNT_LIMIT_DEFAULT, LATENCY_MS_MAX, Sim, SimConfig, serve};
use anyhow::{Context, Result};
use clap::Parser;
use skald_participant::service;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;
use tracing::info;

/// A small payment provider for Skald's quickstart, compose and tests.
///
/// POST /v1/charges {amount, currency, card_token, reference};
/// POST /v1/refunds {charge_id | reference, amount};
/// POST /v1/payouts {amount, currency, destination, reference};
/// GET /v1/charges[?reference=R&limit=N] (with totals per currency);
/// GET /v1/charges/ID; GET /v1/payouts. Every POST is idempotent by its
/// Idempotency-Key header (another body under one key: 409). Card token
/// tok_decline is declined (card_declined), tok_insufficient too
/// (insufficient_funds), and so is any amount over --amount-limit;
/// payouts to ba_closed are declined (account_closed). Everything is kept in
/// memory. SIGTERM or Ctrl-C finishes the requests in flight and exits.
#[derive(Debug, Parser)]
#[command(name = "psp-sim", version)]
struct Args {
    /// Address to listen on (`0.0.0.0` in a container).
    #[arg(long, env = "PSP_SIM_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,

    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, env = "PSP_SIM_PORT", default_value_t = 7070)]
    port: u16,

    /// Wait this long before every POST answer.
    #[arg(long, env = "PSP_SIM_LATENCY_MS", value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=LATENCY_MS_MAX))]
    latency_ms: u64,

    /// Share (0..1) of POSTs answered 500 before anything happens.
    #[arg(long, env = "PSP_SIM_FAILURE_RATE", value_name = "SHARE", default_value_t = 0.0,
          value_parser = rate)]
    failure_rate: f64,

    /// Share (0..1) of new charges that are made, then answered 504 (the
    /// caller does not learn of the charge until it repeats its key).
    #[arg(long, env = "PSP_SIM_DROP_AFTER_CHARGE_RATE", value_name = "SHARE",
          default_value_t = 0.0, value_parser = rate)]
    drop_after_charge_rate: f64,

    /// Seed of the fault draws: the same seed and requests give the same faults.
    #[arg(long, env = "PSP_SIM_SEED", default_value_t = 0)]
    seed: u64,

    /// Charges and payouts over this many minor units are declined (amount_too_large).
    #[arg(long, env = "PSP_SIM_AMOUNT_LIMIT", value_name = "MINOR_UNITS",
          default_value_t = AMOUNT_LIMIT_DEFAULT,
          value_parser = clap::value_parser!(i64).range(1..))]
    amount_limit: i64,
    /// Keep the books in this file (a journal of every request that reached
    /// them, replayed at start), so a restarted psp-sim is the same provider.
    /// Default: in memory only.
    #[arg(long, env = "PSP_SIM_BOOKS", value_name = "FILE")]
    books: Option<std::path::PathBuf>,

    /// Where to POST webhooks (a charge with card `tok_3ds` or `tok_3ds_fail`
    /// is answered `pending`; a webhook says how its 3-D Secure challenge
    /// ended). Default: no webhooks.
    #[arg(long, env = "PSP_SIM_WEBHOOK_URL", value_name = "URL")]
    webhook_url: Option<String>,

    /// Shortest time a customer takes with a 3-D Secure challenge.
    #[arg(long, env = "PSP_SIM_CHALLENGE_MIN_MS", value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=LATENCY_MS_MAX))]
    challenge_min_ms: u64,

    /// Longest time a customer takes with a 3-D Secure challenge.
    #[arg(long, env = "PSP_SIM_CHALLENGE_MAX_MS", value_name = "MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(0..=LATENCY_MS_MAX))]
    challenge_max_ms: u64,

    /// Share (0..1) of webhooks never sent.
    #[arg(long, env = "PSP_SIM_WEBHOOK_LOSS_RATE", value_name = "SHARE", default_value_t = 0.0,
          value_parser = rate)]
    webhook_loss_rate: f64,

    /// Share (0..1) of webhooks sent twice.
    #[arg(long, env = "PSP_SIM_WEBHOOK_DUPLICATE_RATE", value_name = "SHARE",
          default_value_t = 0.0, value_parser = rate)]
    webhook_duplicate_rate: f64,
}

/// Parse the arguments and run: the whole `psp-sim` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    service::run_main(ExitCode::FAILURE, run(args))
}

async fn run(args: Args) -> Result<()> {
    service::init_logging(service::SERVE_LOG_FILTER);
    let listener =
        tokio::net::TcpListener::bind((args.bind, args.port)).await.with_context(|| {
            format!(
                "cannot listen on {}:{}\n  hint: is another psp-sim running? pick another --port",
                args.bind, args.port
            )
        })?;
    let config = SimConfig {
        latency: Duration::from_millis(args.latency_ms),
        failure_rate: args.failure_rate,
        drop_after_charge_rate: args.drop_after_charge_rate,
        seed: args.seed,
        amount_limit: args.amount_limit,
        webhook_url: args.webhook_url.clone(),
        challenge_delay: (
            Duration::from_millis(args.challenge_min_ms),
            Duration::from_millis(args.challenge_max_ms.max(args.challenge_min_ms)),
        ),
        webhook_loss_rate: args.webhook_loss_rate,
        webhook_duplicate_rate: args.webhook_duplicate_rate,
    };
    let address = listener.local_addr().context("cannot read the address listened on")?;
    info!(%address, ?config, "psp-sim listening");
    let shutdown = service::shutdown_on_signal("work");
    let sim = match &args.books {
        Some(path) => Sim::with_journal(config, path)
            .with_context(|| format!("cannot keep the books in {}", path.display()))?,
        None => Sim::new(config),
    };
    sim.resume_challenges();
    serve(listener, sim, shutdown).await.context("psp-sim stopped serving")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        let args = Args::try_parse_from(["psp-sim"]).unwrap();
        assert_eq!((args.port, args.bind.to_string().as_str()), (7070, "127.0.0.1"));
        let args = Args::try_parse_from([
            "psp-sim",
            "--port",
            "0",
            "--failure-rate",
            "0.1",
            "--drop-after-charge-rate",
            "0.5",
            "--seed",
            "42",
        ])
        .unwrap();
        assert_eq!((args.failure_rate, args.drop_after_charge_rate, args.seed), (0.1, 0.5, 42));
        assert!(Args::try_parse_from(["psp-sim", "--failure-rate", "2"]).is_err());
        assert!(Args::try_parse_from(["psp-sim", "--amount-limit", "0"]).is_err());
    }
}
