//! `skald`: the Skald saga orchestrator's command line (see the `skald_cli` library).

fn main() -> anyhow::Result<std::process::ExitCode> {
    skald_cli::main()
}
