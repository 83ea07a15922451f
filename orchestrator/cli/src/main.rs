//! `skald`: the Skald saga orchestrator's command line (see the `skald_cli` library).

// The allocator of Skald's processes (BENCHMARKS.md, 2026-12-05 second session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    skald_cli::main()
}
