//! The `skald` command line, one module per subcommand group.
//!
//! Each module holds its clap arguments and the code that runs them, writing to
//! the streams it is given so that tests can read what a user would see. The
//! binary's `main` only parses arguments and dispatches here.

pub mod definitions;
