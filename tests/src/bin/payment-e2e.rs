//! The `payment` program, built inside the test crate so end-to-end tests can run it as a process.

fn main() -> std::process::ExitCode {
    payment::cli::payment::main()
}
