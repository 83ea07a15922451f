//! `skald up` (alias `quickstart`): the whole stack with sample sagas and the
//! console; the stack itself is [`crate::tools::up`].

use std::process::ExitCode;

pub fn main(config: &crate::tools::up::UpConfig) -> anyhow::Result<ExitCode> {
    let _logging = orchestrator::trace::init_logging("error");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let up = async move {
        // Caught from here on: every child is stopped before this process ends.
        let signals = tokio::spawn(async move {
            let signal = crate::tools::stack::stop_signal().await;
            eprintln!("skald up: {signal}: stopping everything");
            stopped.cancel();
        });
        let result = crate::tools::up::run(config, stop).await;
        signals.abort();
        result
    };
    match runtime.block_on(up) {
        Ok(summary) if summary.ok => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        Err(e) => {
            eprintln!("skald up: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
