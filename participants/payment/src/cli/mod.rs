//! The command lines of `payment` and `psp-sim`, and what they share:
//! logging, signals, exit codes, secrets kept out of messages.
//!
//! The binaries' `main`s only call [`payment::main`] and [`psp_sim::main`],
//! so tests can run the same programs.

pub mod payment;
pub mod psp_sim;

use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Run `work` on a fresh runtime; print its error (what failed, its hint,
/// and the root cause, not a backtrace) and exit 1 if it fails.
fn run_main(work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.chain().count() > 1 {
                eprintln!("  cause: {}", e.root_cause());
            }
            ExitCode::FAILURE
        }
    }
}

/// Log to stderr, `RUST_LOG` or `info`.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Cancel `shutdown` on SIGTERM or SIGINT (Ctrl-C).
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("signal received: finishing the work in flight");
    shutdown.cancel();
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// A share between 0 and 1, for `--*-rate` flags.
fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a share between 0 and 1 (like 0.05)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://pay:secret@db/pay"), "postgres://pay:***@db/pay");
        assert_eq!(redact("postgres://pay@db/pay"), "postgres://pay@db/pay");
        assert_eq!(redact("sqlite://payment.db?mode=rwc"), "sqlite://payment.db?mode=rwc");
    }

    #[test]
    fn rates_are_shares() {
        assert_eq!(rate("0.25"), Ok(0.25));
        assert_eq!(rate("1"), Ok(1.0));
        assert!(rate("1.5").is_err());
        assert!(rate("-0.1").is_err());
        assert!(rate("NaN").is_err());
    }
}
