//! `ledger`: see the library's documentation (`ledger`).

fn main() -> std::process::ExitCode {
    ledger::main()
}
