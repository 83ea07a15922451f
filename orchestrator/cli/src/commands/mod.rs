//! One module per `skald` command: its clap arguments and the code that runs it,
//! writing to the streams it is given so that tests can read what a user sees.

pub mod audit;
pub mod bus;
pub mod definitions;
pub mod sagas;
pub mod serve;
pub mod token;
pub mod up;
