//! Turning a definition file into a [`Definition`], or into every reason it is not one.
//!
//! [`load`] parses the YAML; a file of the wrong shape is reported by
//! [`super::shape`]. A file of the right shape is then checked as a whole here
//! (names, limits, durations, retry policies, the pivot, the deadline), each
//! step's `input` mapping by [`super::input_mapping`], and every problem found
//! is reported at once.

use super::condition::{Condition, NameProblem};
use super::error::{Collector, DefinitionErrors, step_label};
use super::input_mapping::{Scope, compile};
use super::raw::{RawDefinition, RawRetry, RawStep, RawWait};
use super::shape::shape_error;
use super::template::PayloadTemplate;
use super::{
    BranchDef, DEFAULT_STEP_TIMEOUT, Definition, GroupDef, InputSchema, Place, RetryPolicy,
    StepDef, WaitFor,
};
use crate::Duration;
use crate::protocol::Kind;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// Bounds on everything a definition can ask for.
pub mod limits {
    /// Largest definition file accepted.
    pub const FILE_BYTES_MAX: usize = 256 * 1024;
    pub const STEPS_MAX: usize = 50;
    /// Longest name, participant, action or compensation (a NATS subject token).
    pub const NAME_LEN_MAX: usize = 64;
    pub const DESCRIPTION_LEN_MAX: usize = 2_000;
    pub const RETRY_ATTEMPTS_MAX: u32 = 100;
    pub const COMPENSATION_RETRY_ATTEMPTS_MAX: u32 = 1_000;
    pub const STEP_TIMEOUT_MIN_MS: u64 = 10;
    pub const STEP_TIMEOUT_MAX_MS: u64 = 3_600_000;
    pub const BACKOFF_MAX_MS: u64 = 3_600_000;
    pub const DEADLINE_MAX_MS: u64 = 30 * 24 * 3_600_000;
    pub const REFERENCES_PER_STEP_MAX: usize = 200;
    /// Most schema violations reported for one input.
    pub const SCHEMA_ERRORS_MAX: usize = 20;
    /// Most tags a definition declares.
    pub const TAGS_MAX: usize = 8;
    /// Longest tag name (letters, digits, `_`, `-`).
    pub const TAG_NAME_LEN_MAX: usize = 32;
    /// Longest tag value kept; longer values are cut.
    pub const TAG_VALUE_LEN_MAX: usize = 128;
    /// Shortest and longest a waiting step waits.
    pub const WAIT_TIMEOUT_MIN_MS: u64 = 1_000;
    pub const WAIT_TIMEOUT_MAX_MS: u64 = 30 * 24 * 3_600_000;
    /// Most branches in one parallel group.
    pub const BRANCHES_MAX: usize = 8;
}
use limits::*;

pub(crate) fn load(file: &str, text: &str) -> Result<Definition, DefinitionErrors> {
    let mut c = Collector::new(file);
    if text.len() > FILE_BYTES_MAX {
        c.push(
            None,
            "(file)",
            format!("is {} bytes, over the limit of {FILE_BYTES_MAX} bytes", text.len()),
            "split the saga or shrink its schema and input mappings",
        );
        return Err(c.finish());
    }
    if let Err(problem) = super::budget::within(text) {
        c.push(None, "(file)", problem, "write the steps out instead of through YAML aliases");
        return Err(c.finish());
    }
    let parsed = if text.trim().is_empty() {
        Ok(yaml_serde::Value::Null)
    } else {
        yaml_serde::from_str::<yaml_serde::Value>(text)
    };
    let loose = match parsed {
        Ok(v) => v,
        Err(e) => {
            c.push(None, "(yaml)", format!("is not valid YAML: {e}"), "fix the YAML syntax there");
            return Err(c.finish());
        }
    };
    if loose.is_null() {
        // Nothing, only blanks, or only comments (or `~`).
        c.push(
            None,
            "(file)",
            "is empty",
            "write a definition: name, version, input_schema, steps",
        );
        return Err(c.finish());
    }
    if !loose.is_mapping() {
        c.push(
            None,
            "(file)",
            "is not a mapping of fields",
            "start the file with `name:`, `version:`, `input_schema:` and `steps:`",
        );
        return Err(c.finish());
    }
    let raw: RawDefinition =
        match serde_path_to_error::deserialize(yaml_serde::Deserializer::from_str(text)) {
            Ok(raw) => raw,
            Err(e) => {
                shape_error(&mut c, &loose, &e);
                return Err(c.finish());
            }
        };
    match check(&mut c, raw) {
        Some(definition) if c.is_empty() => Ok(definition),
        _ => {
            if c.is_empty() {
                // `check` gives up only after recording why; never answer "invalid" with no reason.
                c.push(
                    None,
                    "(file)",
                    "could not be turned into a definition",
                    "report this as a bug in skald, with the file",
                );
            }
            Err(c.finish())
        }
    }
}

/// A NATS subject token we accept: ASCII letters, digits, `_` and `-`.
fn check_token(c: &mut Collector, step: Option<&str>, field: &str, value: &str) {
    if value.is_empty() {
        c.push(step, field, "is empty", format!("give `{field}` a name such as `charge`"));
    } else if value.len() > NAME_LEN_MAX {
        c.push(
            step,
            field,
            format!("`{value}` is {} characters, over the limit of {NAME_LEN_MAX}", value.len()),
            "use a shorter name",
        );
    } else if !crate::protocol::is_subject_token(value) {
        c.push(
            step,
            field,
            format!("`{value}` is not a safe NATS subject token"),
            "use only ASCII letters, digits, `_` and `-` (no dots, spaces, `*` or `>`)",
        );
    }
}

/// The duration written in `field`, `default` when it is absent, or `None` (with the
/// error recorded) when it cannot be read, so callers do not check a stand-in value.
fn parse_duration(
    c: &mut Collector,
    step: Option<&str>,
    field: &str,
    text: Option<&str>,
    default: Duration,
) -> Option<Duration> {
    match text.map(Duration::parse) {
        None => Some(default),
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            c.push(step, field, e.to_string(), "write a whole number and a unit: ms, s, m or h");
            None
        }
    }
}

/// The retry policy of one kind of command of a step: `retry` for `do`,
/// `compensation_retry` for `undo`, each with its default and its limit.
fn check_retry(c: &mut Collector, step: &str, kind: Kind, raw: Option<&RawRetry>) -> RetryPolicy {
    let (field, default, attempts_max) = match kind {
        Kind::Do => ("retry", RetryPolicy::DEFAULT_STEP, RETRY_ATTEMPTS_MAX),
        Kind::Undo => (
            "compensation_retry",
            RetryPolicy::DEFAULT_COMPENSATION,
            COMPENSATION_RETRY_ATTEMPTS_MAX,
        ),
    };
    let Some(raw) = raw else { return default };
    if raw.attempts == 0 {
        c.push(
            Some(step),
            format!("{field}.attempts"),
            "is 0, so the command would never be sent",
            format!("set attempts between 1 and {attempts_max} (1 means no retries)"),
        );
    } else if raw.attempts > attempts_max {
        c.push(
            Some(step),
            format!("{field}.attempts"),
            format!("is {}, over the limit of {attempts_max}", raw.attempts),
            format!("set at most {attempts_max}; a step that needs more wants a longer timeout or backoff"),
        );
    }
    let initial = parse_duration(
        c,
        Some(step),
        &format!("{field}.initial_backoff"),
        raw.initial_backoff.as_deref(),
        default.initial_backoff,
    );
    let max = parse_duration(
        c,
        Some(step),
        &format!("{field}.max_backoff"),
        raw.max_backoff.as_deref(),
        default.max_backoff.max(initial.unwrap_or(default.initial_backoff)),
    );
    if let Some(max) = max
        && max.as_millis() > BACKOFF_MAX_MS
    {
        c.push(
            Some(step),
            format!("{field}.max_backoff"),
            format!("is {max}, over the limit of {}", Duration::from_millis(BACKOFF_MAX_MS)),
            "cap the backoff at 1h or less",
        );
    }
    if let (Some(initial), Some(max)) = (initial, max)
        && initial > max
    {
        c.push(
            Some(step),
            format!("{field}.initial_backoff"),
            format!("{initial} is longer than max_backoff {max}"),
            "make initial_backoff at most max_backoff",
        );
    }
    RetryPolicy {
        attempts: raw.attempts,
        initial_backoff: initial.unwrap_or(default.initial_backoff),
        max_backoff: max.unwrap_or(default.max_backoff),
    }
}

fn check(c: &mut Collector, raw: RawDefinition) -> Option<Definition> {
    check_token(c, None, "name", &raw.name);
    if raw.version == 0 {
        c.push(None, "version", "is 0", "versions start at 1; bump it on every change");
    }
    if raw.description.len() > DESCRIPTION_LEN_MAX {
        c.push(
            None,
            "description",
            format!(
                "is {} characters, over the limit of {DESCRIPTION_LEN_MAX}",
                raw.description.len()
            ),
            "shorten it; put long documentation next to the file",
        );
    }
    let schema = match InputSchema::compile(raw.input_schema.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            c.push(
                None,
                "input_schema",
                format!("is not a valid JSON Schema: {e}"),
                "fix the schema (remote `$ref`s are not fetched; inline them)",
            );
            None
        }
    };
    let deadline = raw.deadline.as_deref().and_then(|d| {
        let d = parse_duration(c, None, "deadline", Some(d), Duration::ZERO)?;
        if d == Duration::ZERO {
            c.push(
                None,
                "deadline",
                "is zero, so every saga would be aborted at once",
                "give a deadline such as `10m`, or remove it",
            );
        } else if d.as_millis() > DEADLINE_MAX_MS {
            c.push(
                None,
                "deadline",
                format!("is {d}, over the limit of 30 days"),
                "use at most `720h`",
            );
        }
        Some(d)
    });
    let (flat, skeletons) = flatten(c, &raw.steps);
    if raw.steps.is_empty() {
        c.push(
            None,
            "steps",
            "is empty",
            "add at least one step with name, participant and action",
        );
    } else if flat.len() > STEPS_MAX {
        c.push(
            None,
            "steps",
            format!("has {} steps, over the limit of {STEPS_MAX}", flat.len()),
            "split the saga into smaller sagas",
        );
        // Checking each of thousands of steps would only bury this.
        return None;
    }

    let names: Vec<&str> = flat.iter().map(|f| f.raw.name.as_str()).collect();
    let places: Vec<Option<Place>> = flat.iter().map(|f| f.place).collect();
    let properties: Option<Vec<String>> = raw
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect());
    // Steps and groups share one namespace: both are named in `steps.<x>`
    // and in errors.
    let mut seen: HashMap<&str, String> = HashMap::new();
    for g in &skeletons {
        let this = format!("the parallel group `{}`", g.raw.name);
        if seen.insert(g.raw.name.as_str(), this).is_some() && !g.raw.name.is_empty() {
            c.push(
                Some(&g.label),
                "name",
                format!("`{}` is also the name of another parallel group", g.raw.name),
                "give every step and group a unique name",
            );
        }
    }
    let mut steps = Vec::with_capacity(flat.len());
    for (index, f) in flat.iter().enumerate() {
        let s = f.raw;
        let label = f.label.clone();
        let step = Some(label.as_str());
        check_token(c, step, "name", &s.name);
        let this = if f.place.is_some() {
            format!("step `{label}`")
        } else {
            format!("step #{}", index + 1)
        };
        if let Some(first) = seen.insert(s.name.as_str(), this)
            && !s.name.is_empty()
        {
            c.push(
                step,
                "name",
                format!("`{}` is also the name of {first}", s.name),
                "give every step and group a unique name",
            );
        }
        if s.parallel.is_some() {
            c.push(
                step,
                "parallel",
                "is set on a step inside a parallel branch: groups do not nest",
                "write the inner steps into the branch itself, or make a branch of its own",
            );
        }
        if s.wait_for.is_none() {
            for (field, value) in [("participant", &s.participant), ("action", &s.action)] {
                match value {
                    Some(v) => check_token(c, step, field, v),
                    None => c.push(
                        step,
                        field,
                        "is required but missing",
                        format!(
                            "add `{field}:`, or make the step wait for an event with `wait_for:`"
                        ),
                    ),
                }
            }
        } else {
            check_waiting_fields(c, &label, s);
        }
        if let Some(comp) = &s.compensation {
            check_token(c, step, "compensation", comp);
            if Some(comp) == s.action.as_ref() {
                c.push(
                    step,
                    "compensation",
                    format!("is the same as the action `{comp}`"),
                    "name the action that undoes this one, e.g. `void` for `hold`",
                );
            }
        } else if s.compensation_retry.is_some() {
            c.push(
                step,
                "compensation_retry",
                "is set but the step has no compensation",
                "add `compensation:` or remove `compensation_retry:`",
            );
        }
        let scope = Scope { index, places: &places };
        let mut def = check_step(c, &label, scope, s, &names, properties.as_deref());
        def.place = f.place;
        steps.push(def);
    }
    let groups: Vec<GroupDef> = skeletons
        .iter()
        .map(|g| {
            let scope = Scope { index: g.steps.start, places: &places };
            let when = g.raw.when.as_deref().and_then(|text| {
                check_condition(c, &g.label, text, &scope.visible(&names), properties.as_deref())
            });
            GroupDef {
                name: g.raw.name.clone(),
                when,
                branches: g.branches.clone(),
                steps: g.steps.clone(),
            }
        })
        .collect();

    let pivot = check_pivot(c, &flat);
    check_groups_before_pivot(c, &skeletons, pivot, &flat);
    // Waits come before the pivot, where the deadline still applies: it must
    // outlast them too.
    if let Some(d) = deadline
        && let Some(longest) =
            steps.iter().map(|s: &StepDef| s.wait.as_ref().map_or(s.timeout, |w| w.timeout)).max()
        && d != Duration::ZERO
        && d < longest
    {
        c.push(
            None,
            "deadline",
            format!("{d} is shorter than the longest step timeout {longest}"),
            "make the deadline longer than any single step can take",
        );
    }

    let output = raw.output.as_ref().map(|v| {
        let mut refs = 0;
        let scope = Scope { index: flat.len(), places: &places };
        compile(c, None, scope, "output", v, &names, properties.as_deref(), &mut refs)
    });
    let tags = check_tags(c, &raw.tags, &names, properties.as_deref());

    let schema = schema?;
    if !c.is_empty() {
        return None;
    }
    let canonical_json = serde_json::to_string(&raw).ok()?;
    let hash =
        Sha256::digest(canonical_json.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    Some(Definition {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        input_schema: schema,
        deadline,
        steps,
        output,
        tags,
        pivot,
        groups,
        hash,
        canonical_json,
    })
}

/// `tags:`: at most [`TAGS_MAX`], each named like a subject token and
/// written as one template over the input (or the saga's id and type): tags
/// are rendered when the saga starts, before any step has an output.
fn check_tags(
    c: &mut Collector,
    raw: &BTreeMap<String, String>,
    names: &[&str],
    properties: Option<&[String]>,
) -> Vec<(String, PayloadTemplate)> {
    if raw.len() > TAGS_MAX {
        c.push(
            None,
            "tags",
            format!("declares {} tags, over the limit of {TAGS_MAX}", raw.len()),
            "keep the few a caller or an operator searches by",
        );
        return Vec::new();
    }
    let mut tags = Vec::with_capacity(raw.len());
    for (name, text) in raw {
        let field = format!("tags.{name}");
        if name.len() > TAG_NAME_LEN_MAX || !crate::protocol::is_subject_token(name) {
            c.push(
                None,
                &field,
                format!("`{name}` is not a tag name"),
                format!("use up to {TAG_NAME_LEN_MAX} ASCII letters, digits, `_` or `-`"),
            );
            continue;
        }
        let mut refs = 0;
        // Index 0: no step comes before the start, so a step output is refused.
        let template = compile(
            c,
            None,
            Scope { index: 0, places: &[] },
            &field,
            &Value::String(text.clone()),
            names,
            properties,
            &mut refs,
        );
        if refs == 0 {
            c.push(
                None,
                &field,
                format!("`{text}` refers to nothing, so every saga would have the same tag"),
                "write a reference such as `{{input.customer_id}}`",
            );
        }
        tags.push((name.clone(), template));
    }
    tags
}

/// The pivot: the first step without a compensation. Every step after it must
/// be retriable and cannot have a compensation (it would never run).
fn check_pivot(c: &mut Collector, flat: &[FlatStep<'_>]) -> Option<usize> {
    let steps: Vec<&RawStep> = flat.iter().map(|f| f.raw).collect();
    // A waiting step has nothing to undo and needs no compensation: it is
    // never the pivot.
    let pivot = steps.iter().position(|s| s.compensation.is_none() && s.wait_for.is_none());
    if let Some(p) = pivot {
        let pivot_label = flat[p].label.clone();
        if steps[p].when.is_some() {
            c.push(
                Some(&pivot_label),
                "when",
                "is set on the pivot (the first step without a compensation): whether the saga \
                 can still turn back would depend on it",
                format!(
                    "give `{pivot_label}` a compensation, or move the condition to a step before it"
                ),
            );
        }
        for (i, _) in steps.iter().enumerate().skip(p + 1).filter(|(_, s)| s.wait_for.is_some()) {
            let label = flat[i].label.clone();
            c.push(
                Some(&label),
                "wait_for",
                format!(
                    "the step follows the pivot `{pivot_label}`: a wait can time out, and a step \
                     after the point of no return must not fail"
                ),
                format!(
                    "move the waiting step before `{pivot_label}` (it may be the pivot itself)"
                ),
            );
        }
        for (i, _) in steps
            .iter()
            .enumerate()
            .skip(p + 1)
            .filter(|(_, s)| !s.retriable && s.wait_for.is_none())
        {
            let label = flat[i].label.clone();
            c.push(
                Some(&label),
                "retriable",
                format!(
                    "the step follows the pivot `{}` (a step without compensation), so it can never be undone and must not fail",
                    pivot_label
                ),
                format!(
                    "set `retriable: true` on `{}` if it is idempotent and succeeds when retried, or give `{}` a compensation",
                    label, pivot_label
                ),
            );
        }
        for (i, _) in steps.iter().enumerate().skip(p + 1).filter(|(_, s)| s.compensation.is_some())
        {
            let label = flat[i].label.clone();
            c.push(
                Some(&label),
                "compensation",
                format!(
                    "the step follows the pivot `{pivot_label}`, which cannot be undone, so its compensation would never run"
                ),
                format!(
                    "remove `compensation:` from `{label}`, or give `{pivot_label}` a compensation too"
                ),
            );
        }
    }
    pivot
}

/// One step of the definition in the flat list the machine runs: the step as
/// written, where it sits, and how errors name it (`group/branch/step` in a
/// parallel group).
struct FlatStep<'a> {
    raw: &'a RawStep,
    place: Option<Place>,
    label: String,
}

/// A parallel group as written, with where its steps landed in the flat list.
struct Skeleton<'a> {
    raw: &'a RawStep,
    label: String,
    branches: Vec<BranchDef>,
    steps: std::ops::Range<usize>,
}

/// The fields of an entry that are not a group's: a group runs the steps of
/// its branches and has nothing of its own to send.
const NOT_ON_A_GROUP: &[&str] = &[
    "participant",
    "action",
    "compensation",
    "input",
    "timeout",
    "retry",
    "compensation_retry",
    "retriable",
    "wait_for",
];

/// Lay the entries of `steps:` out as one list of steps, group by group and
/// branch by branch, checking each group's own shape on the way.
fn flatten<'a>(
    c: &mut Collector,
    entries: &'a [RawStep],
) -> (Vec<FlatStep<'a>>, Vec<Skeleton<'a>>) {
    let mut flat = Vec::new();
    let mut groups = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        let Some(branches) = &entry.parallel else {
            let label = step_label(flat.len(), &entry.name);
            flat.push(FlatStep { raw: entry, place: None, label });
            continue;
        };
        let label = step_label(position, &entry.name);
        let step = Some(label.as_str());
        check_token(c, step, "name", &entry.name);
        let set = [
            entry.participant.is_some(),
            entry.action.is_some(),
            entry.compensation.is_some(),
            entry.input.is_some(),
            entry.timeout.is_some(),
            entry.retry.is_some(),
            entry.compensation_retry.is_some(),
            entry.retriable,
            entry.wait_for.is_some(),
        ];
        for (field, _) in NOT_ON_A_GROUP.iter().zip(set).filter(|(_, set)| *set) {
            c.push(
                step,
                *field,
                "is set on a parallel group, which only runs the steps of its branches",
                format!("move `{field}:` onto a step inside one of its branches"),
            );
        }
        if branches.len() < 2 {
            c.push(
                step,
                "parallel",
                format!(
                    "has {} branch(es); a group runs at least two side by side",
                    branches.len()
                ),
                "write the steps of a single branch in line, without `parallel:`",
            );
        } else if branches.len() > BRANCHES_MAX {
            c.push(
                step,
                "parallel",
                format!("has {} branches, over the limit of {BRANCHES_MAX}", branches.len()),
                "merge branches, or split the saga",
            );
        }
        let group = groups.len();
        let start = flat.len();
        let mut defs = Vec::with_capacity(branches.len());
        let mut branch_names: HashMap<&str, usize> = HashMap::new();
        for (b, branch) in branches.iter().enumerate() {
            let field = format!("parallel.{b}.name");
            check_token(c, step, &field, &branch.name);
            if branch_names.insert(branch.name.as_str(), b).is_some() && !branch.name.is_empty() {
                c.push(
                    step,
                    &field,
                    format!("`{}` names two branches", branch.name),
                    "give every branch of a group its own name",
                );
            }
            if branch.steps.is_empty() {
                c.push(
                    step,
                    format!("parallel.{b}.steps"),
                    format!("branch `{}` has no steps", branch.name),
                    "give the branch at least one step, or remove it",
                );
            }
            let first = flat.len();
            for (k, s) in branch.steps.iter().enumerate() {
                let label = format!("{}/{}/{}", label, branch.name, step_label(k, &s.name));
                flat.push(FlatStep { raw: s, place: Some(Place { group, branch: b }), label });
            }
            defs.push(BranchDef { name: branch.name.clone(), steps: first..flat.len() });
        }
        groups.push(Skeleton { raw: entry, label, branches: defs, steps: start..flat.len() });
    }
    (flat, groups)
}

/// The pivot is never inside a parallel group, and no group follows it:
/// after the point of no return a step that fails parks the saga on that
/// one step, which branches still in flight beside it would not respect.
fn check_groups_before_pivot(
    c: &mut Collector,
    groups: &[Skeleton<'_>],
    pivot: Option<usize>,
    flat: &[FlatStep<'_>],
) {
    let Some(p) = pivot else { return };
    let pivot_label = &flat[p].label;
    for g in groups {
        if g.steps.contains(&p) {
            c.push(
                Some(&g.label),
                "parallel",
                format!(
                    "holds the pivot `{pivot_label}` (the first step without a compensation): \
                     a branch beside it could fail after the point of no return"
                ),
                format!("give `{pivot_label}` a compensation, or move it after the group"),
            );
        } else if g.steps.start > p {
            c.push(
                Some(&g.label),
                "parallel",
                format!(
                    "follows the pivot `{pivot_label}`: steps after the point of no return run \
                     one at a time, each retried until it succeeds"
                ),
                format!(
                    "write the group's steps in line, or move the group before `{pivot_label}`"
                ),
            );
        }
    }
}

/// The fields a waiting step may not have: it sends nothing and changes
/// nothing, so it has no participant, action, input, retry, timeout or
/// compensation of its own.
fn check_waiting_fields(c: &mut Collector, label: &str, s: &RawStep) {
    let step = Some(label);
    let event = s.wait_for.as_ref().map_or("", |w| w.event.as_str());
    let not_here = [
        ("action", s.action.is_some()),
        ("input", s.input.is_some()),
        ("timeout", s.timeout.is_some()),
        ("retry", s.retry.is_some()),
        ("retriable", s.retriable),
    ];
    for (field, set) in not_here {
        if set {
            c.push(
                step,
                field,
                format!("is set on a waiting step, which sends nothing and waits for `{event}`"),
                format!(
                    "remove `{field}:` (how long it waits is `wait_for.timeout`), or make it a \
                     step of its own"
                ),
            );
        }
    }
    // Its compensation, if it has one, is a command to a participant (say, to
    // tell the customer the approval they gave is void): both or neither.
    match (&s.participant, &s.compensation) {
        (Some(p), Some(_)) => check_token(c, step, "participant", p),
        (None, None) => {}
        (Some(_), None) => c.push(
            step,
            "participant",
            "is set on a waiting step without a compensation: it sends nothing to anyone",
            "remove `participant:`, or add the `compensation:` it runs when the saga turns back",
        ),
        (None, Some(_)) => c.push(
            step,
            "participant",
            "is required but missing: the compensation of a waiting step is sent to a participant",
            "add `participant:`, the service that runs the compensation",
        ),
    }
}

/// A waiting step's `wait_for:`: an event name, a timeout up to 30 days, an
/// optional correlation key (a template over the input and earlier
/// outputs) and an optional schema for the event's body.
fn check_wait(
    c: &mut Collector,
    label: &str,
    scope: Scope<'_>,
    w: &RawWait,
    names: &[&str],
    properties: Option<&[String]>,
) -> Option<WaitFor> {
    let step = Some(label);
    check_token(c, step, "wait_for.event", &w.event);
    let timeout = parse_duration(c, step, "wait_for.timeout", Some(&w.timeout), Duration::ZERO)?;
    if timeout.as_millis() < WAIT_TIMEOUT_MIN_MS {
        c.push(
            step,
            "wait_for.timeout",
            format!("{timeout} is too short to wait for anything"),
            "use at least 1s",
        );
    } else if timeout.as_millis() > WAIT_TIMEOUT_MAX_MS {
        c.push(
            step,
            "wait_for.timeout",
            format!("{timeout} is over the limit of 30 days"),
            "use at most `720h`",
        );
    }
    let key = w.key.as_ref().map(|k| {
        let mut refs = 0;
        let key = compile(
            c,
            Some(label),
            scope,
            "wait_for.key",
            &Value::String(k.clone()),
            names,
            properties,
            &mut refs,
        );
        if refs == 0 {
            c.push(
                step,
                "wait_for.key",
                format!("`{k}` refers to nothing, so every saga would wait for the same key"),
                "write a reference such as `{{steps.charge.output.charge_id}}`",
            );
        }
        key
    });
    let schema = match &w.schema {
        None => None,
        Some(schema) => match InputSchema::compile(schema.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                c.push(
                    step,
                    "wait_for.schema",
                    format!("is not a valid JSON Schema: {e}"),
                    "fix the schema (remote `$ref`s are not fetched; inline them)",
                );
                None
            }
        },
    };
    let fail_when = w.fail_when.as_deref().and_then(|text| {
        let field = "wait_for.fail_when";
        match Condition::compile(text) {
            Err(problem) => {
                c.push(step, field, problem, "write a CEL expression over `event`, e.g. `event.status != 'succeeded'`");
                None
            }
            Ok(condition) => {
                for problem in condition.check_names_with(&scope.visible(names), properties, &["event"]) {
                    let what = match problem {
                        NameProblem::Unknown(name) => format!("uses `{name}`, which it cannot see"),
                        NameProblem::NotEarlier(name) => format!("uses `steps.{name}`, which is not a step before this one"),
                        NameProblem::NotInSchema(name) => format!("uses `input.{name}`, which `input_schema` does not list"),
                    };
                    c.push(step, field, what, "start every name with `event`, `input`, `saga` or an earlier step under `steps`");
                }
                Some(condition)
            }
        }
    });
    Some(WaitFor { event: w.event.clone(), key, timeout, schema, fail_when })
}

/// A step's `when:`: a CEL expression that compiles, naming only `input`
/// (fields the schema lists, when it lists them), `saga` and earlier steps.
fn check_condition(
    c: &mut Collector,
    label: &str,
    text: &str,
    earlier: &[&str],
    properties: Option<&[String]>,
) -> Option<Condition> {
    let step = Some(label);
    let condition = match Condition::compile(text) {
        Ok(condition) => condition,
        Err(problem) => {
            c.push(
                step,
                "when",
                problem,
                "write a CEL expression that is true or false, e.g. `input.amount > 100000`",
            );
            return None;
        }
    };
    for problem in condition.check_names(earlier, properties) {
        match problem {
            NameProblem::Unknown(name) => c.push(
                step,
                "when",
                format!("uses `{name}`, which a condition cannot see"),
                "start every name with `input`, `saga` or `steps`",
            ),
            NameProblem::NotEarlier(name) => c.push(
                step,
                "when",
                format!("uses `steps.{name}`, which is not a step before this one"),
                format!("name a step before `{label}`: its output is known when the condition is decided"),
            ),
            NameProblem::NotInSchema(name) => c.push(
                step,
                "when",
                format!("uses `input.{name}`, which `input_schema` does not list"),
                format!("add `{name}` to the schema's properties, or fix the name"),
            ),
        }
    }
    Some(condition)
}

fn check_step(
    c: &mut Collector,
    label: &str,
    scope: Scope<'_>,
    s: &RawStep,
    names: &[&str],
    properties: Option<&[String]>,
) -> StepDef {
    let step = Some(label);
    let timeout = parse_duration(c, step, "timeout", s.timeout.as_deref(), DEFAULT_STEP_TIMEOUT)
        .unwrap_or(DEFAULT_STEP_TIMEOUT);
    if timeout.as_millis() < STEP_TIMEOUT_MIN_MS {
        c.push(
            step,
            "timeout",
            format!("{timeout} is too short to get an answer over the network"),
            format!("use at least {STEP_TIMEOUT_MIN_MS}ms"),
        );
    } else if timeout.as_millis() > STEP_TIMEOUT_MAX_MS {
        c.push(
            step,
            "timeout",
            format!("{timeout} is over the limit of 1h"),
            "use at most `1h`; long work should report progress in steps",
        );
    }
    let wait = s.wait_for.as_ref().and_then(|w| check_wait(c, label, scope, w, names, properties));
    // A waiting step's `timeout` is how long each attempt of its
    // compensation, if it has one, is given (the default: it sets none); how
    // long it waits is `wait.timeout`.
    let retry = check_retry(c, label, Kind::Do, s.retry.as_ref());
    let compensation_retry = check_retry(c, label, Kind::Undo, s.compensation_retry.as_ref());
    let input = match &s.input {
        None => PayloadTemplate::Object(BTreeMap::new()),
        Some(v @ Value::Object(_)) => {
            let mut refs = 0;
            compile(c, Some(label), scope, "input", v, names, properties, &mut refs)
        }
        Some(_) => {
            c.push(
                step,
                "input",
                "is not a mapping",
                "write `input:` as fields, e.g. `amount: \"{{input.amount}}\"`",
            );
            PayloadTemplate::Literal(Value::Null)
        }
    };
    let when = s
        .when
        .as_deref()
        .and_then(|text| check_condition(c, label, text, &scope.visible(names), properties));
    StepDef {
        name: s.name.clone(),
        participant: s.participant.clone().unwrap_or_default(),
        action: s.action.clone().unwrap_or_default(),
        compensation: s.compensation.clone(),
        input,
        timeout,
        retry,
        compensation_retry,
        retriable: s.retriable,
        when,
        wait,
        place: None,
    }
}
