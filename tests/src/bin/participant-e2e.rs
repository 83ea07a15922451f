//! The `bench-participant` program, built inside the test crate so end-to-end
//! tests can run it as a real process (`CARGO_BIN_EXE_participant-e2e`) and kill it.

fn main() -> std::process::ExitCode {
    bench_participant::main()
}
