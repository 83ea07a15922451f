//! `bench-participant`: see the library's documentation (`bench_participant`).

// The allocator of Skald's processes (BENCHMARKS.md, 2026-12-05 second session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bench_participant::main()
}
