//! `skald serve`: run the orchestrator until SIGTERM or Ctrl-C (the wiring is
//! `orchestrator::serve`; this is the process around it: logging, runtime,
//! signals). SIGHUP loads the API tokens file again.

use orchestrator::api::auth::{SharedTokens, Tokens};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// On every SIGHUP, load `path` again and put its tokens in force; a file
/// that cannot be read or is invalid leaves the tokens in force as they are.
async fn reload_on_hangup(
    mut hangups: Signal,
    path: Option<PathBuf>,
    tokens: Option<SharedTokens>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            heard = hangups.recv() => if heard.is_none() { return },
        }
        let (Some(path), Some(tokens)) = (&path, &tokens) else {
            tracing::info!("SIGHUP: no API tokens file to load again (--api-tokens-file)");
            continue;
        };
        match Tokens::load(path) {
            Ok(loaded) => {
                tokens.replace(loaded);
                tracing::info!(file = %path.display(), "SIGHUP: API tokens loaded again");
            }
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: the API tokens file was not loaded; the tokens in force stay"
            ),
        }
    }
}

pub fn main(config: &orchestrator::serve::ServeConfig) -> anyhow::Result<ExitCode> {
    let _logging = orchestrator::trace::init_logging("info");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Listen before connecting, so an early SIGTERM is a clean stop too
        // (and an early SIGHUP does not end the process).
        let shutdown = crate::signals::stop_token(&crate::signals::INT_TERM, |_| {})?;
        let hangups = signal(SignalKind::hangup())?;
        let orchestrator = tokio::select! {
            () = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
            o = orchestrator::serve::Orchestrator::connect(config) => match o {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("skald: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            },
        };
        tokio::spawn(reload_on_hangup(
            hangups,
            config.api_tokens_file.clone(),
            orchestrator.tokens(),
            shutdown.clone(),
        ));
        orchestrator.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
