//! `psp-sim`: see the library's documentation (`payment::sim`).

fn main() -> std::process::ExitCode {
    payment::cli::psp_sim::main()
}
