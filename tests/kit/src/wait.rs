//! Waiting for something to become true, with a limit: the polling loop many
//! tests wrote out by hand. A probe says `Break(value)` when done, or
//! `Continue(why not yet)`; the last reason is the error when time runs out.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// How often a probe is asked again.
pub const POLL: Duration = Duration::from_millis(50);

/// Ask `probe` every [`POLL`] until it breaks with a value, for at most `within`.
///
/// # Errors
/// The probe's own error, or `"<why not yet> after <within>"` when time runs out.
pub async fn wait_until<T>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<ControlFlow<T, String>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match probe().await? {
            ControlFlow::Break(value) => return Ok(value),
            ControlFlow::Continue(why) if Instant::now() > deadline => {
                anyhow::bail!("{why} after {within:?}")
            }
            ControlFlow::Continue(_) => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn waits_for_the_value_or_says_why_not() {
        let mut asked = 0;
        let third = wait_until(Duration::from_secs(5), async || {
            asked += 1;
            Ok(if asked == 3 {
                ControlFlow::Break(asked)
            } else {
                ControlFlow::Continue(String::new())
            })
        });
        assert_eq!(third.await.unwrap(), 3);

        let never = wait_until(Duration::from_millis(120), async || {
            Ok(ControlFlow::<(), _>::Continue("2 of 5 sagas still open".to_owned()))
        });
        let err = never.await.unwrap_err().to_string();
        assert!(err.starts_with("2 of 5 sagas still open after 120ms"), "{err}");
    }
}
