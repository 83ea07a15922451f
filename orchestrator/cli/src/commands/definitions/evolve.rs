//! `skald definitions diff OLD NEW` (two files, no server) and `skald
//! definitions check FILE` (which running sagas could move to it).

use super::{load_or_report, report_or};
use crate::client::{ApiArgs, Body, CliError, Client, Outcome, decode, print_json, write_table};
use orchestrator::api::definitions::Compatibility;
use sagas::definition;
use serde::Deserialize;
use std::io::Write;
use std::path::Path;

/// Print what changed from `old` to `new`; `Failure` (exit 1) when they differ.
pub(super) fn diff(
    old: &Path,
    new: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<Outcome> {
    let (Some(a), Some(b)) = (load_or_report(old, err)?, load_or_report(new, err)?) else {
        return Ok(Outcome::Failure);
    };
    let lines = definition::diff(&a, &b);
    if lines.is_empty() {
        writeln!(out, "{} and {} define the same saga", old.display(), new.display())?;
        return Ok(Outcome::Success);
    }
    writeln!(out, "{} v{} → {} v{}", a.name, a.version, b.name, b.version)?;
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    Ok(Outcome::Failure)
}

#[derive(Debug, Deserialize)]
struct Checked {
    name: String,
    version: u32,
    compatibility: Compatibility,
}

/// Ask the API which running sagas of FILE's type could move to it.
/// `Failure` (exit 1) when any examined could not.
pub(super) async fn check(
    file: &Path,
    api: &ApiArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let Some(text) = report_or(file, err)? else { return Ok(Outcome::Failure) };
    let client = Client::new(api)?;
    let answer = client.post(&["v1", "definitions", "check"], Body::Yaml(text)).await?;
    let checked: Checked = decode(&answer.body, "compatibility check")?;
    let c = &checked.compatibility;
    let refused: u64 = c.incompatible.values().sum();
    if api.json {
        print_json(&answer.body, out)?;
    } else {
        writeln!(
            out,
            "{} v{}: {} running, {} examined: {} could move, {} already on it, {} could not",
            checked.name, checked.version, c.running, c.examined, c.compatible, c.already, refused
        )?;
        for (code, n) in &c.incompatible {
            writeln!(out, "  {code}: {n}")?;
        }
        if !c.examples.is_empty() {
            writeln!(out)?;
            let rows: Vec<Vec<String>> = c
                .examples
                .iter()
                .map(|e| vec![e.saga_id.clone(), e.code.clone(), e.detail.clone()])
                .collect();
            write_table(&["saga", "reason", "detail"], &rows, out)?;
        }
        if c.examined < c.running {
            writeln!(err, "only the newest {} running sagas were examined", c.examined)?;
        }
    }
    Ok(if refused == 0 { Outcome::Success } else { Outcome::Failure })
}
