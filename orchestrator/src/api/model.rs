//! The API's model: every view and answer it sends, one definition shared by
//! the server (which builds them, see [`super::views`]), the console and the
//! `skald` command line (which reads them). A change here is a change to the
//! HTTP contract: `/openapi.json` is generated from these types.

pub use crate::engine::driver::RepairOutcome;
use crate::store::StuckClass;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a saga is in a stuck class, for people.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StuckView {
    pub class: StuckClass,
    pub detail: String,
}

/// One saga in a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaSummary {
    pub saga_id: String,
    pub saga_type: String,
    pub status: String,
    pub current_step: Option<String>,
    /// `do` or `undo`.
    pub current_kind: Option<String>,
    /// Attempts of the current command in its retry budget.
    pub attempt: i32,
    /// The retry budget of the current command.
    pub attempts_max: Option<u32>,
    pub partition: i32,
    pub idempotency_key: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub next_deadline_ms: Option<i64>,
    pub deadline_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub park_reason: Option<String>,
    pub stuck: Vec<StuckView>,
    /// Business tags (the definition's `tags:`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Progress of one kind (`do` or `undo`) of one step.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressView {
    pub attempts: u32,
    pub attempts_max: u32,
    /// `idle`, `reply` (an attempt is out) or `backoff` (the next one is scheduled).
    pub waiting: String,
    pub due_at_ms: Option<u64>,
    pub last_error: Option<String>,
    pub timed_out: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    pub name: String,
    pub participant: String,
    pub action: String,
    pub compensation: Option<String>,
    /// The first step without a compensation: once sent, the saga cannot be aborted.
    pub pivot: bool,
    /// `pending`, `succeeded`, `failed`, `unknown`, `abandoned`, `skipped` or
    /// `skipped_by_condition`.
    pub result: String,
    /// A `when:` condition, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// A waiting step: the event it waits for (`event`, and `key` once it
    /// began waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<WaitView>,
    /// In a parallel group: the group's and the branch's names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `open`, `done` or `skipped`.
    pub undo: String,
    #[serde(rename = "do")]
    pub do_progress: ProgressView,
    pub undo_progress: ProgressView,
    pub output: Option<Value>,
    pub payload: Option<Value>,
}

/// A parallel group of the saga's definition: its branches start together.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupView {
    pub name: String,
    /// Its `when:` condition, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Its branches' names, in order.
    pub branches: Vec<String>,
}

/// What a waiting step waits for.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaitView {
    pub event: String,
    /// The correlation key, once the step began waiting (when it asks for one).
    pub key: Option<String>,
    /// How long it waits in all, in milliseconds.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub recorded_at_ms: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub event: Value,
}

/// A command attempt that was sent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommandView {
    pub step: String,
    pub kind: String,
    pub attempt: u32,
    pub command_id: String,
    pub sent_at_ms: u64,
    pub timeout_at_ms: u64,
    pub payload: Value,
}

/// An answer to a command attempt (or its timeout), as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplyView {
    pub step: String,
    pub kind: String,
    pub attempt: u32,
    /// `ok`, `failed`, `retry` or `timeout`.
    pub outcome: String,
    pub code: Option<String>,
    pub message: Option<String>,
    pub output: Option<Value>,
    pub at_ms: u64,
}

/// One saga in full.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaDetail {
    #[serde(flatten)]
    pub summary: SagaSummary,
    /// The instance driving it now (its partition's owner), if any.
    pub owner: Option<String>,
    pub definition_version: u32,
    pub definition_hash: String,
    pub input: Value,
    /// Why the saga turned back, when it did.
    pub cause: Option<Value>,
    /// What the completed saga answers (the definition's `output:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why `output:` could not be rendered, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_error: Option<String>,
    pub steps: Vec<StepView>,
    /// The definition's parallel groups (steps name theirs in `group`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupView>,
    pub events: Vec<EventView>,
    pub commands: Vec<CommandView>,
    pub replies: Vec<ReplyView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WouldFail {
    pub saga_id: String,
    pub error: String,
}

/// What a bulk repair would do.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkPreview {
    pub action: String,
    pub matched: u64,
    /// Sagas the action would change, with the events it would append.
    pub would_change: Vec<WouldChange>,
    pub would_fail: Vec<WouldFail>,
    /// More matched than were examined or listed.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WouldChange {
    pub saga_id: String,
    pub events: Vec<String>,
}

/// A bulk repair's progress and report.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkJob {
    pub job_id: String,
    pub action: String,
    pub requested_by: String,
    /// `running` or `done`.
    pub state: String,
    pub total: u64,
    pub done: u64,
    pub succeeded: u64,
    /// Repeats of repairs an earlier run of this job already made.
    pub replayed: u64,
    pub failed_count: u64,
    pub failed: Vec<WouldFail>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StartAnswer {
    pub saga_id: String,
    /// False when this key had already started the saga.
    pub created: bool,
    /// With `?wait=`: where the saga stands when it ended or the wait ran
    /// out: `status` (`completed`, `compensated`, `failed`, `parked`, or
    /// `running` / `compensating` when the wait ran out first), `ended`,
    /// `output` (the definition's `output:` of a completed saga) and `cause`
    /// (why it turned back, failed, was resolved by hand or is parked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<sagas::protocol::SagaOutcome>,
}
