//! `bench-participant`: see the library's documentation (`bench_participant`).

fn main() -> std::process::ExitCode {
    bench_participant::main()
}
