//! The definition file exactly as written, before validation.
//!
//! Every struct refuses unknown fields so that a typo such as `compensaton` is an
//! error instead of a silently ignored key. Durations stay text here: they are
//! parsed during validation so that all bad durations are reported at once, each
//! with its step and field.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefinition {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: String,
    pub input_schema: serde_json::Value,
    #[serde(default)]
    pub deadline: Option<String>,
    pub steps: Vec<RawStep>,
    /// What a completed saga answers its caller: a template over the input
    /// and the steps' outputs. Absent fields stay out of the canonical form,
    /// so definitions written before they existed keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Named business tags, each a template over the input.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub name: String,
    /// Required, except on a waiting step or a parallel group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// Required, except on a waiting step (which has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default)]
    pub compensation: Option<String>,
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub compensation_retry: Option<RawRetry>,
    #[serde(default)]
    pub retriable: bool,
    /// A CEL condition: the step runs only when it is true. Absent, it stays
    /// out of the canonical form (older definitions keep their hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// A waiting step: no command, the step waits for an event from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<RawWait>,
    /// A parallel group: this entry is no step but branches of steps that
    /// start together and join before the next entry. Absent, it stays out of
    /// the canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Vec<RawBranch>>,
}

/// One branch of a parallel group: a named list of steps run in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBranch {
    pub name: String,
    pub steps: Vec<RawStep>,
}

/// `wait_for:` of a waiting step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWait {
    pub event: String,
    pub timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_when: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub attempts: u32,
    #[serde(default)]
    pub initial_backoff: Option<String>,
    #[serde(default)]
    pub max_backoff: Option<String>,
}
