//! `skald up` (alias `quickstart`): the whole stack with sample sagas and the
//! console; the stack itself is [`crate::tools::up`].

use std::process::ExitCode;

pub fn main(config: &crate::tools::up::UpConfig) -> anyhow::Result<ExitCode> {
    let _logging = orchestrator::trace::init_logging("error");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match runtime.block_on(crate::tools::up::run(config)) {
        Ok(summary) if summary.ok => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        Err(e) => {
            eprintln!("skald up: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
