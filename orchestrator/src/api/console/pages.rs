//! The console's pages as askama templates, and the plain view models they
//! render: every value is turned into display text here (times as UTC ISO
//! text, JSON pretty-printed), so the templates only lay it out. Askama
//! escapes every `{{ }}` (the templates are `.html`); nothing here is marked
//! safe, so a saga input holding `<script>` shows as text.

use crate::api::filter::STATUSES;
use crate::api::model::{ProgressView, SagaDetail, SagaSummary};
use crate::engine::driver::RepairOutcome;
use crate::store::StuckClass;
use askama::Template;
use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};

/// What every page shows around its content: who is signed in and where the
/// assets are.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// `name (role)` of the signed-in caller; `None` on the login page.
    pub user: Option<String>,
    pub htmx_src: &'static str,
    pub css_href: &'static str,
}

/// One `<option>` of a `<select>`.
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// Options for `values`, `selected` chosen; a first empty option labelled
/// `any`; a current value not among them is kept (it came from a link).
#[must_use]
pub fn choices(any: &str, values: &[String], current: &str) -> Vec<Choice> {
    let mut out =
        vec![Choice { value: String::new(), label: any.to_owned(), selected: current.is_empty() }];
    for v in values {
        out.push(Choice { value: v.clone(), label: v.clone(), selected: v == current });
    }
    if !current.is_empty() && !values.iter().any(|v| v == current) {
        out.push(Choice { value: current.to_owned(), label: current.to_owned(), selected: true });
    }
    out
}

/// A Unix-milliseconds time as UTC ISO 8601 text (`2025-01-31T12:00:00.000Z`).
#[must_use]
pub fn utc(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

fn utc_u(ms: u64) -> String {
    utc(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// JSON for people: indented.
#[must_use]
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `k/n` attempts, `n` shown as `?` when unknown.
fn attempts(k: impl std::fmt::Display, n: Option<u32>) -> String {
    n.map_or_else(|| format!("{k}/?"), |n| format!("{k}/{n}"))
}

/// Percent-encode one query-string component (everything but RFC 3986 unreserved).
#[must_use]
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string (`?a=1&b=2`) of the pairs with a non-empty value.
#[must_use]
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

#[derive(Debug, Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    /// Where to go once signed in.
    pub next: String,
    pub error: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub message: String,
}

/// One count with the list it links to.
#[derive(Debug, Clone)]
pub struct Count {
    pub label: String,
    pub count: String,
    pub href: String,
}

/// A saga type's counts by status (overview).
#[derive(Debug, Clone)]
pub struct TypeRow {
    pub name: String,
    pub href: String,
    pub cells: Vec<Count>,
    pub total: i64,
}

#[derive(Debug, Template)]
#[template(path = "console/overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub by_status: Vec<Count>,
    pub total: i64,
    pub statuses: Vec<&'static str>,
    pub types: Vec<TypeRow>,
    pub stuck_total: u64,
    pub stuck: Vec<Count>,
    pub partitions_owned: usize,
}

/// The list's filter form, as the user filled it in.
#[derive(Debug, Clone, Default)]
pub struct FilterForm {
    pub saga_type: String,
    pub status: String,
    pub step: String,
    pub stuck: String,
    pub key: String,
    pub older_than: String,
    pub newer_than: String,
    /// One tag, `name=value`.
    pub tag: String,
}

impl FilterForm {
    /// The form's fields as query pairs (for paging links).
    #[must_use]
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("type", self.saga_type.as_str()),
            ("status", self.status.as_str()),
            ("step", self.step.as_str()),
            ("stuck", self.stuck.as_str()),
            ("key", self.key.as_str()),
            ("older_than", self.older_than.as_str()),
            ("newer_than", self.newer_than.as_str()),
            ("tag", self.tag.as_str()),
        ]
    }
}

/// One stuck class a saga is in, and why.
#[derive(Debug, Clone)]
pub struct StuckLine {
    pub class: String,
    pub detail: String,
}

/// One saga in a list.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub href: String,
    pub saga_type: String,
    pub status: String,
    pub step: String,
    pub attempts: String,
    pub key: String,
    /// Business tags, `name=value` each.
    pub tags: Vec<String>,
    pub created: String,
    pub updated: String,
    pub last_error: String,
    pub stuck: Vec<StuckLine>,
}

impl Row {
    #[must_use]
    pub fn of(s: &SagaSummary) -> Self {
        let step = match (&s.current_step, &s.current_kind) {
            (Some(step), Some(kind)) => format!("{step} ({kind})"),
            (Some(step), None) => step.clone(),
            _ => String::new(),
        };
        Self {
            id: s.saga_id.clone(),
            href: format!("/console/sagas/{}", encode(&s.saga_id)),
            saga_type: s.saga_type.clone(),
            status: s.status.clone(),
            attempts: if s.current_step.is_some() {
                attempts(s.attempt, s.attempts_max)
            } else {
                String::new()
            },
            step,
            key: s.idempotency_key.clone(),
            tags: s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            created: utc(s.created_at_ms),
            updated: utc(s.updated_at_ms),
            last_error: s.last_error.clone().unwrap_or_default(),
            stuck: s
                .stuck
                .iter()
                .map(|v| StuckLine { class: v.class.as_str().to_owned(), detail: v.detail.clone() })
                .collect(),
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "console/list.html")]
pub struct ListPage {
    pub chrome: Chrome,
    pub form: FilterForm,
    pub types: Vec<Choice>,
    pub statuses: Vec<Choice>,
    pub stuck_classes: Vec<Choice>,
    pub rows: Vec<Row>,
    pub next_href: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/stuck.html")]
pub struct StuckPage {
    pub chrome: Chrome,
    pub classes: Vec<Choice>,
    pub rows: Vec<Row>,
    pub next_href: Option<String>,
    pub error: Option<String>,
}

/// The stuck-class choices (`any` first).
#[must_use]
pub fn stuck_choices(any_label: &str, current: &str) -> Vec<Choice> {
    let mut values = vec!["any".to_owned()];
    values.extend(StuckClass::ALL.iter().map(|c| c.as_str().to_owned()));
    choices(any_label, &values, current)
}

/// The status choices.
#[must_use]
pub fn status_choices(current: &str) -> Vec<Choice> {
    let values: Vec<String> = STATUSES.iter().map(|s| (*s).to_owned()).collect();
    choices("any", &values, current)
}

/// Attempt progress of one kind of one step.
#[derive(Debug, Clone)]
pub struct ProgressRow {
    pub attempts: String,
    pub waiting: String,
    pub last_error: String,
}

impl ProgressRow {
    fn of(p: &ProgressView) -> Self {
        let waiting = match (p.waiting.as_str(), p.due_at_ms) {
            ("reply", Some(t)) => format!("reply until {}", utc_u(t)),
            ("backoff", Some(t)) => format!("retry at {}", utc_u(t)),
            (w, _) => w.to_owned(),
        };
        let mut last_error = p.last_error.clone().unwrap_or_default();
        if p.timed_out {
            last_error = if last_error.is_empty() {
                "timed out".to_owned()
            } else {
                format!("{last_error} (timed out)")
            };
        }
        Self { attempts: attempts(p.attempts, Some(p.attempts_max)), waiting, last_error }
    }
}

#[derive(Debug, Clone)]
pub struct StepRow {
    pub name: String,
    /// `participant.action`, or what a waiting step waits for.
    pub action: String,
    /// Its `when:` condition, or empty.
    pub when: String,
    pub compensation: String,
    pub pivot: bool,
    pub result: String,
    pub undo: String,
    pub do_progress: ProgressRow,
    /// `None` for a step without a compensation.
    pub undo_progress: Option<ProgressRow>,
    pub payload: Option<String>,
    pub output: Option<String>,
}

/// One step in the saga's diagram.
#[derive(Debug, Clone)]
pub struct FlowNode {
    pub name: String,
    pub result: String,
    pub pivot: bool,
    /// What to say beside it: what a waiting step waits for, a condition.
    pub note: String,
}

/// One branch of a parallel group in the diagram (a plain step's block has
/// one unnamed lane).
#[derive(Debug, Clone)]
pub struct FlowLane {
    pub name: String,
    pub nodes: Vec<FlowNode>,
}

/// A step, or a parallel group with its branches side by side.
#[derive(Debug, Clone)]
pub struct FlowBlock {
    pub group: Option<String>,
    /// The group's `when:`, or empty.
    pub when: String,
    pub lanes: Vec<FlowLane>,
}

/// The diagram of a saga's steps, in order: each parallel group one block
/// whose branches sit side by side.
fn flow(d: &SagaDetail, rows: &[StepRow]) -> Vec<FlowBlock> {
    let mut blocks: Vec<FlowBlock> = Vec::new();
    for (st, row) in d.steps.iter().zip(rows) {
        let note = if st.waits_for.is_some() {
            row.action.clone()
        } else if st.result == "skipped_by_condition" {
            "skipped: its condition was false".to_owned()
        } else if !row.when.is_empty() {
            format!("when {}", row.when)
        } else {
            String::new()
        };
        let node =
            FlowNode { name: st.name.clone(), result: st.result.clone(), pivot: st.pivot, note };
        let lane = st.branch.clone().unwrap_or_default();
        match (&st.group, blocks.last_mut()) {
            (Some(g), Some(block)) if block.group.as_ref() == Some(g) => {
                match block.lanes.iter_mut().find(|l| l.name == lane) {
                    Some(l) => l.nodes.push(node),
                    None => block.lanes.push(FlowLane { name: lane, nodes: vec![node] }),
                }
            }
            (group, _) => blocks.push(FlowBlock {
                when: group
                    .as_ref()
                    .and_then(|g| d.groups.iter().find(|x| &x.name == g))
                    .and_then(|g| g.when.clone())
                    .unwrap_or_default(),
                group: group.clone(),
                lanes: vec![FlowLane { name: lane, nodes: vec![node] }],
            }),
        }
    }
    blocks
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub at: String,
    /// Time since the saga's first event, e.g. `+1.250s`.
    pub offset: String,
    pub event_type: String,
    pub json: String,
}

#[derive(Debug, Clone)]
pub struct CommandRow {
    pub step: String,
    pub kind: String,
    pub attempt: u32,
    pub command_id: String,
    pub sent: String,
    pub timeout: String,
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct ReplyRow {
    pub step: String,
    pub kind: String,
    pub attempt: u32,
    pub outcome: String,
    pub detail: String,
    pub at: String,
    pub output: Option<String>,
}

/// Everything the saga page shows, as text.
#[derive(Debug, Clone)]
pub struct SagaView {
    pub row: Row,
    pub owner: String,
    pub partition: i32,
    pub definition: String,
    pub next_deadline: String,
    pub deadline: String,
    pub park_reason: String,
    pub cause: Option<String>,
    /// The completed saga's output (the definition's `output:`), or why
    /// it could not be rendered.
    pub output: Option<String>,
    pub input: String,
    pub steps: Vec<StepRow>,
    /// The steps drawn as a diagram.
    pub flow: Vec<FlowBlock>,
    pub events: Vec<EventRow>,
    pub commands: Vec<CommandRow>,
    pub replies: Vec<ReplyRow>,
}

impl SagaView {
    #[must_use]
    pub fn of(d: &SagaDetail) -> Self {
        let s = &d.summary;
        let first = d.events.first().map_or(0, |e| e.recorded_at_ms);
        let steps: Vec<StepRow> = d
            .steps
            .iter()
            .map(|st| StepRow {
                name: st.name.clone(),
                action: match &st.waits_for {
                    // A waiting step sends nothing: say what it waits for.
                    Some(w) => {
                        let key =
                            w.key.as_deref().map(|k| format!(" (key {k})")).unwrap_or_default();
                        let until = match (&st.do_progress.waiting[..], st.do_progress.due_at_ms) {
                            ("reply", Some(due)) => {
                                format!(", until {}", utc(i64::try_from(due).unwrap_or(i64::MAX)))
                            }
                            _ => format!(", up to {}s", w.timeout_ms / 1000),
                        };
                        format!("waits for event `{}`{key}{until}", w.event)
                    }
                    None => format!("{}.{}", st.participant, st.action),
                },
                when: st.when.clone().unwrap_or_default(),
                compensation: st.compensation.clone().unwrap_or_default(),
                pivot: st.pivot,
                result: st.result.clone(),
                undo: st.undo.clone(),
                do_progress: ProgressRow::of(&st.do_progress),
                undo_progress: st.compensation.as_ref().map(|_| ProgressRow::of(&st.undo_progress)),
                payload: st.payload.as_ref().map(pretty),
                output: st.output.as_ref().map(pretty),
            })
            .collect();
        Self {
            row: Row::of(s),
            owner: d.owner.clone().unwrap_or_else(|| "none (no live owner here)".to_owned()),
            partition: s.partition,
            definition: format!(
                "{} v{} ({})",
                s.saga_type,
                d.definition_version,
                d.definition_hash.get(..12).unwrap_or(&d.definition_hash)
            ),
            next_deadline: s.next_deadline_ms.map(utc).unwrap_or_default(),
            deadline: s.deadline_at_ms.map(utc).unwrap_or_default(),
            park_reason: s.park_reason.clone().unwrap_or_default(),
            cause: d.cause.as_ref().map(pretty),
            output: d
                .output
                .as_ref()
                .map(pretty)
                .or_else(|| d.output_error.as_ref().map(|e| format!("not rendered: {e}"))),
            input: pretty(&d.input),
            flow: flow(d, &steps),
            steps,
            events: d
                .events
                .iter()
                .map(|e| {
                    let since = e.recorded_at_ms.saturating_sub(first);
                    EventRow {
                        seq: e.seq,
                        at: utc(e.recorded_at_ms),
                        offset: format!("+{}.{:03}s", since / 1000, since % 1000),
                        event_type: e.event_type.clone(),
                        json: pretty(&e.event),
                    }
                })
                .collect(),
            commands: d
                .commands
                .iter()
                .map(|c| CommandRow {
                    step: c.step.clone(),
                    kind: c.kind.clone(),
                    attempt: c.attempt,
                    command_id: c.command_id.clone(),
                    sent: utc_u(c.sent_at_ms),
                    timeout: utc_u(c.timeout_at_ms),
                    payload: pretty(&c.payload),
                })
                .collect(),
            replies: d
                .replies
                .iter()
                .map(|r| ReplyRow {
                    step: r.step.clone(),
                    kind: r.kind.clone(),
                    attempt: r.attempt,
                    outcome: r.outcome.clone(),
                    detail: match (&r.code, &r.message) {
                        (Some(c), Some(m)) => format!("{c}: {m}"),
                        (Some(c), None) => c.clone(),
                        (None, Some(m)) => m.clone(),
                        (None, None) => String::new(),
                    },
                    at: utc_u(r.at_ms),
                    output: r.output.as_ref().map(pretty),
                })
                .collect(),
        }
    }
}

/// How a repair went, shown above the repair form.
#[derive(Debug, Clone)]
pub struct Notice {
    pub ok: bool,
    pub text: String,
}

impl Notice {
    #[must_use]
    pub fn done(o: &RepairOutcome) -> Self {
        let events = if o.events.is_empty() { "none".to_owned() } else { o.events.join(", ") };
        let again = if o.replayed {
            " (this request had already been carried out; nothing new was done)"
        } else {
            ""
        };
        Self {
            ok: true,
            text: format!(
                "{} done: the saga is now {}. Events recorded: {events}{again}.",
                o.action, o.status
            ),
        }
    }
}

/// The repair panel of a saga page (also the htmx answer to a repair).
#[derive(Debug, Clone)]
pub struct RepairPanel {
    pub saga_id: String,
    pub post_href: String,
    pub saga_href: String,
    /// Made when the page is rendered, so a double click repeats one request.
    pub request_id: String,
    pub reason: String,
    pub outcomes: Vec<Choice>,
    pub notice: Option<Notice>,
    /// The repair was carried out: show the result and a link, not the form.
    pub done: bool,
    /// The saga's status after the repair (htmx swaps it into the page heading).
    pub status_after: Option<String>,
    /// The saga has ended: nothing to repair.
    pub ended: bool,
}

impl RepairPanel {
    #[must_use]
    pub fn new(saga_id: &str, status: &str) -> Self {
        Self {
            saga_id: saga_id.to_owned(),
            post_href: format!("/console/sagas/{}/repair", encode(saga_id)),
            saga_href: format!("/console/sagas/{}", encode(saga_id)),
            request_id: uuid::Uuid::new_v4().to_string(),
            reason: String::new(),
            outcomes: outcome_choices(""),
            notice: None,
            done: false,
            status_after: None,
            ended: matches!(status, "completed" | "compensated" | "failed"),
        }
    }
}

/// The repair panel alone: the htmx answer to a repair.
#[derive(Debug, Template)]
#[template(path = "console/repair.html")]
pub struct RepairFragment<'a> {
    pub panel: &'a RepairPanel,
}

/// The `resolve` outcomes.
#[must_use]
pub fn outcome_choices(current: &str) -> Vec<Choice> {
    let values: Vec<String> =
        ["completed", "compensated", "failed"].iter().map(|s| (*s).to_owned()).collect();
    choices("choose (resolve only)", &values, current)
}

/// The "across services" panel of a saga: each step here and there, and
/// what disagrees (see [`crate::audit`]).
#[derive(Debug, Clone, Default)]
pub struct AuditPanel {
    pub saga_id: String,
    pub audit_href: String,
    pub saga_href: String,
    pub columns: Vec<&'static str>,
    /// Each step's cells under `columns`, and its verdict.
    pub rows: Vec<(Vec<String>, String)>,
    /// (step, note)
    pub notes: Vec<(String, String)>,
    /// (participant, what)
    pub unexplained: Vec<(String, String)>,
    /// (participant, why)
    pub unchecked: Vec<(String, String)>,
    /// (kind, message)
    pub disagreements: Vec<(String, String)>,
    /// Why there is no audit (an unknown saga, no bus).
    pub error: Option<String>,
}

impl AuditPanel {
    /// The panel before the participants were asked: a button that asks.
    #[must_use]
    pub fn unasked(saga_id: &str) -> Self {
        Self {
            saga_id: saga_id.to_owned(),
            audit_href: format!("/console/sagas/{saga_id}/audit"),
            saga_href: format!("/console/sagas/{saga_id}"),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn of(audit: &crate::audit::compare::SagaAudit) -> Self {
        Self {
            columns: crate::audit::compare::STEP_COLUMNS.to_vec(),
            rows: audit
                .steps
                .iter()
                .map(|s| {
                    let cells = s.cells();
                    let verdict = cells.last().cloned().unwrap_or_default();
                    (cells, verdict)
                })
                .collect(),
            notes: audit
                .steps
                .iter()
                .filter_map(|s| s.note.clone().map(|n| (s.step.clone(), n)))
                .collect(),
            unexplained: audit
                .unexplained
                .iter()
                .map(|u| (u.participant.clone(), u.text()))
                .collect(),
            unchecked: audit
                .unchecked
                .iter()
                .map(|u| (u.participant.clone(), u.reason.clone()))
                .collect(),
            disagreements: audit
                .disagreements
                .iter()
                .map(|d| (d.kind.as_str().to_owned(), d.message.clone()))
                .collect(),
            ..Self::unasked(&audit.saga_id)
        }
    }

    /// Whether the participants were asked (or asking failed).
    #[must_use]
    pub fn asked(&self) -> bool {
        !self.rows.is_empty() || self.error.is_some()
    }
}

/// The panel alone: the htmx answer to "ask the participants".
#[derive(Debug, Template)]
#[template(path = "console/audit_panel.html")]
pub struct AuditFragment<'a> {
    pub audit: &'a AuditPanel,
}

/// The panel on a page of its own (without htmx).
#[derive(Debug, Template)]
#[template(path = "console/audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub audit: AuditPanel,
}

#[derive(Debug, Template)]
#[template(path = "console/saga.html")]
pub struct SagaPage {
    pub chrome: Chrome,
    pub saga: SagaView,
    /// `None` for callers who may not repair (viewers).
    pub repair: Option<RepairPanel>,
    pub role: String,
    /// Asked for with a button: auditing asks every participant over the bus.
    pub audit: AuditPanel,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_iso_text() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(-5), "-5");
    }

    #[test]
    fn query_strings_are_encoded() {
        assert_eq!(query(&[("a", "x y&z"), ("b", ""), ("c", "é")]), "?a=x%20y%26z&c=%C3%A9");
        assert_eq!(query(&[("a", "")]), "");
    }

    #[test]
    fn choices_keep_an_unlisted_current_value() {
        let c = choices("any", &["a".to_owned()], "b");
        assert_eq!(c.len(), 3);
        assert!(c[2].selected && c[2].value == "b");
        assert!(choices("any", &["a".to_owned()], "")[0].selected);
    }
}
