//! `skald definitions ...`: check saga definition files and show what they
//! define, and list, show and register the definitions a running `skald serve`
//! knows.
//!
//! A saga author runs `skald definitions validate` before deploying a definition
//! (and CI runs it over `sagas/definitions/`). Loading and validation are the
//! `sagas` crate's; this module only reads the files, prints one line per valid
//! file on stdout and every problem of an invalid file on stderr, and turns the
//! result into an exit status. `validate` and `show FILE` never need a server;
//! `list`, `show TYPE` and `apply` go through the operator API
//! ([`crate::client`]), and `apply` checks the file locally before sending it.

mod evolve;

use crate::client::{self, ApiArgs, Body, CliError, Client, Outcome, decode, one_line, print_json};
use sagas::Definition;
use sagas::definition::{self, DefinitionErrors};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
    /// Show a definition's steps as a table, from a file or from the API.
    #[command(
        long_about = "Show what a saga definition defines: its name, version, hash, deadline \
            and pivot, and a table of its steps with participant, action, compensation, \
            timeout, retry attempts, whether the step is retriable and its `when:` condition \
            (a step in a parallel group is named `group/branch/step`); a definition with \
            parallel groups also gets a `flow:` drawing of its steps, each group's branches \
            one line each.\n\n\
            TARGET is a definition file (an existing file, or any path with `/` or ending in \
            .yaml or .yml), validated locally with no server, or a saga type, read from the \
            API of a running `skald serve` (its newest version, or --version). An invalid file \
            prints its problems on stderr as `validate` does.",
        after_help = "Examples:\n  \
            skald definitions show sagas/definitions/topup.yaml\n  \
            skald definitions show topup\n  \
            skald definitions show topup --version 1 --json\n\n\
            Exit status: 0 shown, 1 the file is invalid or unreadable or the API refused, \
            2 usage, 3 the API cannot be reached."
    )]
    Show {
        /// A definition file (YAML), or a saga type known to the API.
        #[arg(value_name = "FILE|TYPE")]
        target: String,
        /// With a saga type: this version instead of the newest.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the definitions a running `skald serve` knows, every version.
    #[command(
        long_about = "List every definition version the API knows: name, version, whether new \
            sagas of that type start with it, its number of steps, hash and description.",
        after_help = "Examples:\n  \
            skald definitions list\n  \
            skald definitions list --json | jq -r '.[] | select(.newest) | .name'\n\n\
            Exit status: 0 listed, 1 the API refused, 2 usage, 3 the API cannot be reached."
    )]
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Register a definition file with a running `skald serve` (admin role).
    #[command(
        long_about = "Validate FILE locally (problems are printed as `validate` prints them), \
            then register it with the API: new sagas of its type start with it, while running \
            sagas keep the version they began with. Its version must be higher than the newest \
            registered one; sending the very same definition again changes nothing.",
        after_help = "Examples:\n  \
            skald definitions apply sagas/definitions/topup.yaml\n  \
            SKALD_TOKEN=$ADMIN_TOKEN skald definitions apply topup-v2.yaml --json\n\n\
            Exit status: 0 registered (or already registered), 1 the file is invalid or the API \
            refused, 2 usage, 3 the API cannot be reached."
    )]
    Apply {
        /// The definition file (YAML) to register.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show what changed between two definition files (no server).
    #[command(
        long_about = "Compare two definition files (typically two versions of one saga) and \
            print each difference on a line: `~` changed, `+` added, `-` removed. Steps are \
            matched by name: added, removed and moved steps, and for each step its participant, \
            action, compensation, input mapping, timeout and retry policies; then the name, \
            version, description, deadline, input schema, output, tags and the pivot.",
        after_help = "Examples:\n  \
            skald definitions diff topup-v2.yaml sagas/definitions/topup.yaml\n\n\
            Exit status: 0 the same saga, 1 they differ (or a file is invalid), 2 usage."
    )]
    Diff {
        /// The older definition file.
        #[arg(value_name = "OLD")]
        old: PathBuf,
        /// The newer definition file.
        #[arg(value_name = "NEW")]
        new: PathBuf,
    },
    /// Which running sagas could move to a definition file's version.
    #[command(
        long_about = "Validate FILE locally, then ask a running `skald serve` which of the \
            running, compensating and parked sagas of its type could move to it: those whose \
            recorded history is a valid history of FILE up to where they are (same steps so \
            far, with the same participant, action and compensation for every step reached; \
            the input valid under its schema; the history replaying the same). Prints the \
            counts, the reasons the others could not, and examples. Nothing is registered or \
            moved: register with `apply`, move with `skald sagas migrate` or `skald sagas bulk \
            migrate`.",
        after_help = "Examples:\n  \
            skald definitions check topup-v4.yaml\n  \
            skald definitions check topup-v4.yaml --json | jq .compatibility.incompatible\n\n\
            Exit status: 0 every examined saga could move (or none runs), 1 some could not or \
            the file is invalid, 2 usage, 3 the API cannot be reached."
    )]
    Check {
        /// The definition file (YAML) to check the running sagas against.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Check against the sagas running now (the default, and the only check there is).
        #[arg(long)]
        running: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Run a `definitions` command, writing results to `out` and problems to `err`.
pub async fn run(
    command: &DefinitionsCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    match command {
        DefinitionsCommand::Validate { files } => Ok(validate(files, out, err)?),
        DefinitionsCommand::Show { target, version, api } if is_file(target) => {
            if version.is_some() {
                return Err(CliError::usage(format!(
                    "--version is for a saga type from the API; `{target}` is a file, shown as it is"
                )));
            }
            Ok(show_file(Path::new(target), api.json, out, err)?)
        }
        DefinitionsCommand::Show { target, version, api } => {
            show_remote(target, *version, api, out).await
        }
        DefinitionsCommand::List { api } => list(api, out).await,
        DefinitionsCommand::Apply { file, api } => apply(file, api, out, err).await,
        DefinitionsCommand::Diff { old, new } => Ok(evolve::diff(old, new, out, err)?),
        DefinitionsCommand::Check { file, api, .. } => evolve::check(file, api, out, err).await,
    }
}

/// The definition in `file`, or its problems printed on `err` and `None`.
fn load_or_report(file: &Path, err: &mut dyn Write) -> io::Result<Option<Definition>> {
    match definition::load_file(file) {
        Ok(d) => Ok(Some(d)),
        Err(errors) => {
            report(&errors, err)?;
            Ok(None)
        }
    }
}

/// The text of a valid definition `file`, exactly as read (so the server
/// computes the same hash), or its problems printed on `err` and `None`.
fn report_or(file: &Path, err: &mut dyn Write) -> Result<Option<String>, CliError> {
    if load_or_report(file, err)?.is_none() {
        return Ok(None);
    }
    std::fs::read_to_string(file).map(Some).map_err(|e| {
        CliError::failed(format!("cannot read {}: {e}; check the path", file.display()))
    })
}

/// Whether `show`'s target names a file rather than a saga type (saga types
/// are subject tokens: never a `/`, never a `.yaml` ending).
fn is_file(target: &str) -> bool {
    Path::new(target).is_file()
        || target.contains(['/', '\\'])
        || target.ends_with(".yaml")
        || target.ends_with(".yml")
}

fn validate(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> io::Result<Outcome> {
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
        return Ok(Outcome::Success);
    }
    if files.len() > 1 {
        writeln!(err, "{invalid} of {} definition files are invalid", files.len())?;
    }
    Ok(Outcome::Failure)
}

fn show_file(
    file: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<Outcome> {
    let d = match definition::load_file(file) {
        Ok(d) => d,
        Err(errors) => {
            report(&errors, err)?;
            return Ok(Outcome::Failure);
        }
    };
    if json {
        // The shape the API shows a definition in, without `newest` (no server asked).
        let definition: Value = serde_json::from_str(&d.canonical_json).unwrap_or(Value::Null);
        let view = json!({
            "name": d.name, "version": d.version, "hash": d.hash,
            "description": d.description, "steps": d.steps.len(), "definition": definition,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&view).unwrap_or_default())?;
        return Ok(Outcome::Success);
    }
    write_definition(&d, &format!("file:     {}", file.display()), out)?;
    Ok(Outcome::Success)
}

/// The summary, the facts and the step table of a definition; `source` says where it is from.
fn write_definition(d: &Definition, source: &str, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", summary(d))?;
    if !d.description.is_empty() {
        writeln!(out, "{}", d.description.trim_end())?;
    }
    writeln!(out, "{source}")?;
    writeln!(out, "hash:     {}", d.hash)?;
    writeln!(out, "deadline: {}", d.deadline.map_or_else(|| "none".to_owned(), |t| t.to_string()))?;
    let pivot =
        d.pivot.and_then(|p| d.steps.get(p)).map_or("none (every step can be undone)", |s| &s.name);
    writeln!(out, "pivot:    {pivot}")?;
    if !d.groups.is_empty() {
        writeln!(out, "flow:")?;
        write_flow(d, out)?;
    }
    writeln!(out)?;
    write_steps(d, out)
}

/// The steps in order, each parallel group drawn as a box with a line per
/// branch: its steps, in the order the branch runs them.
fn write_flow(d: &Definition, out: &mut dyn Write) -> io::Result<()> {
    let mut i = 0;
    while let Some(s) = d.steps.get(i) {
        let Some(group) = d.group_of(i) else {
            let mut notes = Vec::new();
            if d.pivot == Some(i) {
                notes.push("pivot".to_owned());
            }
            if let Some(w) = &s.wait {
                notes.push(format!("waits for {}", w.event));
            }
            if let Some(w) = &s.when {
                notes.push(format!("when {}", w.source()));
            }
            let notes =
                if notes.is_empty() { String::new() } else { format!("  ({})", notes.join("; ")) };
            writeln!(out, "  {}{notes}", s.name)?;
            i += 1;
            continue;
        };
        let when =
            group.when.as_ref().map(|w| format!(", when {}", w.source())).unwrap_or_default();
        writeln!(out, "  ┌ {} (parallel{when})", group.name)?;
        let width = group.branches.iter().map(|b| b.name.len()).max().unwrap_or(0);
        for b in &group.branches {
            let steps: Vec<&str> = b.steps.clone().map(|j| d.steps[j].name.as_str()).collect();
            writeln!(
                out,
                "  │ {:width$}  {}",
                format!("{}:", b.name),
                steps.join(" → "),
                width = width + 1
            )?;
        }
        writeln!(out, "  └")?;
        i = group.steps.end;
    }
    Ok(())
}

/// What the CLI reads of a definition summary from the API.
#[derive(Debug, Deserialize)]
struct Listed {
    name: String,
    version: u32,
    hash: String,
    #[serde(default)]
    description: String,
    steps: usize,
    #[serde(default)]
    newest: bool,
    #[serde(default)]
    compatibility: Option<orchestrator::api::definitions::Compatibility>,
}

async fn list(api: &ApiArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let client = Client::new(api)?;
    let body = client.get(&["v1", "definitions"], &[]).await?.body;
    if api.json {
        print_json(&body, out)?;
        return Ok(Outcome::Success);
    }
    let mut all: Vec<Listed> = decode(&body, "definition list")?;
    all.sort_by(|a, b| a.name.cmp(&b.name).then(b.version.cmp(&a.version)));
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.version.to_string(),
                if d.newest { "yes" } else { "no" }.to_owned(),
                d.steps.to_string(),
                d.hash.get(..12).unwrap_or(&d.hash).to_owned(),
                one_line(&d.description),
            ]
        })
        .collect();
    client::write_table(
        &["name", "version", "newest", "steps", "hash", "description"],
        &rows,
        out,
    )?;
    Ok(Outcome::Success)
}

async fn show_remote(
    name: &str,
    version: Option<u32>,
    api: &ApiArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client = Client::new(api)?;
    let query = [("version", version.map(|v| v.to_string()).unwrap_or_default())];
    let body = client.get(&["v1", "definitions", name], &query).await?.body;
    if api.json {
        print_json(&body, out)?;
        return Ok(Outcome::Success);
    }
    let listed: Listed = decode(&body, "definition")?;
    // The canonical JSON is a definition as the orchestrator itself reloads it.
    let canonical = body.get("definition").map(Value::to_string).unwrap_or_default();
    let label = format!("{name} v{} from {}", listed.version, client.base());
    let d = definition::load(&label, &canonical).map_err(|e| {
        let first = e.0.first().map(ToString::to_string).unwrap_or_default();
        CliError::failed(format!(
            "this skald cannot read {label} ({}); use --json to see it",
            one_line(&first)
        ))
    })?;
    let newest =
        if listed.newest { "the newest: new sagas start with it" } else { "not the newest" };
    write_definition(&d, &format!("source:   {} ({newest})", client.base()), out)?;
    Ok(Outcome::Success)
}

async fn apply(
    file: &Path,
    api: &ApiArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let local = match definition::load_file(file) {
        Ok(d) => d,
        Err(errors) => {
            report(&errors, err)?;
            return Ok(Outcome::Failure);
        }
    };
    // Sent exactly as read, so the server computes the same hash.
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::failed(format!("cannot read {}: {e}; check the path", file.display()))
    })?;
    let client = Client::new(api)?;
    let answer = client.post(&["v1", "definitions"], Body::Yaml(text)).await?;
    if api.json {
        print_json(&answer.body, out)?;
        return Ok(Outcome::Success);
    }
    let d: Listed = decode(&answer.body, "definition")?;
    if d.hash != local.hash {
        return Err(CliError::failed(format!(
            "the API registered {} v{} with hash {}, but {} has hash {}; \
             are this skald and the server different versions?",
            d.name,
            d.version,
            d.hash,
            file.display(),
            local.hash
        )));
    }
    let hash = d.hash.get(..12).unwrap_or(&d.hash);
    if answer.status == reqwest::StatusCode::CREATED {
        writeln!(
            out,
            "registered {} v{} (hash {hash}) from {}; new {} sagas start with it",
            d.name,
            d.version,
            file.display(),
            d.name
        )?;
    } else {
        writeln!(
            out,
            "{} v{} (hash {hash}) was already registered; nothing changed",
            d.name, d.version
        )?;
    }
    if let Some(c) = &d.compatibility
        && c.running > 0
    {
        let refused: u64 = c.incompatible.values().sum();
        writeln!(
            out,
            "running {} sagas keep their versions: {} could move to v{} (skald sagas bulk \
             migrate), {} could not (skald definitions check {})",
            d.name,
            c.compatible,
            d.version,
            refused,
            file.display()
        )?;
    }
    Ok(Outcome::Success)
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

/// A definition's steps table: [`client::STEP_HEADER`], then these columns.
const STEP_COLUMNS: [&str; 4] = ["timeout", "attempts", "retriable", "when"];

fn write_steps(d: &Definition, out: &mut dyn Write) -> io::Result<()> {
    let rows: Vec<Vec<String>> = d
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let pivot = d.pivot == Some(i);
            let compensation = s.compensation.as_deref();
            let (participant, action) = match &s.wait {
                Some(w) => (
                    if s.participant.is_empty() { "-".to_owned() } else { s.participant.clone() },
                    format!("(wait for {})", w.event),
                ),
                None => (s.participant.clone(), s.action.clone()),
            };
            let place = s.place.and_then(|p| {
                let group = d.groups.get(p.group)?;
                Some((group.name.as_str(), group.branches.get(p.branch)?.name.as_str()))
            });
            let mut row =
                client::step_cells(i, &s.name, place, pivot, &participant, &action, compensation);
            row.extend([
                s.wait.as_ref().map_or(s.timeout, |w| w.timeout).to_string(),
                s.retry.attempts.to_string(),
                if s.retriable { "yes" } else { "no" }.to_owned(),
                s.when.as_ref().map_or_else(|| "-".to_owned(), |w| w.source().to_owned()),
            ]);
            row
        })
        .collect();
    let header: Vec<&str> = client::STEP_HEADER.into_iter().chain(STEP_COLUMNS).collect();
    client::write_table(&header, &rows, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sagas/definitions").join(name)
    }

    fn show_command(file: PathBuf) -> DefinitionsCommand {
        let api = ApiArgs { api_url: "http://127.0.0.1:9".into(), token: None, json: false };
        DefinitionsCommand::Show { target: file.to_str().unwrap().to_owned(), version: None, api }
    }

    fn run_to_strings(command: &DefinitionsCommand) -> (Outcome, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let verdict = runtime.block_on(run(command, &mut out, &mut err)).unwrap();
        (verdict, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn validate_reports_each_file_and_fails_if_any_is_invalid() {
        let missing = PathBuf::from("/nonexistent/skald/missing.yaml");
        let command =
            DefinitionsCommand::Validate { files: vec![shipped("topup.yaml"), missing.clone()] };
        let (verdict, out, err) = run_to_strings(&command);
        assert_eq!(verdict, Outcome::Failure);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("ok  "), "{out}");
        assert!(out.contains("topup.yaml  topup v3 (3 steps, hash "), "{out}");
        assert!(err.contains("missing.yaml: field `(file)`: cannot be read"), "{err}");
        assert!(err.ends_with("1 of 2 definition files are invalid\n"), "{err}");
    }

    #[test]
    fn show_prints_every_step_and_marks_the_pivot() {
        let (verdict, out, err) = run_to_strings(&show_command(shipped("payout.yaml")));
        assert_eq!(verdict, Outcome::Success);
        assert!(err.is_empty(), "{err}");
        assert!(out.starts_with("payout v3 (3 steps, hash "), "{out}");
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
                    "retriable",
                    "when"
                ],
                vec!["1", "hold", "ledger", "hold", "void", "2s", "5", "no", "-"],
                vec!["2", "payout (pivot)", "payment", "payout", "-", "10s", "3", "no", "-"],
                vec!["3", "post", "ledger", "post", "-", "2s", "20", "yes", "-"],
            ]
        );
    }

    #[test]
    fn show_draws_parallel_groups_branch_by_branch() {
        let (verdict, out, err) = run_to_strings(&show_command(shipped("topup_3ds.yaml")));
        assert_eq!(verdict, Outcome::Success, "{err}");
        let flow: Vec<&str> = out
            .lines()
            .skip_while(|l| *l != "flow:")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(
            flow[..4],
            ["  ┌ prepare (parallel)", "  │ funds:      hold", "  │ screening:  screen", "  └"]
        );
        assert!(flow.contains(&"  post  (pivot)"), "{out}");
        assert!(out.contains("\n1  prepare/funds/hold "), "{out}");
        assert!(out.contains("\n2  prepare/screening/screen "), "{out}");
    }

    #[test]
    fn show_tells_files_from_saga_types() {
        assert!(is_file(shipped("topup.yaml").to_str().unwrap()));
        assert!(is_file("missing.yaml") && is_file("defs/topup") && is_file("t.yml"));
        assert!(!is_file("topup") && !is_file("bench"));
    }

    #[test]
    fn version_with_a_file_is_a_usage_error() {
        let mut command = show_command(shipped("topup.yaml"));
        if let DefinitionsCommand::Show { version, .. } = &mut command {
            *version = Some(2);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let e = runtime.block_on(run(&command, &mut Vec::new(), &mut Vec::new())).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }
}
