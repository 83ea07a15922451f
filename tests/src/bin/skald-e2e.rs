//! The `skald` command line, built inside the test crate so end-to-end tests can
//! run it as a real process (`CARGO_BIN_EXE_skald-e2e`) and `kill -9` it.

fn main() -> anyhow::Result<std::process::ExitCode> {
    skald_cli::main()
}
