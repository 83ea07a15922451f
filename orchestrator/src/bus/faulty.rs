//! Seeded fault injection at the transport seam, for the fault suite (`tests/fault-suite`).
//!
//! Compiled only with the `faults` cargo feature, which the test crates turn
//! on: the release `skald` binary holds none of it. In such a build it is
//! still off unless the environment variable [`ENV`] (`SKALD_FAULTS`) is set,
//! e.g. `SKALD_FAULTS=drop=0.05,dup=0.05,delay_ms=200,reorder=0.05,seed=42`.
//! It is read once, when the orchestrator starts ([`from_env`]); a value that
//! does not parse stops the start with an error, and faults that are on are
//! logged loudly. [`Faults::wrap`] puts a [`Publisher`] around the real one
//! and gives the intake a [`ReplyGate`]: nothing is global.
//!
//! What it does, each with its own probability:
//! - **commands** (the outbox relay): `drop` pretends a command was published
//!   (its outbox row is deleted) but never sends it; `dup` publishes it twice,
//!   the copy under another `Nats-Msg-Id` so JetStream does not drop it;
//!   `delay` holds it back for a seeded part of `delay_ms` (published from a
//!   background task, so the relay goes on and later commands overtake it; its
//!   outbox row is deleted at once, so a held command still unsent when the
//!   process exits is lost); `reorder` swaps each command of a relay batch with
//!   another.
//! - **replies** (the intake): `drop` acknowledges a reply without applying it
//!   (lost); `dup` applies it twice; `delay` holds it for up to `delay_ms`
//!   before applying it.
//!
//! `delay` is the probability of a hold: 1 when only `delay_ms` is given. A
//! command and its reply are decided apart. Each injected fault is logged at
//! `info` (`RUST_LOG=warn,orchestrator::bus::faulty=info` shows only those).
//!
//! Every decision is a hash of the seed and the message (its `Nats-Msg-Id`, or
//! a reply's command id and attempt), so a seed injects the same faults into
//! the same messages from run to run, whatever the timing.
//! What is lost here is what the design already expects NATS to lose (DESIGN.md,
//! "NATS is the transport, not the record"): step timeouts and the
//! participants' stored replies must recover all of it.

use crate::bus::intake::{Admit, ReplyGate};
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishError;
use futures::future::BoxFuture;
use sagas::protocol::{HEADER_MSG_ID, Reply};
use skald_transport::publish::{Ack, Publisher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable that turns fault injection on.
pub const ENV: &str = "SKALD_FAULTS";
/// Longest delay that may be asked for (`delay_ms`).
pub const DELAY_MS_MAX: u64 = 60_000;

/// What to inject; probabilities are in 0..=1.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Probability that a command or reply is lost.
    pub drop: f64,
    /// Probability that a command is published twice, or a reply applied twice.
    pub dup: f64,
    /// Probability that a command or reply is held back (for up to `delay_ms`).
    pub delay: f64,
    /// Longest hold, in milliseconds (each held message waits a seeded part of it).
    pub delay_ms: u64,
    /// Probability, per command of a relay batch, that it swaps places with another.
    pub reorder: f64,
    /// Seed of every decision.
    pub seed: u64,
}

/// `SKALD_FAULTS` could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "{ENV}={value:?} is not a fault setting: {problem}. Use comma-separated key=value pairs from \
     drop, dup, delay, reorder (probabilities 0-1), delay_ms (0-{DELAY_MS_MAX}) and seed, e.g. \
     {ENV}=drop=0.05,dup=0.05,delay_ms=200,reorder=0.05,seed=42; unset it to turn faults off"
)]
pub struct FaultsError {
    pub value: String,
    pub problem: String,
}

impl Faults {
    /// Parse a setting such as `drop=0.05,dup=0.05,delay_ms=200,reorder=0.05,seed=42`.
    ///
    /// `delay` (the probability of a hold) defaults to 1 when `delay_ms` is
    /// given and to 0 otherwise.
    pub fn parse(value: &str) -> Result<Self, FaultsError> {
        let problem = |p: String| FaultsError { value: value.to_owned(), problem: p };
        let mut faults =
            Self { drop: 0.0, dup: 0.0, delay: 0.0, delay_ms: 0, reorder: 0.0, seed: 0 };
        let mut delay_given = false;
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, raw)) = pair.split_once('=') else {
                return Err(problem(format!("`{pair}` has no `=`")));
            };
            let (key, raw) = (key.trim(), raw.trim());
            let probability = || match raw.parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                _ => Err(problem(format!("{key} must be a probability from 0 to 1, not `{raw}`"))),
            };
            match key {
                "drop" => faults.drop = probability()?,
                "dup" => faults.dup = probability()?,
                "reorder" => faults.reorder = probability()?,
                "delay" => {
                    faults.delay = probability()?;
                    delay_given = true;
                }
                "delay_ms" => {
                    faults.delay_ms = match raw.parse::<u64>() {
                        Ok(ms) if ms <= DELAY_MS_MAX => ms,
                        _ => {
                            return Err(problem(format!(
                                "delay_ms must be 0-{DELAY_MS_MAX}, not `{raw}`"
                            )));
                        }
                    };
                }
                "seed" => {
                    faults.seed = raw.parse::<u64>().map_err(|_| {
                        problem(format!("seed must be a whole number, not `{raw}`"))
                    })?;
                }
                other => return Err(problem(format!("unknown key `{other}`"))),
            }
        }
        if !delay_given && faults.delay_ms > 0 {
            faults.delay = 1.0;
        }
        if faults.drop + faults.dup > 1.0 {
            return Err(problem("drop + dup must be at most 1".into()));
        }
        Ok(faults)
    }

    /// A number in [0, 1) from the seed, what is decided, and the message.
    fn roll(&self, purpose: &str, key: &str) -> f64 {
        let mut h = FNV_OFFSET ^ splitmix(self.seed);
        for b in purpose.bytes().chain([0xff]).chain(key.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        // 53 random bits, as an f64 in [0, 1).
        (splitmix(h) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// What happens to a message; `what` keeps commands and replies apart
    /// (a command and its reply share the key `<command id>/<attempt>`).
    fn fate(&self, what: &str, key: &str) -> Fate {
        let r = self.roll(what, key);
        if r < self.drop {
            Fate::Drop
        } else if r < self.drop + self.dup {
            Fate::Dup
        } else {
            Fate::Deliver
        }
    }

    fn hold(&self, what: &str, key: &str) -> Option<Duration> {
        if self.delay_ms == 0 || self.roll(&format!("{what}/delay"), key) >= self.delay {
            return None;
        }
        let ms = (self.roll(&format!("{what}/delay_ms"), key) * (self.delay_ms + 1) as f64) as u64;
        Some(Duration::from_millis(ms.min(self.delay_ms)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Deliver,
    Drop,
    Dup,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The environment variable's setting, if it is set: `Ok(None)` when faults are off.
///
/// # Errors
/// A setting that does not parse.
pub fn from_env() -> Result<Option<Faults>, FaultsError> {
    match std::env::var(ENV) {
        Ok(v) if !v.trim().is_empty() => Faults::parse(&v).map(Some),
        _ => Ok(None),
    }
}

impl Faults {
    /// Say loudly that faults are on.
    fn announce(&self) {
        tracing::warn!(
            drop = self.drop,
            dup = self.dup,
            delay = self.delay,
            delay_ms = self.delay_ms,
            reorder = self.reorder,
            seed = self.seed,
            "FAULT INJECTION IS ON ({ENV}): commands and replies are dropped, duplicated, \
             delayed and reordered on purpose. Never run this in production"
        );
    }

    /// The publisher and reply gate that inject these faults around `inner`.
    #[must_use]
    pub fn wrap(self, inner: Arc<dyn Publisher>) -> (Arc<dyn Publisher>, Arc<dyn ReplyGate>) {
        self.announce();
        let faults = Arc::new(self);
        let publisher =
            FaultyPublisher { faults: faults.clone(), inner, batches: AtomicU64::new(0) };
        (Arc::new(publisher), Arc::new(FaultyReplies { faults }))
    }
}

/// Commands on their way out: lost, published twice, held back, reordered.
#[derive(Debug)]
struct FaultyPublisher {
    faults: Arc<Faults>,
    inner: Arc<dyn Publisher>,
    /// Relay batches seen, so each batch is shuffled by its own seeded rolls.
    batches: AtomicU64,
}

impl Publisher for FaultyPublisher {
    fn kept_until_answered(&self, subject: &str) -> bool {
        self.inner.kept_until_answered(subject)
    }

    fn arrange(&self, n: usize) -> Option<Vec<usize>> {
        let f = &self.faults;
        if f.reorder <= 0.0 || n < 2 {
            return None;
        }
        let batch = self.batches.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..n).collect();
        let mut swaps = 0;
        for i in 0..n {
            let key = format!("{batch}/{i}");
            if f.roll("reorder", &key) < f.reorder {
                let j = (f.roll("reorder_to", &key) * n as f64) as usize;
                order.swap(i, j.min(n - 1));
                swaps += 1;
            }
        }
        if swaps > 0 {
            tracing::info!(batch, rows = n, swaps, "fault injection: batch reordered");
        }
        Some(order)
    }

    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: String,
    ) -> BoxFuture<'_, Result<Ack, PublishError>> {
        Box::pin(async move {
            let f = &self.faults;
            let msg_id =
                headers.get(HEADER_MSG_ID).map(|v| v.as_str().to_owned()).unwrap_or_default();
            match f.fate("command", &msg_id) {
                Fate::Drop => {
                    tracing::info!(%msg_id, "fault injection: command dropped");
                    return Ok(Ack::ready());
                }
                Fate::Dup => {
                    tracing::info!(%msg_id, "fault injection: command published twice");
                    let mut copy = headers.clone();
                    copy.insert(HEADER_MSG_ID, format!("{msg_id}/dup").as_str());
                    let first = self.inner.publish(subject.clone(), headers, body.clone()).await?;
                    let second = self.inner.publish(subject, copy, body).await;
                    return Ok(Ack::new(async move {
                        if let Ok(second) = second {
                            let _ = second.await;
                        }
                        first.await
                    }));
                }
                Fate::Deliver => {}
            }
            if let Some(hold) = f.hold("command", &msg_id) {
                tracing::info!(%msg_id, hold_ms = hold.as_millis() as u64, "fault injection: command held");
                let inner = self.inner.clone();
                // Detached: a held command still unsent at exit is lost, like a dropped one.
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    if let Ok(ack) = inner.publish(subject, headers, body).await {
                        let _ = ack.await;
                    }
                });
                return Ok(Ack::ready());
            }
            self.inner.publish(subject, headers, body).await
        })
    }
}

/// Replies on their way in: lost, held back, applied twice.
#[derive(Debug)]
struct FaultyReplies {
    faults: Arc<Faults>,
}

impl ReplyGate for FaultyReplies {
    fn admit<'a>(&'a self, reply: &'a Reply) -> BoxFuture<'a, Admit> {
        Box::pin(async move {
            let f = &self.faults;
            let key = format!("{}/{}", reply.command_id, reply.attempt);
            if let Some(hold) = f.hold("reply", &key) {
                tracing::info!(%key, hold_ms = hold.as_millis() as u64, "fault injection: reply held");
                tokio::time::sleep(hold).await;
            }
            match f.fate("reply", &key) {
                Fate::Deliver => Admit::Once,
                Fate::Drop => {
                    tracing::info!(%key, "fault injection: reply lost");
                    Admit::Lost
                }
                Fate::Dup => {
                    tracing::info!(%key, "fault injection: reply applied twice");
                    Admit::Twice
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_parses_and_delay_defaults_to_always() {
        let f = Faults::parse("drop=0.05, dup=0.1,delay_ms=200,reorder=0.05,seed=42").unwrap();
        assert_eq!(
            f,
            Faults { drop: 0.05, dup: 0.1, delay: 1.0, delay_ms: 200, reorder: 0.05, seed: 42 }
        );
        assert_eq!(Faults::parse("delay_ms=10,delay=0.5").unwrap().delay, 0.5);
        assert_eq!(Faults::parse("drop=0.2").unwrap().delay, 0.0);
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        for (value, says) in [
            ("drop=2", "probability"),
            ("dup=-0.1", "probability"),
            ("drop", "no `=`"),
            ("lose=0.1", "unknown key `lose`"),
            ("delay_ms=forever", "delay_ms"),
            ("delay_ms=600000", "delay_ms"),
            ("seed=x", "seed"),
            ("drop=0.6,dup=0.6", "at most 1"),
        ] {
            let e = Faults::parse(value).unwrap_err().to_string();
            assert!(e.contains(says), "{value}: {e}");
            assert!(e.contains("SKALD_FAULTS"), "{e}");
        }
    }

    #[test]
    fn fates_follow_the_seed_and_the_rates() {
        let f = Faults::parse("drop=0.1,dup=0.2,seed=7").unwrap();
        let n = 20_000;
        let fates: Vec<Fate> = (0..n).map(|i| f.fate("command", &format!("c{i}/1"))).collect();
        let again: Vec<Fate> = (0..n).map(|i| f.fate("command", &format!("c{i}/1"))).collect();
        assert_eq!(fates, again, "the same seed decides the same");
        let share = |fate| fates.iter().filter(|x| **x == fate).count() as f64 / n as f64;
        assert!((share(Fate::Drop) - 0.1).abs() < 0.02, "{}", share(Fate::Drop));
        assert!((share(Fate::Dup) - 0.2).abs() < 0.02, "{}", share(Fate::Dup));
        let other = Faults { seed: 8, ..f.clone() };
        let differ =
            (0..n).filter(|i| other.fate("command", &format!("c{i}/1")) != fates[*i]).count();
        assert!(differ > n / 10, "another seed decides otherwise");
        let replies = (0..n).filter(|i| f.fate("reply", &format!("c{i}/1")) != fates[*i]).count();
        assert!(replies > n / 10, "a command and its reply are decided apart");
    }

    #[test]
    fn holds_stay_within_delay_ms() {
        let f = Faults::parse("delay_ms=50,delay=0.5,seed=1").unwrap();
        let holds: Vec<Option<Duration>> =
            (0..1_000).map(|i| f.hold("command", &format!("m{i}"))).collect();
        let held = holds.iter().flatten().count();
        assert!((400..600).contains(&held), "{held} of 1000 held");
        assert!(holds.iter().flatten().all(|d| *d <= Duration::from_millis(50)));
        assert!(holds.iter().flatten().any(|d| *d > Duration::from_millis(25)));
    }
}
