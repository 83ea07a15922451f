//! The saga definition language.
//!
//! A definition is a YAML file naming the saga's steps, each with a participant,
//! an action, an optional compensation, an input mapping built from templates, a
//! timeout and a retry policy (see `README.md` for the full format). [`load`]
//! parses and validates one file, reporting *every* problem at once with the file,
//! step and field, and how to fix it. A validated [`Definition`] is immutable and
//! identified by the SHA-256 of its canonical JSON form, so a running saga keeps
//! the exact version it started with.

mod budget;
pub mod condition;
mod diff;
mod error;
mod input_mapping;
mod raw;
mod shape;
pub mod template;
mod validate;

pub use condition::{Condition, ConditionContext};
pub use diff::diff;
pub use error::{DefinitionError, DefinitionErrors};
pub use template::{PayloadTemplate, RenderContext, RenderError};
pub use validate::limits;

use crate::Duration;
use crate::protocol::Kind;
use serde_json::Value;
use std::sync::Arc;

/// A validated saga definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The saga type; also the NATS subject token used to start it.
    pub name: String,
    pub version: u32,
    pub description: String,
    pub input_schema: InputSchema,
    /// How long the saga may run forward before it is aborted and compensated.
    pub deadline: Option<Duration>,
    pub steps: Vec<StepDef>,
    /// What a completed saga answers its caller (`output:`), rendered once
    /// when it completes; `None` when the definition declares none.
    pub output: Option<PayloadTemplate>,
    /// Business tags (`tags:`), by name, each rendered from the input when
    /// the saga starts.
    pub tags: Vec<(String, PayloadTemplate)>,
    /// Index of the pivot: the first step without a compensation. Steps after it
    /// are retriable; once it has been sent the saga can no longer be aborted.
    pub pivot: Option<usize>,
    /// The parallel groups, in order; their steps are in `steps`, laid out
    /// group by group, branch by branch.
    pub groups: Vec<GroupDef>,
    /// Hex SHA-256 of the canonical JSON form of the definition.
    pub hash: String,
    /// The definition as canonical JSON (what `hash` is computed over).
    pub canonical_json: String,
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    pub name: String,
    pub participant: String,
    pub action: String,
    pub compensation: Option<String>,
    pub input: PayloadTemplate,
    /// How long one attempt is given (of a waiting step: of its
    /// compensation; how long it waits is `wait.timeout`).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub compensation_retry: RetryPolicy,
    /// The step is idempotent and expected to succeed if retried long enough.
    pub retriable: bool,
    /// Run the step only when this is true (`when:`), evaluated once when
    /// the step is reached; a step whose condition is false is skipped.
    pub when: Option<Condition>,
    /// A waiting step (`wait_for:`): it sends nothing and waits for an event
    /// from outside; its `action` is empty, its `participant` names who runs
    /// its compensation, if it has one.
    pub wait: Option<WaitFor>,
    /// Where the step sits when it is in a parallel group.
    pub place: Option<Place>,
}

/// A step's place in a parallel group: indexes into [`Definition::groups`]
/// and that group's branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub group: usize,
    pub branch: usize,
}

/// A parallel group (`parallel:`): branches that start together; the saga
/// goes on once every branch has run its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDef {
    pub name: String,
    /// Run the group only when this is true, decided when it is reached;
    /// when false, every step in it is skipped.
    pub when: Option<Condition>,
    pub branches: Vec<BranchDef>,
    /// The indexes of its steps in [`Definition::steps`].
    pub steps: std::ops::Range<usize>,
}

/// One branch of a group: its steps run one after the other.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchDef {
    pub name: String,
    pub steps: std::ops::Range<usize>,
}

/// What a waiting step waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitFor {
    /// The event's name (letters, digits, `_`, `-`).
    pub event: String,
    /// The correlation key an event must carry, rendered when the step is
    /// reached; `None`: any event of that name sent to the saga.
    pub key: Option<PayloadTemplate>,
    /// How long it waits (`timeout` fails the step).
    pub timeout: Duration,
    /// The schema the event's body must match, when declared.
    pub schema: Option<InputSchema>,
    /// When this is true of the event taken (a CEL expression that may also
    /// use `event`), the step fails: the event says it did not happen.
    pub fail_when: Option<Condition>,
}

/// How often and how patiently one command is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    pub const DEFAULT_STEP: Self = Self {
        attempts: 3,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
    };
    pub const DEFAULT_COMPENSATION: Self = Self {
        attempts: 10,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(30),
    };
}

/// Default step timeout when a step does not set one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The input JSON Schema, compiled once (remote references are refused).
#[derive(Clone)]
pub struct InputSchema {
    pub schema: Value,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSchema").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl PartialEq for InputSchema {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
    }
}

impl InputSchema {
    /// Compile a schema; the error says what is wrong with it.
    pub fn compile(schema: Value) -> Result<Self, String> {
        jsonschema::meta::validate(&schema).map_err(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { e.to_string() } else { format!("{e} (at `{at}`)") }
        })?;
        let validator =
            jsonschema::options().offline().build(&schema).map_err(|e| e.to_string())?;
        Ok(Self { schema, validator: Arc::new(validator) })
    }

    /// Check a saga input; every violation is listed with where it is.
    pub fn check(&self, input: &Value) -> Result<(), Vec<String>> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(input)
            .take(limits::SCHEMA_ERRORS_MAX)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// Parse and validate a definition; `file` labels every error.
pub fn load(file: &str, text: &str) -> Result<Definition, DefinitionErrors> {
    validate::load(file, text)
}

/// Read and validate a definition file from disk.
pub fn load_file(path: &std::path::Path) -> Result<Definition, DefinitionErrors> {
    let label = path.display().to_string();
    let too_big = |size: Option<u64>| {
        let size = size.map(|n| format!(" {n} bytes,")).unwrap_or_default();
        DefinitionErrors(vec![DefinitionError {
            file: label.clone(),
            step: None,
            field: "(file)".into(),
            problem: format!("is{size} over the limit of {} bytes", limits::FILE_BYTES_MAX),
            fix: "split the saga or shrink its schema and input mappings".into(),
        }])
    };
    let unreadable = |e: std::io::Error| {
        DefinitionErrors(vec![DefinitionError {
            file: label.clone(),
            step: None,
            field: "(file)".into(),
            problem: format!("cannot be read: {e}"),
            fix: "check the path and its permissions".into(),
        }])
    };
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > limits::FILE_BYTES_MAX as u64 {
        return Err(too_big(Some(size)));
    }
    // The size a pipe or a special file reports says nothing: read one byte
    // past the limit at most.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, limits::FILE_BYTES_MAX as u64 + 1),
                &mut bytes,
            )
        })
        .map_err(unreadable)?;
    if bytes.len() > limits::FILE_BYTES_MAX {
        return Err(too_big(None));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        unreadable(std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))
    })?;
    load(&label, &text)
}

impl StepDef {
    /// The participant's action a command of `kind` names: the action for
    /// `do`, the compensation for `undo` (none when the step has none).
    #[must_use]
    pub fn action_for(&self, kind: Kind) -> Option<&str> {
        match kind {
            Kind::Do => Some(&self.action),
            Kind::Undo => self.compensation.as_deref(),
        }
    }
}

impl Definition {
    /// A saga's tags, rendered from its input: (name, value) with each value
    /// as text (a JSON string as itself, anything else as JSON; control
    /// characters replaced by U+FFFD), cut to [`limits::TAG_VALUE_LEN_MAX`] bytes. A tag whose reference is absent
    /// from the input (an optional field) is left out.
    #[must_use]
    pub fn render_tags(&self, saga_id: &str, input: &Value) -> Vec<(String, String)> {
        let ctx = RenderContext { input, saga_id, saga_type: &self.name, outputs: &[] };
        self.tags
            .iter()
            .filter_map(|(name, template)| {
                let value = match template.render(&ctx).ok()? {
                    Value::String(s) => s,
                    Value::Null => return None,
                    other => other.to_string(),
                };
                // Stored as text and searched for: no control characters
                // (PostgreSQL text cannot hold NUL at all).
                let value: String =
                    value.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
                Some((name.clone(), truncated(value, limits::TAG_VALUE_LEN_MAX)))
            })
            .collect()
    }

    /// The index of the step called `name`.
    #[must_use]
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The group step `index` is in, if any.
    #[must_use]
    pub fn group_of(&self, index: usize) -> Option<&GroupDef> {
        let place = self.steps.get(index)?.place?;
        self.groups.get(place.group)
    }

    /// Whether step `target`'s outcome is surely known when step `index`
    /// is reached: it comes before, and not in a parallel branch beside it.
    #[must_use]
    pub fn sees(&self, index: usize, target: usize) -> bool {
        let place = |i: usize| self.steps.get(i).and_then(|s| s.place);
        target < index
            && !matches!((place(index), place(target)),
                (Some(a), Some(b)) if a.group == b.group && a.branch != b.branch)
    }

    /// Whether a failure of step `index` can still be undone by compensating
    /// earlier steps (false for steps after the pivot).
    #[must_use]
    pub fn is_before_or_at_pivot(&self, index: usize) -> bool {
        self.pivot.is_none_or(|p| index <= p)
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
