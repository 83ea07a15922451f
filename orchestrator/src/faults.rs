//! Seeded fault injection in the NATS adapter, for the fault suite (`tests/fault-suite`).
//!
//! Off unless the environment variable [`ENV`] (`SKALD_FAULTS`) is set, e.g.
//! `SKALD_FAULTS=drop=0.05,dup=0.05,delay_ms=200,reorder=0.05,seed=42`. It is
//! read once, when the orchestrator starts ([`init`]); a value that does not
//! parse stops the start with an error, and faults that are on are logged
//! loudly. Never set it in production.
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
//! `info` (`RUST_LOG=warn,orchestrator::faults=info` shows only those).
//!
//! Every decision is a hash of the seed and the message (its `Nats-Msg-Id`, or
//! a reply's command id and attempt), so a seed injects the same faults into
//! the same messages from run to run, whatever the timing.
//! What is lost here is what the design already expects NATS to lose (DESIGN.md,
//! "NATS is the transport, not the record"): step timeouts and the
//! participants' stored replies must recover all of it.

use crate::driver::Driver;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishError};
use sagas::machine::Input;
use sagas::protocol::{HEADER_MSG_ID, Reply};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::OnceLock;
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

static CONFIG: OnceLock<Option<Faults>> = OnceLock::new();
/// Relay batches seen, so each batch is shuffled by its own seeded rolls.
static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Read [`ENV`] once, at start-up; a setting that does not parse is an error.
/// Faults that are on are logged loudly (each time this is called).
pub fn init() -> Result<Option<&'static Faults>, FaultsError> {
    let faults = match CONFIG.get() {
        Some(f) => f.as_ref(),
        None => {
            let parsed = match std::env::var(ENV) {
                Ok(v) if !v.trim().is_empty() => Some(Faults::parse(&v)?),
                _ => None,
            };
            CONFIG.get_or_init(|| parsed).as_ref()
        }
    };
    if let Some(f) = faults {
        tracing::warn!(
            drop = f.drop,
            dup = f.dup,
            delay = f.delay,
            delay_ms = f.delay_ms,
            reorder = f.reorder,
            seed = f.seed,
            "FAULT INJECTION IS ON ({ENV}): commands and replies are dropped, duplicated, \
             delayed and reordered on purpose. Never run this in production"
        );
    }
    Ok(faults)
}

/// The faults in force: those [`init`] read, or none.
fn active() -> Option<&'static Faults> {
    CONFIG.get().and_then(Option::as_ref)
}

/// A relay batch, shuffled when `reorder` says so (unchanged when faults are off).
pub fn reorder<T>(mut rows: Vec<T>) -> Vec<T> {
    let Some(f) = active() else { return rows };
    if f.reorder <= 0.0 || rows.len() < 2 {
        return rows;
    }
    let batch = BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = rows.len();
    let mut swaps = 0;
    for i in 0..n {
        let key = format!("{batch}/{i}");
        if f.roll("reorder", &key) < f.reorder {
            let j = (f.roll("reorder_to", &key) * n as f64) as usize;
            rows.swap(i, j.min(n - 1));
            swaps += 1;
        }
    }
    if swaps > 0 {
        tracing::info!(batch, rows = n, swaps, "fault injection: batch reordered");
    }
    rows
}

/// The acknowledgement of a command publish, which fault injection may fake.
pub struct Ack(Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>);

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

impl IntoFuture for Ack {
    type Output = Result<(), PublishError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

/// Publish a command, as `js.publish_with_headers` does, unless fault
/// injection loses, duplicates or holds it.
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    body: String,
) -> Result<Ack, PublishError> {
    let Some(f) = active() else {
        let ack = js.publish_with_headers(subject, headers, body.into()).await?;
        return Ok(Ack(Box::pin(async move { ack.await.map(|_| ()) })));
    };
    let msg_id = headers.get(HEADER_MSG_ID).map(|v| v.as_str().to_owned()).unwrap_or_default();
    match f.fate("command", &msg_id) {
        Fate::Drop => {
            tracing::info!(%msg_id, "fault injection: command dropped");
            return Ok(Ack(Box::pin(async { Ok(()) })));
        }
        Fate::Dup => {
            tracing::info!(%msg_id, "fault injection: command published twice");
            let mut copy = headers.clone();
            copy.insert(HEADER_MSG_ID, format!("{msg_id}/dup").as_str());
            let first =
                js.publish_with_headers(subject.clone(), headers, body.clone().into()).await?;
            let second = js.publish_with_headers(subject, copy, body.into()).await;
            return Ok(Ack(Box::pin(async move {
                if let Ok(second) = second {
                    let _ = second.await;
                }
                first.await.map(|_| ())
            })));
        }
        Fate::Deliver => {}
    }
    if let Some(hold) = f.hold("command", &msg_id) {
        tracing::info!(%msg_id, hold_ms = hold.as_millis() as u64, "fault injection: command held");
        let js = js.clone();
        // Detached: a held command still unsent at exit is lost, like a dropped one.
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if let Ok(ack) = js.publish_with_headers(subject, headers, body.into()).await {
                let _ = ack.await;
            }
        });
        return Ok(Ack(Box::pin(async { Ok(()) })));
    }
    let ack = js.publish_with_headers(subject, headers, body.into()).await?;
    Ok(Ack(Box::pin(async move { ack.await.map(|_| ()) })))
}

/// What the intake does with a reply after fault injection saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFate {
    /// Apply it as usual.
    Apply,
    /// Acknowledge it without applying it: it is lost.
    Lost,
}

impl ReplyFate {
    #[must_use]
    pub fn is_lost(self) -> bool {
        self == Self::Lost
    }
}

/// Before the intake applies `reply`: lose it, hold it, or apply an extra
/// copy first. [`ReplyFate::Apply`] when faults are off.
pub async fn on_reply(driver: &Driver, saga_id: &str, reply: &Reply) -> ReplyFate {
    let Some(f) = active() else { return ReplyFate::Apply };
    let key = format!("{}/{}", reply.command_id, reply.attempt);
    if let Some(hold) = f.hold("reply", &key) {
        tracing::info!(%key, hold_ms = hold.as_millis() as u64, "fault injection: reply held");
        tokio::time::sleep(hold).await;
    }
    match f.fate("reply", &key) {
        Fate::Deliver => ReplyFate::Apply,
        Fate::Drop => {
            tracing::info!(%key, "fault injection: reply lost");
            ReplyFate::Lost
        }
        Fate::Dup => {
            tracing::info!(%key, "fault injection: reply applied twice");
            if let Err(e) = driver.handle(saga_id, &Input::Reply(reply.clone())).await {
                tracing::info!(%key, error = %e, "fault injection: the extra copy was refused");
            }
            ReplyFate::Apply
        }
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
