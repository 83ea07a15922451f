//! `skald up` (alias `quickstart`): the whole stack with sample sagas and the
//! console; the stack itself is [`crate::tools::up`].

use std::process::ExitCode;

pub fn main(config: &crate::tools::up::UpConfig) -> anyhow::Result<ExitCode> {
    let _logging = orchestrator::trace::init_logging("error");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let up = async move {
        // Caught from here on: every child is stopped before this process ends.
        let heard = |signal| eprintln!("skald up: {signal}: stopping everything");
        let stop = crate::signals::stop_token(&crate::signals::INT_TERM_HUP, heard)?;
        Ok(crate::tools::up::run(config, stop).await)
    };
    let result: std::io::Result<_> = runtime.block_on(up);
    match result? {
        Ok(summary) if summary.ok => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        Err(e) => {
            eprintln!("skald up: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
