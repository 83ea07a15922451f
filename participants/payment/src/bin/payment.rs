//! `payment`: see the library's documentation (`payment::cli::payment`).

fn main() -> std::process::ExitCode {
    payment::cli::payment::main()
}
