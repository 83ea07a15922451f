//! The outbox relay: publishes committed commands to JetStream, then forgets them.
//!
//! Commands reach the relay two ways. The store's writer hands over the rows
//! it has just committed ([`crate::store::Handoff`]), so the usual path never
//! reads the outbox back. Anything else is found by scanning the table: at
//! start (rows an earlier run left), when asked (a partition was taken over,
//! a publish failed, the hand-off was full), and once a second for
//! rows older than [`SCAN_AGE_MS`] (another instance's rows it could not
//! publish), only for the partitions this instance owns.
//!
//! Rows are deleted only after JetStream acknowledged them, a batch at a time
//! ([`DELETE_EVERY`], [`DELETE_BATCH_MAX`]) so that deletes do not cost a
//! commit per command. Each carries `Nats-Msg-Id: <command id>/<attempt>`, so
//! publishing a row twice (a crash between the ack and the delete, a scan that
//! meets a row also handed over) is dropped by JetStream's dedupe window.
//! When NATS is down the rows stay and the relay retries with backoff.
//!
//! With direct delivery ([`crate::bus::direct`]) nothing acknowledges a
//! publish: a published row is kept, in the table and in memory
//! ([`WAITING_MAX`] at most), and sent again after half the time left to
//! its attempt's deadline (at least [`RESEND_FIRST`]), then after pauses that
//! double up to [`RESEND_MAX`], until the intake reports
//! its reply recorded; then it is deleted like an acknowledged one. A row of a
//! partition this instance no longer owns is dropped from memory (its new
//! owner's scan finds it). The table is then scanned a batch at a time from
//! where the last scan stopped, so rows kept waiting never hide the rest.
//! A command still unanswered [`EXPIRED_AFTER_MS`] past its deadline is
//! deleted: the saga has timed the attempt out, and a retry is a row of its
//! own.
//!
//! Each command also carries a W3C `traceparent` header derived from the row's
//! saga id and message id ([`crate::trace::traceparent`]): the saga's trace,
//! a span per attempt. Nothing about it is stored.

use crate::bus::direct::Answered;
use crate::cluster::partitions::Ownership;
use crate::store::Store;
use crate::store::entities::outbox;
use async_nats::HeaderMap;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sagas::protocol::{HEADER_MSG_ID, HEADER_TRACEPARENT};
use skald_transport::publish::{Publisher, arranged};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Longest wait between retries while NATS is unreachable.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the outbox table is scanned for rows that were not handed over.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// A periodic scan takes only rows at least this old: younger ones are still
/// on their way through the hand-off.
pub const SCAN_AGE_MS: i64 = 2_000;
/// Longest an acknowledged row waits for its delete.
const DELETE_EVERY: Duration = Duration::from_millis(50);
/// Acknowledged rows deleted in one statement at most (and at once when reached).
const DELETE_BATCH_MAX: usize = 1_024;
/// Longest wait for the acknowledgements of one round of publishes.
const ROUND_ACKS_MAX: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the outbox to drain.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Direct delivery: the first pause before an unanswered command is sent again.
pub const RESEND_FIRST: Duration = Duration::from_secs(2);
/// Direct delivery: the longest pause between two sends of one command.
pub const RESEND_MAX: Duration = Duration::from_secs(30);
/// Direct delivery: how often the relay looks for commands due again.
const RESEND_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Direct delivery: how often the table is scanned for rows not in memory.
const DIRECT_SCAN_EVERY: Duration = Duration::from_secs(10);
/// Direct delivery: most unanswered commands kept in memory; the rest wait
/// in the table for a scan.
pub const WAITING_MAX: usize = 65_536;
/// Direct delivery: how long past its attempt's answer deadline a command is
/// still sent. After it the saga has timed the attempt out (a retry is a row
/// of its own), so an answer would be refused: the row is deleted instead.
pub const EXPIRED_AFTER_MS: i64 = 5_000;

/// What the relay works with: the store (its outbox and hand-off), which
/// partitions are this instance's, and where commands are published.
#[derive(Debug, Clone)]
pub struct RelayParts {
    pub store: Store,
    pub ownership: Ownership,
    pub publisher: Arc<dyn Publisher>,
    /// Direct delivery: the commands the intake reports answered. `None`:
    /// JetStream delivery, where a row is deleted once JetStream has it.
    pub answered: Option<Arc<Answered>>,
}

/// Run until `shutdown`, then drain what is left for a short while.
pub async fn run(parts: RelayParts, shutdown: CancellationToken) {
    let mut relay = Relay::new(parts);
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let result = tokio::select! {
            // Cancelled mid-round: unacknowledged rows stay in the outbox; the
            // drain below (bounded) or the next start publishes them.
            () = shutdown.cancelled() => break,
            r = relay.round() => r,
        };
        match result {
            Ok(Some(_)) => backoff = Duration::from_millis(100),
            Ok(None) => {
                backoff = Duration::from_millis(100);
                if !relay.parts.store.handoff().is_empty() {
                    continue;
                }
                let idle = relay.idle_for();
                tokio::select! {
                    // Cancelled: nothing in flight; acknowledged rows are deleted below.
                    () = shutdown.cancelled() => break,
                    () = relay.parts.store.handoff().wait() => {}
                    () = tokio::time::sleep(idle) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay cannot publish");
                if !super::paused(&shutdown, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    let drain = async {
        relay.parts.store.handoff().miss();
        while let Ok(Some(_)) = relay.round().await {}
        relay.delete_acked().await
    };
    match tokio::time::timeout(DRAIN_MAX, drain).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "published commands not forgotten at shutdown; the next start publishes them again (JetStream drops the duplicates)")
        }
        Err(_) => {
            tracing::warn!("outbox not drained at shutdown; the next start publishes the rest")
        }
    }
}

struct Relay {
    parts: RelayParts,
    /// Rows JetStream acknowledged (or, with direct delivery, whose reply
    /// was recorded), still to be deleted.
    acked: Vec<i64>,
    /// When the oldest of `acked` was acknowledged.
    acked_since: Option<Instant>,
    last_scan: Instant,
    /// Direct delivery: the published rows waiting for their replies.
    waiting: Option<Waiting>,
}

/// Direct delivery's published, unanswered commands, by message id.
#[derive(Default)]
struct Waiting {
    rows: HashMap<String, Resend>,
    last_check: Option<Instant>,
    /// Where the next scan of the table starts (row id).
    cursor: i64,
}

struct Resend {
    row: outbox::Model,
    /// Other rows with the same message id (queued again by a takeover).
    also: Vec<i64>,
    due: Instant,
    pause: Duration,
    /// When (Unix ms) the row is forgotten unanswered ([`EXPIRED_AFTER_MS`]).
    expires_ms: i64,
}

/// The answer deadline (Unix ms) a command row's body carries; none for
/// other rows (a saga's end) or a body that does not say.
fn deadline_ms(row: &outbox::Model) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Deadline {
        deadline_unix_ms: i64,
    }
    serde_json::from_str::<Deadline>(&row.body).ok().map(|d| d.deadline_unix_ms)
}

/// When a row with answer deadline `deadline` ([`deadline_ms`]) stops being
/// sent: [`EXPIRED_AFTER_MS`] past it; never without one.
fn expires_ms(deadline: Option<i64>) -> i64 {
    deadline.map_or(i64::MAX, |d| d.saturating_add(EXPIRED_AFTER_MS))
}

/// The pause before a command is first sent again: half the time left to
/// its deadline, at least [`RESEND_FIRST`] and at most [`RESEND_MAX`] (a slow
/// handler is not sent its command twice while its attempt has long to run).
fn first_pause(deadline: Option<i64>, now_ms: i64) -> Duration {
    let left_ms = deadline.map_or(0, |d| d.saturating_sub(now_ms).max(0));
    Duration::from_millis(u64::try_from(left_ms / 2).unwrap_or(0)).clamp(RESEND_FIRST, RESEND_MAX)
}

impl Relay {
    fn new(parts: RelayParts) -> Self {
        let waiting = parts.answered.is_some().then(Waiting::default);
        Self { parts, acked: Vec::new(), acked_since: None, last_scan: Instant::now(), waiting }
    }

    /// How long the relay may sleep when it has nothing to publish.
    fn idle_for(&self) -> Duration {
        let every = if self.waiting.is_some() { DIRECT_SCAN_EVERY } else { SCAN_EVERY };
        let mut idle = every.saturating_sub(self.last_scan.elapsed());
        if let Some(since) = self.acked_since {
            idle = idle.min(DELETE_EVERY.saturating_sub(since.elapsed()));
        }
        if self.waiting.as_ref().is_some_and(|w| !w.rows.is_empty()) {
            idle = idle.min(RESEND_CHECK_EVERY);
        }
        idle
    }

    /// Direct delivery: move the rows whose replies were recorded to `acked`.
    fn forget_answered(&mut self) {
        let (Some(waiting), Some(answered)) = (&mut self.waiting, &self.parts.answered) else {
            return;
        };
        let taken = answered.take();
        let mut unknown = 0;
        for msg_id in &taken {
            if let Some(done) = waiting.rows.remove(msg_id) {
                self.acked.push(done.row.id);
                self.acked.extend(done.also);
                self.acked_since.get_or_insert_with(Instant::now);
            } else {
                unknown += 1;
            }
        }
        if !taken.is_empty() {
            tracing::trace!(
                answered = taken.len(),
                unknown,
                waiting = waiting.rows.len(),
                "answered commands forgotten"
            );
        }
    }

    /// Direct delivery: remember published rows until they are answered; a
    /// row already waiting (the same message id) only adds its id. (Without
    /// direct delivery no row is kept: there are none.)
    fn keep_waiting(&mut self, rows: Vec<outbox::Model>) {
        let Some(waiting) = &mut self.waiting else {
            if !rows.is_empty() {
                self.acked_since.get_or_insert_with(Instant::now);
                self.acked.extend(rows.iter().map(|row| row.id));
            }
            return;
        };
        let (now, now_ms) = (Instant::now(), self.parts.store.clock().now_db());
        for row in rows {
            if let Some(known) = waiting.rows.get_mut(&row.msg_id) {
                if known.row.id != row.id && !known.also.contains(&row.id) {
                    known.also.push(row.id);
                }
            } else if waiting.rows.len() < WAITING_MAX {
                let deadline = deadline_ms(&row);
                let (pause, expires_ms) = (first_pause(deadline, now_ms), expires_ms(deadline));
                let resend = Resend { row, also: Vec::new(), due: now + pause, pause, expires_ms };
                waiting.rows.insert(resend.row.msg_id.clone(), resend);
            }
        }
    }

    /// Direct delivery: send again the commands due, at most a batch; forget
    /// the ones of partitions no longer owned, and delete the expired ones.
    /// The number sent.
    async fn resend_due(&mut self) -> Result<usize, String> {
        let ownership = self.parts.ownership.clone();
        let now_ms = self.parts.store.clock().now_db();
        let Some(waiting) = &mut self.waiting else { return Ok(0) };
        let now = Instant::now();
        if waiting.last_check.is_some_and(|at| now.duration_since(at) < RESEND_CHECK_EVERY) {
            return Ok(0);
        }
        waiting.last_check = Some(now);
        let mut expired = Vec::new();
        waiting.rows.retain(|_, r| {
            if r.expires_ms < now_ms {
                expired.push(r.row.id);
                expired.extend(&r.also);
                return false;
            }
            ownership.fence(r.row.partition).is_ok()
        });
        if !expired.is_empty() {
            tracing::debug!(
                rows = expired.len(),
                "unanswered commands past their deadline forgotten"
            );
            self.acked_since.get_or_insert_with(Instant::now);
            self.acked.extend(expired);
        }
        let mut due: Vec<outbox::Model> = Vec::new();
        for resend in waiting.rows.values_mut() {
            if resend.due <= now && due.len() < crate::store::OUTBOX_BATCH_MAX as usize {
                resend.pause = (resend.pause * 2).min(RESEND_MAX);
                resend.due = now + resend.pause;
                due.push(resend.row.clone());
            }
        }
        if due.is_empty() {
            return Ok(0);
        }
        let first = due.first().map(|row| row.msg_id.clone()).unwrap_or_default();
        tracing::debug!(commands = due.len(), %first, "sending unanswered commands again");
        let (sent, error) = publish(self.parts.publisher.as_ref(), due).await;
        match error {
            Some(e) if sent.is_empty() => Err(e),
            _ => Ok(sent.len()),
        }
    }

    /// Publish one batch: `Some(n)` rows published, `None` when there was
    /// nothing to do; acknowledged rows are deleted when their batch is due.
    async fn round(&mut self) -> Result<Option<usize>, String> {
        self.forget_answered();
        let rows = self.next_rows().await?;
        let result = if rows.is_empty() {
            Ok(None)
        } else {
            let (acked, error) = publish(self.parts.publisher.as_ref(), rows).await;
            if error.is_some() {
                // The rows not acknowledged stay in the table: find them again.
                self.parts.store.handoff().miss();
            }
            let count = acked.len();
            let publisher = self.parts.publisher.clone();
            let (kept, done): (Vec<_>, Vec<_>) =
                acked.into_iter().partition(|row| publisher.kept_until_answered(&row.subject));
            self.keep_waiting(kept);
            if !done.is_empty() {
                self.acked_since.get_or_insert_with(Instant::now);
                self.acked.extend(done.iter().map(|row| row.id));
            }
            match error {
                Some(e) if count == 0 => Err(e),
                _ => Ok(Some(count)),
            }
        };
        let result = match (result, self.resend_due().await) {
            (Ok(None), Ok(n)) if n > 0 => Ok(Some(0)),
            (Ok(_), Err(e)) => Err(e),
            (result, _) => result,
        };
        let due = self.acked.len() >= DELETE_BATCH_MAX
            || self.acked_since.is_some_and(|since| since.elapsed() >= DELETE_EVERY);
        if due {
            self.delete_acked().await?;
        }
        result
    }

    /// Rows to publish: a scan when one is owed, else what was handed over.
    async fn next_rows(&mut self) -> Result<Vec<outbox::Model>, String> {
        let store = self.parts.store.clone();
        let handoff = store.handoff();
        let every = if self.waiting.is_some() { DIRECT_SCAN_EVERY } else { SCAN_EVERY };
        let older_than = if handoff.take_missed() {
            None
        } else if self.last_scan.elapsed() >= every {
            Some(store.clock().now_db() - SCAN_AGE_MS)
        } else {
            let rows = handoff.take(crate::store::OUTBOX_BATCH_MAX as usize);
            return Ok(arranged(self.parts.publisher.as_ref(), rows));
        };
        // A scan must not meet rows already published and not yet deleted.
        if let Err(e) = self.delete_acked().await {
            handoff.miss();
            return Err(e);
        }
        self.last_scan = Instant::now();
        let owned = self.parts.ownership.filter();
        let after = self.waiting.as_ref().map_or(0, |w| w.cursor);
        let rows = match store
            .outbox_after(after, crate::store::OUTBOX_BATCH_MAX, owned.as_deref(), older_than)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                handoff.miss();
                return Err(e.to_string());
            }
        };
        let full = rows.len() as u64 >= crate::store::OUTBOX_BATCH_MAX;
        if full {
            handoff.miss(); // more where these came from
        }
        let rows = match &mut self.waiting {
            None => rows,
            Some(waiting) => {
                // Walk on from here next time; start over after the last batch.
                waiting.cursor = if full { rows.last().map_or(0, |r| r.id) } else { 0 };
                // Rows waiting in memory are sent again on their own schedule.
                let (known, new): (Vec<_>, Vec<_>) =
                    rows.into_iter().partition(|r| waiting.rows.contains_key(&r.msg_id));
                // Rows past their deadline are not sent: they are deleted.
                let now_ms = store.clock().now_db();
                let (expired, new): (Vec<_>, Vec<_>) =
                    new.into_iter().partition(|r| expires_ms(deadline_ms(r)) < now_ms);
                if !expired.is_empty() {
                    self.acked_since.get_or_insert_with(Instant::now);
                    self.acked.extend(expired.iter().map(|r| r.id));
                }
                self.keep_waiting(known);
                new
            }
        };
        // What was handed over meanwhile goes too: its wake-up brought this
        // round, so a later round would not be woken for it.
        let mut rows = rows;
        let scanned: std::collections::HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let handed = handoff.take(crate::store::OUTBOX_BATCH_MAX as usize);
        rows.extend(handed.into_iter().filter(|r| !scanned.contains(&r.id)));
        Ok(arranged(self.parts.publisher.as_ref(), rows))
    }

    /// Forget the rows JetStream has acknowledged.
    async fn delete_acked(&mut self) -> Result<(), String> {
        if self.acked.is_empty() {
            return Ok(());
        }
        for chunk in self.acked.chunks(DELETE_BATCH_MAX) {
            self.parts.store.outbox_delete(chunk).await.map_err(|e| e.to_string())?;
        }
        self.acked.clear();
        self.acked_since = None;
        Ok(())
    }
}

/// Publish `rows`; the rows JetStream acknowledged, and the first error.
async fn publish(
    publisher: &dyn Publisher,
    rows: Vec<outbox::Model>,
) -> (Vec<outbox::Model>, Option<String>) {
    // Pipeline: send every publish first, then collect the acks.
    let mut pending = Vec::with_capacity(rows.len());
    let mut first_error = None;
    for row in rows {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, row.msg_id.as_str());
        let traceparent = crate::trace::traceparent(&row.saga_id, &row.msg_id);
        headers.insert(HEADER_TRACEPARENT, traceparent.as_str());
        let span = tracing::info_span!(
            "publish",
            saga_id = %row.saga_id,
            trace_id = %crate::trace::trace_id(&row.saga_id),
            msg_id = %row.msg_id,
        );
        crate::trace::link(&span, &row.saga_id);
        let publish = publisher.publish(row.subject.clone(), headers, row.body.clone());
        match publish.instrument(span).await {
            Ok(ack) => pending.push((row, ack)),
            Err(e) => {
                first_error = Some(e.to_string());
                break;
            }
        }
    }
    // All acks are awaited together under one deadline: acks lost with a
    // connection cost one deadline per round, not one timeout per row.
    let mut acks: FuturesUnordered<_> =
        pending.into_iter().map(|(row, ack)| async move { (row, ack.await) }).collect();
    let mut done = Vec::with_capacity(acks.len());
    let deadline = tokio::time::sleep(ROUND_ACKS_MAX);
    tokio::pin!(deadline);
    while !acks.is_empty() {
        tokio::select! {
            // Cancelled: the rows not yet acknowledged stay and are published
            // again after a scan (JetStream drops the duplicates by message id).
            () = &mut deadline => {
                first_error.get_or_insert_with(|| "acknowledgements timed out".into());
                break;
            }
            Some((row, result)) = acks.next() => match result {
                Ok(_) => done.push(row),
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                }
            },
        }
    }
    (done, first_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::driver::Driver;
    use crate::engine::registry::Registry;
    use crate::store::Store;
    use sagas::protocol::Namespace;
    use skald_testkit::{Backend, TempDatabase};
    use std::sync::Arc;

    /// Never asked to publish: these tests only take rows.
    #[derive(Debug)]
    struct NoPublisher;

    impl Publisher for NoPublisher {
        fn publish(
            &self,
            _: String,
            _: HeaderMap,
            _: String,
        ) -> futures::future::BoxFuture<
            '_,
            Result<skald_transport::publish::Ack, async_nats::jetstream::context::PublishError>,
        > {
            Box::pin(async { Ok(skald_transport::publish::Ack::ready()) })
        }
    }

    const BENCH: &str = include_str!("../../../sagas/definitions/bench.yaml");

    fn row(body: &str) -> outbox::Model {
        outbox::Model {
            id: 1,
            saga_id: "s".into(),
            subject: "t.cmd.p.a".into(),
            msg_id: "s.one.do/1".into(),
            body: body.into(),
            created_at_ms: 0,
            partition: 0,
        }
    }

    #[test]
    fn a_command_is_sent_again_after_half_its_time_and_forgotten_past_its_deadline() {
        let command = row(r#"{"command_id":"s.one.do","deadline_unix_ms":110000}"#);
        let at = |ms| first_pause(deadline_ms(&command), ms);
        assert_eq!(at(100_000), Duration::from_secs(5), "half of the 10 s left");
        assert_eq!(at(0), RESEND_MAX, "at most the longest pause");
        assert_eq!(at(109_000), RESEND_FIRST, "at least the first pause");
        assert_eq!(at(200_000), RESEND_FIRST, "past the deadline");
        assert_eq!(expires_ms(deadline_ms(&command)), 110_000 + EXPIRED_AFTER_MS);
        let end = row(r#"{"saga_id":"s","status":"completed"}"#);
        assert_eq!(deadline_ms(&end), None);
        assert_eq!(expires_ms(None), i64::MAX, "a row without a deadline never expires");
        assert_eq!(first_pause(None, 0), RESEND_FIRST);
    }

    /// A round that falls due for the periodic scan still takes what was
    /// handed over: the wake-up that brought it was for those rows, and no
    /// other would come (a saga waiting on that command would wait for the
    /// scan's age limit, then its step timeout).
    #[tokio::test]
    async fn a_scan_round_takes_the_handed_over_rows_too() {
        let db = TempDatabase::new(Backend::Sqlite).await.unwrap();
        let store = Store::connect(&db.url).await.unwrap();
        let def = sagas::definition::load("bench.yaml", BENCH).unwrap();
        let registry = Registry::with_store(&store, vec![def]).await.unwrap();
        let driver =
            Driver::new(store.clone(), Arc::new(registry), Namespace::new("t").unwrap(), 1);
        let publisher = Arc::new(NoPublisher);
        let mut relay = Relay::new(RelayParts {
            store,
            ownership: driver.ownership().clone(),
            publisher,
            answered: None,
        });
        assert!(
            relay.next_rows().await.unwrap().is_empty(),
            "the first round scans an empty table"
        );

        driver.start("bench", "k", &serde_json::json!({})).await.unwrap();
        relay.last_scan = Instant::now().checked_sub(SCAN_EVERY * 2).unwrap();
        let rows = relay.next_rows().await.unwrap();
        assert_eq!(rows.len(), 1, "the start's command, handed over during a scan round");
        assert!(rows[0].msg_id.ends_with(".one.do/1"), "{:?}", rows[0].msg_id);
        assert!(relay.next_rows().await.unwrap().is_empty(), "taken once");
        db.remove().await;
    }
}
