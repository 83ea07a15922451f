//! Connecting to NATS: fail fast, name the connection, say how to start NATS.

use crate::TransportError;
use std::time::Duration;

/// How long a connection attempt may take before it is an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect to the NATS server at `url` as `name`, failing fast when it is not there.
///
/// # Errors
/// [`TransportError::Connect`], whose message says how to start nats-server.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, TransportError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|source| TransportError::Connect { url: url.to_owned(), source })
}
