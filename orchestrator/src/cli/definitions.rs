//! `skald definitions ...`: check saga definition files and show what they define.
//!
//! A saga author runs `skald definitions validate` before deploying a definition
//! (and CI runs it over `sagas/definitions/`). Loading and validation are the
//! `sagas` crate's; this module only reads the files, prints one line per valid
//! file on stdout and every problem of an invalid file on stderr, and turns the
//! result into an exit status.

use sagas::Definition;
use sagas::definition::{self, DefinitionErrors};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Saga definitions: the YAML files that declare a saga's steps.
#[derive(Debug, clap::Subcommand)]
pub enum DefinitionsCommand {
    /// Check definition files and report every problem in them.
    #[command(
        long_about = "Check saga definition files and report every problem in them.\n\n\
            Each FILE is parsed and validated exactly as the orchestrator would load it: \
            field names and types, step names, participants and actions (NATS subject \
            tokens), durations, retry policies, the input JSON Schema, input templates \
            (`{{input.x}}`, `{{saga.id}}`, `{{steps.<earlier step>.output.y}}`) and the \
            rule that steps after the pivot must be retriable.\n\n\
            A valid file prints one line on stdout:\n  \
            ok  <file>  <name> v<version> (<n> steps, hash <first 12 hex digits>)\n\
            An invalid file prints each problem on stderr, one a line, naming the file, \
            the step and the field, and how to fix it.",
        after_help = "Examples:\n  \
            skald definitions validate sagas/definitions/topup.yaml\n  \
            skald definitions validate sagas/definitions/*.yaml\n\n\
            Exit status: 0 when every file is valid, 1 when any is invalid or unreadable, \
            2 on a usage error."
    )]
    Validate {
        /// Definition files (YAML) to check.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Show a definition's steps as a table.
    #[command(
        long_about = "Validate one saga definition file and show what it defines: its name, \
            version, hash, deadline and pivot, and a table of its steps with participant, \
            action, compensation, timeout, retry attempts and whether the step is retriable.\n\n\
            An invalid file prints its problems on stderr as `validate` does.",
        after_help = "Example:\n  skald definitions show sagas/definitions/topup.yaml\n\n\
            Exit status: 0 when the file is valid, 1 when it is invalid or unreadable, \
            2 on a usage error."
    )]
    Show {
        /// The definition file (YAML) to show.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Whether every file given was a valid definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    AllValid,
    SomeInvalid,
}

impl From<Verdict> for ExitCode {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::AllValid => ExitCode::SUCCESS,
            Verdict::SomeInvalid => ExitCode::FAILURE,
        }
    }
}

/// Run a `definitions` command, writing results to `out` and problems to `err`.
///
/// The only error is failing to write to `out` or `err`.
pub fn run(
    command: &DefinitionsCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<Verdict> {
    match command {
        DefinitionsCommand::Validate { files } => validate(files, out, err),
        DefinitionsCommand::Show { file } => show(file, out, err),
    }
}

fn validate(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> io::Result<Verdict> {
    let mut invalid = 0_usize;
    for file in files {
        match definition::load_file(file) {
            Ok(d) => writeln!(out, "ok  {}  {}", file.display(), summary(&d))?,
            Err(errors) => {
                invalid += 1;
                report(&errors, err)?;
            }
        }
    }
    if invalid == 0 {
        return Ok(Verdict::AllValid);
    }
    if files.len() > 1 {
        writeln!(err, "{invalid} of {} definition files are invalid", files.len())?;
    }
    Ok(Verdict::SomeInvalid)
}

fn show(file: &Path, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<Verdict> {
    let d = match definition::load_file(file) {
        Ok(d) => d,
        Err(errors) => {
            report(&errors, err)?;
            return Ok(Verdict::SomeInvalid);
        }
    };
    writeln!(out, "{}", summary(&d))?;
    if !d.description.is_empty() {
        writeln!(out, "{}", d.description.trim_end())?;
    }
    writeln!(out, "file:     {}", file.display())?;
    writeln!(out, "hash:     {}", d.hash)?;
    writeln!(out, "deadline: {}", d.deadline.map_or_else(|| "none".to_owned(), |t| t.to_string()))?;
    let pivot =
        d.pivot.and_then(|p| d.steps.get(p)).map_or("none (every step can be undone)", |s| &s.name);
    writeln!(out, "pivot:    {pivot}")?;
    writeln!(out)?;
    write_table(&step_rows(&d), out)?;
    Ok(Verdict::AllValid)
}

/// `<name> v<version> (<n> steps, hash <first 12 hex>)`.
fn summary(d: &Definition) -> String {
    let n = d.steps.len();
    let steps = if n == 1 { "step" } else { "steps" };
    let hash = d.hash.get(..12).unwrap_or(&d.hash);
    format!("{} v{} ({n} {steps}, hash {hash})", d.name, d.version)
}

fn report(errors: &DefinitionErrors, err: &mut dyn Write) -> io::Result<()> {
    for e in &errors.0 {
        writeln!(err, "{e}")?;
    }
    Ok(())
}

const HEADER: [&str; 8] =
    ["#", "step", "participant", "action", "compensation", "timeout", "attempts", "retriable"];

fn step_rows(d: &Definition) -> Vec<[String; 8]> {
    d.steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let pivot = if d.pivot == Some(i) { " (pivot)" } else { "" };
            [
                (i + 1).to_string(),
                format!("{}{pivot}", s.name),
                s.participant.clone(),
                s.action.clone(),
                s.compensation.clone().unwrap_or_else(|| "-".to_owned()),
                s.timeout.to_string(),
                s.retry.attempts.to_string(),
                if s.retriable { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect()
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
fn write_table(rows: &[[String; 8]], out: &mut dyn Write) -> io::Result<()> {
    let mut widths = HEADER.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sagas/definitions").join(name)
    }

    fn run_to_strings(command: &DefinitionsCommand) -> (Verdict, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let verdict = run(command, &mut out, &mut err).unwrap();
        (verdict, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn validate_reports_each_file_and_fails_if_any_is_invalid() {
        let missing = PathBuf::from("/nonexistent/skald/missing.yaml");
        let command =
            DefinitionsCommand::Validate { files: vec![shipped("topup.yaml"), missing.clone()] };
        let (verdict, out, err) = run_to_strings(&command);
        assert_eq!(verdict, Verdict::SomeInvalid);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("ok  "), "{out}");
        assert!(out.contains("topup.yaml  topup v1 (3 steps, hash "), "{out}");
        assert!(err.contains("missing.yaml: field `(file)`: cannot be read"), "{err}");
        assert!(err.ends_with("1 of 2 definition files are invalid\n"), "{err}");
    }

    #[test]
    fn show_prints_every_step_and_marks_the_pivot() {
        let (verdict, out, err) =
            run_to_strings(&DefinitionsCommand::Show { file: shipped("payout.yaml") });
        assert_eq!(verdict, Verdict::AllValid);
        assert!(err.is_empty(), "{err}");
        assert!(out.starts_with("payout v1 (3 steps, hash "), "{out}");
        assert!(out.contains("pivot:    payout\n"), "{out}");
        let table: Vec<Vec<&str>> = out
            .lines()
            .skip_while(|l| !l.starts_with("#  "))
            .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
            .collect();
        assert_eq!(
            table,
            [
                vec![
                    "#",
                    "step",
                    "participant",
                    "action",
                    "compensation",
                    "timeout",
                    "attempts",
                    "retriable"
                ],
                vec!["1", "hold", "ledger", "hold", "void", "2s", "5", "no"],
                vec!["2", "payout (pivot)", "payment", "payout", "-", "10s", "3", "no"],
                vec!["3", "post", "ledger", "post", "-", "2s", "20", "yes"],
            ]
        );
    }
}
