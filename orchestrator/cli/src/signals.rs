//! Stopping the long-running commands (`skald serve`, `skald up`) on signals.

use futures::FutureExt;
use std::io;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// SIGINT (Ctrl-C) and SIGTERM.
pub const INT_TERM: [(SignalKind, &str); 2] =
    [(SignalKind::interrupt(), "SIGINT"), (SignalKind::terminate(), "SIGTERM")];
/// SIGINT, SIGTERM and SIGHUP (the terminal closed).
pub const INT_TERM_HUP: [(SignalKind, &str); 3] = [
    (SignalKind::interrupt(), "SIGINT"),
    (SignalKind::terminate(), "SIGTERM"),
    (SignalKind::hangup(), "SIGHUP"),
];

/// A token cancelled by the first of `signals` to arrive, after `heard` is
/// told its name. The signals are caught from this call on (none of them ends
/// the process by itself any more), so call it before any work that must be
/// stopped cleanly. Call it inside the runtime.
///
/// # Errors
/// When a signal handler cannot be installed.
pub fn stop_token(
    signals: &[(SignalKind, &'static str)],
    heard: fn(&'static str),
) -> io::Result<CancellationToken> {
    let mut waits = Vec::with_capacity(signals.len());
    for (kind, name) in signals {
        let mut stream = signal(*kind)?;
        let name = *name;
        waits.push(async move { stream.recv().await.map(|_| name) }.boxed());
    }
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        if let (Some(name), _, _) = futures::future::select_all(waits).await {
            heard(name);
        }
        stop.cancel();
    });
    Ok(token)
}
