//! A file whose fields do not deserialize: which field, in which step, and
//! what the author probably meant.
//!
//! Deserializing stops at the first such field, so this reports one problem;
//! the checks in [`super::validate`] run only on a file of the right shape.

use super::error::{Collector, did_you_mean, listing, step_label};

const DEFINITION_FIELDS: &[&str] =
    &["name", "version", "description", "input_schema", "deadline", "steps", "output", "tags"];
const STEP_FIELDS: &[&str] = &[
    "name",
    "participant",
    "action",
    "compensation",
    "input",
    "timeout",
    "retry",
    "compensation_retry",
    "retriable",
    "when",
    "wait_for",
    "parallel",
];
const BRANCH_FIELDS: &[&str] = &["name", "steps"];
const WAIT_FIELDS: &[&str] = &["event", "timeout", "key", "schema", "fail_when"];
const RETRY_FIELDS: &[&str] = &["attempts", "initial_backoff", "max_backoff"];

/// Report a field of the wrong shape or name, naming the step it is in.
pub(super) fn shape_error(
    c: &mut Collector,
    loose: &yaml_serde::Value,
    e: &serde_path_to_error::Error<yaml_serde::Error>,
) {
    use serde_path_to_error::Segment as S;
    let segments: Vec<&S> = e.path().iter().collect();
    let mut step = None;
    let mut rest = &segments[..];
    let mut in_branch = false;
    if let [S::Map { key }, S::Seq { index }, tail @ ..] = &segments[..]
        && key == "steps"
    {
        let name = loose
            .get("steps")
            .and_then(|s| s.get(*index))
            .and_then(|s| s.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        step = Some(step_label(*index, name));
        rest = tail;
        // Inside a parallel group: `steps.<i>.parallel.<b>.steps.<k>...`.
        if let [S::Map { key: p }, S::Seq { index: b }, inner @ ..] = rest
            && p == "parallel"
        {
            let branch = loose
                .get("steps")
                .and_then(|s| s.get(*index))
                .and_then(|g| g.get("parallel"))
                .and_then(|p| p.get(*b));
            let branch_name =
                branch.and_then(|b| b.get("name")).and_then(|n| n.as_str()).unwrap_or_default();
            if let [S::Map { key: st }, S::Seq { index: k }, tail @ ..] = inner
                && st == "steps"
            {
                let name = branch
                    .and_then(|b| b.get("steps"))
                    .and_then(|s| s.get(*k))
                    .and_then(|s| s.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or_default();
                step = Some(format!(
                    "{}/{}/{}",
                    step.unwrap_or_default(),
                    branch_name,
                    step_label(*k, name)
                ));
                rest = tail;
            } else {
                in_branch = true;
            }
        }
    }
    let field: Vec<String> = rest
        .iter()
        .filter_map(|s| match s {
            S::Map { key } => Some(key.clone()),
            S::Seq { index } => Some(index.to_string()),
            _ => None,
        })
        .collect();
    let inner = e.inner().to_string();
    if let Some(unknown) = between(&inner, "unknown field `", "`") {
        let known = match (step.is_some(), field.first().map(String::as_str)) {
            (true, _) if in_branch => BRANCH_FIELDS,
            (true, Some("retry" | "compensation_retry")) => RETRY_FIELDS,
            (true, Some("wait_for")) => WAIT_FIELDS,
            (true, _) => STEP_FIELDS,
            (false, _) => DEFINITION_FIELDS,
        };
        let mut path = field.clone();
        if path.last().map(String::as_str) != Some(unknown) {
            path.push(unknown.to_owned());
        }
        c.push(
            step.as_deref(),
            path.join("."),
            format!("`{unknown}` is not a known field"),
            format!("{}known fields here: {}", did_you_mean(unknown, known), listing(known)),
        );
        return;
    }
    if let Some(missing) = between(&inner, "missing field `", "`") {
        let mut path = field;
        path.push(missing.to_owned());
        c.push(
            step.as_deref(),
            path.join("."),
            "is required but missing",
            format!("add `{missing}:`"),
        );
        return;
    }
    let field = if field.is_empty() { "(file)".to_owned() } else { field.join(".") };
    c.push(
        step.as_deref(),
        field,
        format!("has the wrong shape: {inner}"),
        "see the definition format in README.md",
    );
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}
