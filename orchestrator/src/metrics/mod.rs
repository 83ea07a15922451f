//! Prometheus metrics of one orchestrator, in the OpenMetrics text format.
//!
//! Each [`Metrics`] owns its registry (there is no global one), so several
//! orchestrators in one test process keep their numbers apart. It is cheap to
//! clone: every clone counts into the same registry.
//!
//! What is counted where:
//! - starts in [`crate::engine::driver::Driver::start`] (new sagas only, not repeats of a key);
//! - ends, retries and step answers from the events of each decision the driver
//!   persisted ([`Metrics::decision_persisted`], [`step_observations`]);
//! - the outbox and the reply consumers by a sampler task ([`sampler`]);
//! - partitions owned by the membership loop ([`crate::cluster::partitions`]), stale
//!   writes by the driver when a fenced append is refused.
//!
//! Label values are bounded: saga types, participants and actions come from
//! the loaded definitions (a bounded set of validated names), kinds, statuses
//! and outcomes are enums, partitions are at most
//! [`crate::serve::PARTITIONS_MAX`]. As a guard all the same, a family stops
//! growing at [`SERIES_PER_FAMILY_MAX`] series and counts the rest under the
//! label value [`OVERFLOW_LABEL`].

pub mod observe;
pub mod sampler;

pub use observe::{StepObservation, step_observations};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sagas::machine::{Decision, ResolvedAs, SagaEvent};
use sagas::protocol::Kind;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Most label sets one metric family keeps; later ones count under [`OVERFLOW_LABEL`].
pub const SERIES_PER_FAMILY_MAX: usize = 2_048;
/// The label value that stands for every value past [`SERIES_PER_FAMILY_MAX`].
pub const OVERFLOW_LABEL: &str = "_other";

/// How a saga reached an end state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndStatus {
    Completed,
    Compensated,
    Failed,
    Parked,
}

impl EndStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::Parked => "parked",
        }
    }

    /// The end state an event brings a saga to, if it is an ending event.
    #[must_use]
    pub fn of(event: &SagaEvent) -> Option<Self> {
        match event {
            SagaEvent::SagaCompleted { .. }
            | SagaEvent::SagaResolved { outcome: ResolvedAs::Completed, .. } => {
                Some(Self::Completed)
            }
            SagaEvent::SagaCompensated { .. }
            | SagaEvent::SagaResolved { outcome: ResolvedAs::Compensated, .. } => {
                Some(Self::Compensated)
            }
            SagaEvent::SagaFailed { .. }
            | SagaEvent::SagaResolved { outcome: ResolvedAs::Failed, .. } => Some(Self::Failed),
            SagaEvent::SagaParked { .. } => Some(Self::Parked),
            _ => None,
        }
    }
}

/// How one attempt of a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// `ok` (also a late one, for a step already given up on).
    Ok,
    /// `failed`: a refusal for good.
    Failed,
    /// `retry`: a transient problem.
    Retry,
    /// No answer before the step's timeout.
    Timeout,
}

impl StepOutcome {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Retry => "retry",
            Self::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaLabels {
    saga_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    saga_type: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    participant: String,
    action: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    participant: String,
    action: String,
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why a reply was terminated (acknowledged without being applied, never redelivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminatedReply {
    /// Not JSON of a reply, or over the size limit.
    Malformed,
    /// The saga does not exist (here).
    UnknownSaga,
    /// The machine refused it: unknown command, attempt never sent, saga ended.
    Refused,
    /// The saga cannot be loaded (unknown definition, corrupt history).
    Unloadable,
    /// Published on another partition's reply subject than its saga's.
    WrongPartition,
    /// Its subject names another participant than the one the command went to.
    WrongSender,
}

impl TerminatedReply {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownSaga => "unknown_saga",
            Self::Refused => "refused",
            Self::Unloadable => "unloadable",
            Self::WrongPartition => "wrong_partition",
            Self::WrongSender => "wrong_sender",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: u32,
}

/// Buckets of the step latency histogram: 5 ms doubling to about 41 s.
fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// A metric family that stops adding label sets at [`SERIES_PER_FAMILY_MAX`]:
/// later ones are recorded under `overflow(labels)`.
#[derive(Debug)]
struct Bounded<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    /// Label sets created so far (two threads creating the same new one at
    /// once count it twice: the limit can only come a little early).
    series: AtomicUsize,
    overflow: fn(S) -> S,
}

impl<S: Clone + Hash + Eq, M, C: MetricConstructor<M>> Bounded<S, M, C> {
    fn new(family: Family<S, M, C>, overflow: fn(S) -> S) -> Self {
        Self { family, series: AtomicUsize::new(0), overflow }
    }

    /// Run `record` on the series of `labels` (or of its overflow).
    fn with(&self, labels: S, record: impl FnOnce(&M)) {
        let labels = if self.family.get(&labels).is_some()
            || self.series.fetch_add(1, Ordering::Relaxed) < SERIES_PER_FAMILY_MAX
        {
            labels
        } else {
            (self.overflow)(labels)
        };
        record(&self.family.get_or_create(&labels));
    }
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    sagas_started: Bounded<SagaLabels, Counter>,
    sagas_ended: Bounded<EndLabels, Counter>,
    step_duration: Bounded<StepLabels, Histogram, fn() -> Histogram>,
    step_outcomes: Bounded<OutcomeLabels, Counter>,
    step_retries: Bounded<StepLabels, Counter>,
    stale_writes_rejected: Counter,
    replies_terminated: Family<ReasonLabels, Counter>,
    outbox_backlog: Gauge,
    outbox_oldest_age: Gauge<f64, AtomicU64>,
    reply_consumer_lag: Bounded<PartitionLabels, Gauge>,
    partitions_owned: Gauge,
    sagas_archived: Counter,
    archive_failures: Counter,
    sagas_stuck: Family<ClassLabels, Gauge>,
}

/// The orchestrator's metrics and their registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skald");
        let sagas_started = Family::<SagaLabels, Counter>::default();
        registry.register("sagas_started", "Sagas started, by type", sagas_started.clone());
        let sagas_ended = Family::<EndLabels, Counter>::default();
        registry.register(
            "sagas_ended",
            "Sagas that reached an end state (completed, compensated, failed, parked), by type",
            sagas_ended.clone(),
        );
        let step_duration: Family<StepLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(step_histogram);
        registry.register(
            "step_duration_seconds",
            "Time from sending a command attempt to its answer, by participant, action and kind \
             (timeouts excluded)",
            step_duration.clone(),
        );
        let step_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "step_outcomes",
            "Command attempts that got an answer (ok, failed, retry) or timed out",
            step_outcomes.clone(),
        );
        let step_retries = Family::<StepLabels, Counter>::default();
        registry.register(
            "step_retries",
            "Command attempts after the first (after a retry answer, a timeout or an operator)",
            step_retries.clone(),
        );
        let stale_writes_rejected = Counter::default();
        registry.register(
            "stale_writes_rejected",
            "Appends refused because this instance no longer held the partition's lease",
            stale_writes_rejected.clone(),
        );
        let replies_terminated = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "replies_terminated",
            "Replies acknowledged without being applied, by reason (malformed, unknown_saga, \
             refused, unloadable, wrong_partition)",
            replies_terminated.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Commands committed but not yet acknowledged by JetStream (outbox rows)",
            outbox_backlog.clone(),
        );
        let outbox_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest outbox row (0 when the outbox is empty)",
            outbox_oldest_age.clone(),
        );
        let reply_consumer_lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "reply_consumer_lag",
            "Replies in JetStream not yet delivered to this partition's consumer (num_pending)",
            reply_consumer_lag.clone(),
        );
        let partitions_owned = Gauge::default();
        registry.register(
            "partitions_owned",
            "Partitions whose replies and timers this instance handles",
            partitions_owned.clone(),
        );
        let sagas_archived = Counter::default();
        registry.register(
            "sagas_archived",
            "Ended sagas written to the archive and removed from the hot tables (retention)",
            sagas_archived.clone(),
        );
        let sagas_stuck = Family::<ClassLabels, Gauge>::default();
        registry.register(
            "sagas_stuck",
            "Sagas in each stuck class, across the cluster (every instance reports the same \
             count: aggregate with max), sampled every 30 s",
            sagas_stuck.clone(),
        );
        let archive_failures = Counter::default();
        registry.register(
            "archive_failures",
            "Retention passes that failed (the store or the archive directory); retried later",
            archive_failures.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                sagas_started: Bounded::new(sagas_started, overflow_saga),
                sagas_ended: Bounded::new(sagas_ended, overflow_end),
                step_duration: Bounded::new(step_duration, overflow_step),
                step_outcomes: Bounded::new(step_outcomes, overflow_outcome),
                step_retries: Bounded::new(step_retries, overflow_step),
                stale_writes_rejected,
                // A handful of fixed reasons: no bound needed.
                replies_terminated,
                outbox_backlog,
                outbox_oldest_age,
                // Partitions are at most `serve::PARTITIONS_MAX`, under the limit.
                reply_consumer_lag: Bounded::new(reply_consumer_lag, |l| l),
                partitions_owned,
                sagas_archived,
                archive_failures,
                // One child per stuck class: a handful, no bound needed.
                sagas_stuck,
            }),
        }
    }

    /// Retention archived and removed `n` sagas.
    pub fn sagas_archived(&self, n: u64) {
        self.inner.sagas_archived.inc_by(n);
    }

    /// A retention pass failed.
    pub fn archive_failed(&self) {
        self.inner.archive_failures.inc();
    }

    /// A new saga of this type was recorded.
    pub fn saga_started(&self, saga_type: &str) {
        let labels = SagaLabels { saga_type: saga_type.to_owned() };
        self.inner.sagas_started.with(labels, |c| {
            c.inc();
        });
    }

    /// A saga of this type reached an end state.
    pub fn saga_ended(&self, saga_type: &str, status: EndStatus) {
        let labels = EndLabels { saga_type: saga_type.to_owned(), status: status.as_str() };
        self.inner.sagas_ended.with(labels, |c| {
            c.inc();
        });
    }

    /// One attempt of a command got its answer (`latency` from sending it),
    /// or timed out (`latency` none: the histogram would only show the timeout).
    pub fn step_finished(
        &self,
        participant: &str,
        action: &str,
        kind: Kind,
        outcome: StepOutcome,
        latency: Option<Duration>,
    ) {
        let labels = OutcomeLabels {
            participant: participant.to_owned(),
            action: action.to_owned(),
            kind: kind.as_str(),
            outcome: outcome.as_str(),
        };
        self.inner.step_outcomes.with(labels, |c| {
            c.inc();
        });
        if let Some(latency) = latency {
            let labels = step_labels(participant, action, kind);
            self.inner.step_duration.with(labels, |h| {
                h.observe(latency.as_secs_f64());
            });
        }
    }

    /// An attempt after the first was sent.
    pub fn retry(&self, participant: &str, action: &str, kind: Kind) {
        let labels = step_labels(participant, action, kind);
        self.inner.step_retries.with(labels, |c| {
            c.inc();
        });
    }

    /// An append was refused because another instance holds the partition now.
    pub fn stale_write_rejected(&self) {
        self.inner.stale_writes_rejected.inc();
    }

    /// A reply was terminated for `reason`.
    pub fn reply_terminated(&self, reason: TerminatedReply) {
        self.inner
            .replies_terminated
            .get_or_create(&ReasonLabels { reason: reason.as_str() })
            .inc();
    }

    /// The outbox holds `rows` commands, the oldest written `oldest_age` ago.
    pub fn set_outbox(&self, rows: u64, oldest_age: Option<Duration>) {
        self.inner.outbox_backlog.set(i64::try_from(rows).unwrap_or(i64::MAX));
        self.inner.outbox_oldest_age.set(oldest_age.map_or(0.0, |age| age.as_secs_f64()));
    }

    /// `n` sagas are in stuck class `class`.
    pub fn set_stuck(&self, class: crate::store::StuckClass, n: u64) {
        let labels = ClassLabels { class: class.as_str() };
        self.inner.sagas_stuck.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// JetStream holds `pending` replies not yet delivered to `partition`'s consumer.
    pub fn set_reply_consumer_lag(&self, partition: u32, pending: u64) {
        let labels = PartitionLabels { partition };
        self.inner.reply_consumer_lag.with(labels, |g| {
            g.set(i64::try_from(pending).unwrap_or(i64::MAX));
        });
    }

    /// This instance handles `partitions` partitions.
    pub fn set_partitions_owned(&self, partitions: u32) {
        self.inner.partitions_owned.set(i64::from(partitions));
    }

    /// Count what a persisted decision shows: the end state it reached, if
    /// any, and every attempt after the first that it sent.
    pub fn decision_persisted(&self, saga_type: &str, decision: &Decision) {
        for status in decision.events.iter().filter_map(EndStatus::of) {
            self.saga_ended(saga_type, status);
        }
        for c in decision.commands.iter().filter(|c| c.attempt > 1) {
            self.retry(&c.participant, &c.action, c.kind);
        }
    }

    /// Record what [`step_observations`] found.
    pub fn steps_observed(&self, observations: &[StepObservation]) {
        for o in observations {
            self.step_finished(&o.participant, &o.action, o.kind, o.outcome, o.latency);
        }
    }

    /// Every metric in the OpenMetrics text format (ends with `# EOF`).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            // Writing to a String does not fail; say so if it ever does.
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

fn step_labels(participant: &str, action: &str, kind: Kind) -> StepLabels {
    StepLabels {
        participant: participant.to_owned(),
        action: action.to_owned(),
        kind: kind.as_str(),
    }
}

fn overflow_saga(_: SagaLabels) -> SagaLabels {
    SagaLabels { saga_type: OVERFLOW_LABEL.to_owned() }
}

fn overflow_end(l: EndLabels) -> EndLabels {
    EndLabels { saga_type: OVERFLOW_LABEL.to_owned(), ..l }
}

fn overflow_step(l: StepLabels) -> StepLabels {
    StepLabels { participant: OVERFLOW_LABEL.to_owned(), action: OVERFLOW_LABEL.to_owned(), ..l }
}

fn overflow_outcome(l: OutcomeLabels) -> OutcomeLabels {
    OutcomeLabels { participant: OVERFLOW_LABEL.to_owned(), action: OVERFLOW_LABEL.to_owned(), ..l }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagas::UnixMillis;
    use sagas::machine::{Input, SagaState};
    use sagas::machine::{decide, replay};
    use sagas::protocol::Reply;
    use sagas::protocol::{Outcome, command_id};
    use serde_json::json;

    /// The value of the sample `name{labels}` in `text`, where `labels` is
    /// the label text between the braces in any order ("" for none). Label
    /// values here hold no commas.
    fn sample_value(text: &str, name: &str, labels: &str) -> Option<f64> {
        let label_set = |l: &str| {
            let mut set: Vec<String> =
                l.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect();
            set.sort();
            set
        };
        let wanted = label_set(labels);
        text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (found_name, found_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            (found_name == name && label_set(found_labels) == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
    }

    #[test]
    fn counters_show_with_their_labels() {
        let m = Metrics::new();
        m.saga_started("topup");
        m.saga_started("topup");
        m.saga_started("payout");
        m.saga_ended("topup", EndStatus::Completed);
        m.saga_ended("topup", EndStatus::Parked);
        m.saga_ended("payout", EndStatus::Compensated);
        m.retry("ledger", "hold", Kind::Do);
        m.retry("ledger", "hold", Kind::Do);
        m.retry("ledger", "void", Kind::Undo);
        m.stale_write_rejected();
        let text = m.render();
        assert_eq!(
            sample_value(&text, "skald_sagas_started_total", r#"saga_type="topup""#),
            Some(2.0)
        );
        assert_eq!(
            sample_value(&text, "skald_sagas_started_total", r#"saga_type="payout""#),
            Some(1.0)
        );
        let ended = "skald_sagas_ended_total";
        assert_eq!(
            sample_value(&text, ended, r#"saga_type="topup",status="completed""#),
            Some(1.0)
        );
        assert_eq!(sample_value(&text, ended, r#"saga_type="topup",status="parked""#), Some(1.0));
        assert_eq!(
            sample_value(&text, ended, r#"saga_type="payout",status="compensated""#),
            Some(1.0)
        );
        assert_eq!(sample_value(&text, ended, r#"saga_type="payout",status="completed""#), None);
        let retries = "skald_step_retries_total";
        assert_eq!(
            sample_value(&text, retries, r#"participant="ledger",action="hold",kind="do""#),
            Some(2.0)
        );
        assert_eq!(
            sample_value(&text, retries, r#"participant="ledger",action="void",kind="undo""#),
            Some(1.0)
        );
        assert_eq!(sample_value(&text, "skald_stale_writes_rejected_total", ""), Some(1.0));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn step_latency_lands_in_the_right_buckets_and_timeouts_only_count() {
        let m = Metrics::new();
        let ms = Duration::from_millis;
        m.step_finished("payment", "charge", Kind::Do, StepOutcome::Ok, Some(ms(30)));
        m.step_finished("payment", "charge", Kind::Do, StepOutcome::Retry, Some(ms(3_000)));
        m.step_finished("payment", "charge", Kind::Do, StepOutcome::Timeout, None);
        let text = m.render();
        let step = r#"participant="payment",action="charge",kind="do""#;
        let h = "skald_step_duration_seconds";
        assert_eq!(sample_value(&text, &format!("{h}_count"), step), Some(2.0));
        let sum = sample_value(&text, &format!("{h}_sum"), step).unwrap();
        assert!((sum - 3.03).abs() < 1e-9, "{sum}");
        // 30 ms is above the 20 ms bucket and within 40 ms; 3 s is above 2.56 s.
        assert_eq!(
            sample_value(&text, &format!("{h}_bucket"), &format!("{step},le=\"0.02\"")),
            Some(0.0)
        );
        assert_eq!(
            sample_value(&text, &format!("{h}_bucket"), &format!("{step},le=\"0.04\"")),
            Some(1.0)
        );
        assert_eq!(
            sample_value(&text, &format!("{h}_bucket"), &format!("{step},le=\"2.56\"")),
            Some(1.0)
        );
        assert_eq!(
            sample_value(&text, &format!("{h}_bucket"), &format!("{step},le=\"5.12\"")),
            Some(2.0)
        );
        let o = "skald_step_outcomes_total";
        for (outcome, n) in [("ok", 1.0), ("retry", 1.0), ("timeout", 1.0), ("failed", 0.0)] {
            let labels = format!("{step},outcome=\"{outcome}\"");
            assert_eq!(sample_value(&text, o, &labels).unwrap_or(0.0), n, "{outcome}");
        }
    }

    #[test]
    fn gauges_show_the_last_value_set() {
        let m = Metrics::new();
        m.set_outbox(7, Some(Duration::from_millis(2_500)));
        m.set_reply_consumer_lag(3, 12);
        m.set_reply_consumer_lag(3, 4);
        m.set_reply_consumer_lag(0, 1);
        m.set_partitions_owned(16);
        let text = m.render();
        assert_eq!(sample_value(&text, "skald_outbox_backlog", ""), Some(7.0));
        assert_eq!(sample_value(&text, "skald_outbox_oldest_age_seconds", ""), Some(2.5));
        assert_eq!(sample_value(&text, "skald_reply_consumer_lag", r#"partition="3""#), Some(4.0));
        assert_eq!(sample_value(&text, "skald_reply_consumer_lag", r#"partition="0""#), Some(1.0));
        assert_eq!(sample_value(&text, "skald_partitions_owned", ""), Some(16.0));
        m.set_outbox(0, None);
        assert_eq!(sample_value(&m.render(), "skald_outbox_oldest_age_seconds", ""), Some(0.0));
    }

    #[test]
    fn registries_are_apart_and_clones_share_one() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.clone().saga_started("topup");
        let labels = r#"saga_type="topup""#;
        assert_eq!(sample_value(&a.render(), "skald_sagas_started_total", labels), Some(1.0));
        assert_eq!(sample_value(&b.render(), "skald_sagas_started_total", labels), None);
    }

    #[test]
    fn label_sets_past_the_limit_count_as_other() {
        let m = Metrics::new();
        for i in 0..SERIES_PER_FAMILY_MAX + 5 {
            m.saga_started(&format!("type{i}"));
        }
        m.saga_started("type0");
        let text = m.render();
        let series = text.lines().filter(|l| l.starts_with("skald_sagas_started_total{")).count();
        assert_eq!(series, SERIES_PER_FAMILY_MAX + 1);
        let started = "skald_sagas_started_total";
        assert_eq!(sample_value(&text, started, r#"saga_type="_other""#), Some(5.0));
        assert_eq!(sample_value(&text, started, r#"saga_type="type0""#), Some(2.0));
    }

    #[test]
    fn ending_events_map_to_their_status() {
        let at = UnixMillis(1);
        let resolved = |outcome| SagaEvent::SagaResolved {
            outcome,
            by: "op".into(),
            evidence: "checked".into(),
            at,
        };
        assert_eq!(
            EndStatus::of(&SagaEvent::SagaCompleted { at, output: None, output_error: None }),
            Some(EndStatus::Completed)
        );
        assert_eq!(EndStatus::of(&SagaEvent::SagaCompensated { at }), Some(EndStatus::Compensated));
        assert_eq!(EndStatus::of(&resolved(ResolvedAs::Failed)), Some(EndStatus::Failed));
        assert_eq!(EndStatus::of(&resolved(ResolvedAs::Completed)), Some(EndStatus::Completed));
        assert_eq!(EndStatus::of(&SagaEvent::StepOutcomeUnknown { step: "a".into(), at }), None);
    }

    // ---- observations from real decisions ---------------------------------------

    fn bench() -> Arc<sagas::Definition> {
        let yaml = include_str!("../../../sagas/definitions/bench.yaml");
        Arc::new(sagas::definition::load("bench.yaml", yaml).unwrap())
    }

    /// Run `input` at `now_ms` on the saga of `history`, appending its events.
    fn step(history: &mut Vec<SagaEvent>, input: &Input, now_ms: u64) -> (SagaState, Decision) {
        let before = replay(bench(), history.iter());
        let decision = decide(&before, input, UnixMillis(now_ms)).unwrap();
        history.extend(decision.events.iter().cloned());
        (before, decision)
    }

    fn reply(step: &str, kind: Kind, attempt: u32, outcome: Outcome) -> Input {
        Input::Reply(Reply { command_id: command_id("s1", step, kind), attempt, outcome })
    }

    fn ok() -> Outcome {
        Outcome::Ok { output: json!({}) }
    }

    #[test]
    fn a_reply_is_timed_from_its_command_and_a_duplicate_is_not_counted() {
        let mut history = Vec::new();
        let start = Input::Start { saga_id: "s1".into(), input: json!({}) };
        let (before, decision) = step(&mut history, &start, 1_000);
        assert!(step_observations(&before, &history, &start, &decision).is_empty());

        let answer = reply("one", Kind::Do, 1, ok());
        let (before, decision) = step(&mut history, &answer, 1_250);
        let seen = step_observations(&before, &history, &answer, &decision);
        assert_eq!(
            seen,
            vec![StepObservation {
                participant: "bench".into(),
                action: "step1".into(),
                kind: Kind::Do,
                outcome: StepOutcome::Ok,
                latency: Some(Duration::from_millis(250)),
            }]
        );
        // The same answer again is absorbed: nothing new to count.
        let (before, decision) = step(&mut history, &answer, 1_300);
        assert!(decision.events.is_empty());
        assert!(step_observations(&before, &history, &answer, &decision).is_empty());
    }

    #[test]
    fn timeouts_retries_and_undo_answers_are_observed() {
        let mut history = Vec::new();
        let start = Input::Start { saga_id: "s1".into(), input: json!({}) };
        step(&mut history, &start, 1_000);
        step(&mut history, &reply("one", Kind::Do, 1, ok()), 1_100);
        // Step two is sent at 1 100 and times out (2 s) at 3 100.
        let (before, decision) = step(&mut history, &Input::Timeout, 3_100);
        let seen = step_observations(&before, &history, &Input::Timeout, &decision);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].action.as_str(), seen[0].outcome), ("step2", StepOutcome::Timeout));
        assert_eq!(seen[0].latency, None);
        // The backoff ends; attempt 2 goes out and is counted as a retry.
        let (_, decision) = step(&mut history, &Input::Timeout, 4_000);
        let m = Metrics::new();
        m.decision_persisted("bench", &decision);
        assert_eq!(
            sample_value(
                &m.render(),
                "skald_step_retries_total",
                r#"participant="bench",action="step2",kind="do""#
            ),
            Some(1.0)
        );
        // Attempt 2 is refused for good: compensation of step one starts.
        let failed = Outcome::Failed { code: "no".into(), message: "refused".into() };
        let answer = reply("two", Kind::Do, 2, failed);
        let (before, decision) = step(&mut history, &answer, 4_040);
        let seen = step_observations(&before, &history, &answer, &decision);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].outcome, seen[0].latency),
            (StepOutcome::Failed, Some(Duration::from_millis(40)))
        );
        // The undo of step one answers.
        let undo = reply("one", Kind::Undo, 1, ok());
        let (before, decision) = step(&mut history, &undo, 4_100);
        let seen = step_observations(&before, &history, &undo, &decision);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].action.as_str(), seen[0].kind), ("undo1", Kind::Undo));
        assert_eq!(seen[0].latency, Some(Duration::from_millis(60)));
        m.decision_persisted("bench", &decision);
        assert_eq!(
            sample_value(
                &m.render(),
                "skald_sagas_ended_total",
                r#"saga_type="bench",status="compensated""#
            ),
            Some(1.0)
        );
    }

    // ---- the driver's wiring --------------------------------------------------

    #[tokio::test]
    async fn the_driver_counts_starts_answers_retries_and_ends() {
        let db = skald_testkit::TempDatabase::new(skald_testkit::Backend::Sqlite).await.unwrap();
        let store = crate::store::Store::connect(&db.url).await.unwrap();
        let definition = (*bench()).clone();
        let registry =
            crate::engine::registry::Registry::with_store(&store, vec![definition]).await.unwrap();
        let ns = sagas::protocol::Namespace::new("tmetrics").unwrap();
        let driver = crate::engine::Driver::new(store.clone(), Arc::new(registry), ns, 4);

        let started = driver.start("bench", "key-1", &json!({})).await.unwrap();
        let saga_id = started.saga_id().to_owned();
        // The same key again is the same saga: not a second start.
        driver.start("bench", "key-1", &json!({})).await.unwrap();
        let answer = |step: &str, kind: Kind, attempt: u32, outcome: Outcome| {
            Input::Reply(Reply { command_id: command_id(&saga_id, step, kind), attempt, outcome })
        };
        driver.handle(&saga_id, &answer("one", Kind::Do, 1, ok())).await.unwrap();
        let retry = Outcome::retry("busy", "later");
        driver.handle(&saga_id, &answer("two", Kind::Do, 1, retry)).await.unwrap();
        // The retry is due after a backoff of at most 50 ms (bench.yaml: initial 50 ms).
        tokio::time::sleep(Duration::from_millis(150)).await;
        driver.handle(&saga_id, &Input::Timeout).await.unwrap();
        driver.handle(&saga_id, &answer("two", Kind::Do, 2, ok())).await.unwrap();
        driver.handle(&saga_id, &answer("three", Kind::Do, 1, ok())).await.unwrap();

        let text = driver.metrics().render();
        assert_eq!(
            sample_value(&text, "skald_sagas_started_total", r#"saga_type="bench""#),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "skald_sagas_ended_total",
                r#"saga_type="bench",status="completed""#
            ),
            Some(1.0)
        );
        let two = r#"participant="bench",action="step2",kind="do""#;
        assert_eq!(sample_value(&text, "skald_step_retries_total", two), Some(1.0));
        assert_eq!(sample_value(&text, "skald_step_duration_seconds_count", two), Some(2.0));
        for (outcome, n) in [("ok", 1.0), ("retry", 1.0)] {
            let labels = format!("{two},outcome=\"{outcome}\"");
            assert_eq!(sample_value(&text, "skald_step_outcomes_total", &labels), Some(n));
        }
        let one = r#"participant="bench",action="step1",kind="do""#;
        assert_eq!(sample_value(&text, "skald_step_duration_seconds_count", one), Some(1.0));

        // No relay runs here, so every command sent is still in the outbox:
        // four attempts and one saga's end, the oldest written moments ago.
        let (rows, oldest) = store.outbox_stats().await.unwrap();
        assert_eq!(rows, 5);
        let oldest = oldest.unwrap();
        assert!(store.clock().now_db() - oldest < 60_000, "{oldest}");
    }
}
