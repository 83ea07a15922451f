//! `skald`: the Skald saga orchestrator's command line (see `orchestrator::cli`).

fn main() -> anyhow::Result<std::process::ExitCode> {
    orchestrator::cli::main()
}
