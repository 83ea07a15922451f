//! Real processes for tests: a test-owned `nats-server` on a random port, and
//! children that are killed when the test ends, however it ends. They live in
//! the test kit; this module keeps the names the tests import.

pub use skald_testkit::process::{
    ChildGuard, NatsCluster, NatsServer, free_port, sibling_binary, wait_port,
};
