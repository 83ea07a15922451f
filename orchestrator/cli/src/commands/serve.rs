//! `skald serve`: run the orchestrator until SIGTERM or Ctrl-C (the wiring is
//! `orchestrator::serve`; this is the process around it: logging, runtime, signals).

use std::process::ExitCode;

pub fn main(config: &orchestrator::serve::ServeConfig) -> anyhow::Result<ExitCode> {
    let _logging = orchestrator::trace::init_logging("info");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Listen before connecting, so an early SIGTERM is a clean stop too.
        let shutdown = crate::signals::stop_token(&crate::signals::INT_TERM, |_| {})?;
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
        orchestrator.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
