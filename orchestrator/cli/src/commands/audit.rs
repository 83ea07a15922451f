//! `skald audit` (every saga that ended in a window) and `skald sagas audit
//! ID` (one saga): the orchestrator's record of each step beside what each
//! participant recorded, through the API's audit endpoints. Exit 1 when
//! anything disagrees or a participant could not be asked.

use crate::client::{
    ApiArgs, CliError, Client, Outcome, decode, one_line, print_json, write_table,
};
use orchestrator::api::audit::{AUDIT_PAGE_MAX, AuditPage};
use orchestrator::audit::Tally;
use orchestrator::audit::compare::{STEP_COLUMNS, SagaAudit, StepAudit};
use serde_json::Value;
use std::io::Write;

/// Sagas that disagree printed (and kept for `--json`) at most.
const EXAMPLES_MAX: usize = 20;

/// Which sagas to audit.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Audit the sagas that ended (completed, compensated or failed) within this long: 30m, 1h, 2d.
    #[arg(long, value_name = "AGE", default_value = "1h")]
    pub since: String,
    /// Only sagas of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub saga_type: Option<String>,
    /// Only sagas with this business tag, NAME=VALUE (repeatable; all must match).
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    pub tags: Vec<String>,
    /// At most this many sagas (1 or more).
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max: u64,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `skald audit`: page through the window, then print the counts and the
/// sagas that disagree.
pub async fn run(
    args: &AuditArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client = Client::new(&args.api)?;
    let tags = crate::commands::sagas::tag_pairs(&args.tags)?;
    let mut cursor: Option<String> = None;
    let mut total = AuditPage { tally: Tally::default(), next_cursor: None };
    loop {
        let limit = AUDIT_PAGE_MAX.min(args.max.saturating_sub(total.tally.checked)).max(1);
        let mut query: Vec<(&str, String)> = vec![
            ("ended_within", args.since.clone()),
            ("type", args.saga_type.clone().unwrap_or_default()),
            ("limit", limit.to_string()),
            ("cursor", cursor.clone().unwrap_or_default()),
        ];
        query.extend(tags.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let body = client.get(&["v1", "audit"], &query).await?.body;
        let page: AuditPage = decode(&body, "audit page")?;
        let next = page.next_cursor;
        let (page, t) = (page.tally, &mut total.tally);
        t.checked += page.checked;
        t.agreeing += page.agreeing;
        t.disagreeing += page.disagreeing;
        t.unchecked += page.unchecked;
        for (kind, n) in page.by_kind {
            *t.by_kind.entry(kind).or_default() += n;
        }
        let room = EXAMPLES_MAX.saturating_sub(t.sagas.len());
        t.sagas.extend(page.sagas.into_iter().take(room));
        cursor = next;
        if !args.api.json {
            writeln!(err, "audited {} sagas…", total.tally.checked)?;
        }
        if cursor.is_none() || total.tally.checked >= args.max {
            break;
        }
    }
    total.next_cursor = cursor;
    let clean = total.tally.clean();
    if args.api.json {
        let value = serde_json::to_value(&total).unwrap_or(Value::Null);
        print_json(&value, out)?;
    } else {
        print_window(args, &total, out)?;
    }
    Ok(if clean { Outcome::Success } else { Outcome::Failure })
}

fn print_window(args: &AuditArgs, page: &AuditPage, out: &mut dyn Write) -> Result<(), CliError> {
    let total = &page.tally;
    let which = args.saga_type.as_deref().map(|t| format!(" of type {t}")).unwrap_or_default();
    writeln!(
        out,
        "audited {} sagas{which} that ended within {}: {} agree, {} disagree, {} could not be checked",
        total.checked, args.since, total.agreeing, total.disagreeing, total.unchecked
    )?;
    if page.next_cursor.is_some() {
        writeln!(out, "stopped at --max {}; more sagas ended in the window", args.max)?;
    }
    let kinds: Vec<Vec<String>> = total
        .by_kind
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    if !kinds.is_empty() {
        writeln!(out, "\ndisagreements by kind:")?;
        write_table(&["kind", "count"], &kinds, out)?;
    }
    if !total.sagas.is_empty() {
        writeln!(
            out,
            "\nsagas to look at (first {EXAMPLES_MAX}; `skald sagas audit ID` shows one):"
        )?;
        let mut rows = Vec::new();
        for saga in &total.sagas {
            for d in &saga.disagreements {
                rows.push(vec![
                    saga.saga_id.clone(),
                    saga.saga_type.clone(),
                    saga.status.clone(),
                    d.kind.as_str().to_owned(),
                    d.message.clone(),
                ]);
            }
            for u in &saga.unchecked {
                rows.push(vec![
                    saga.saga_id.clone(),
                    saga.saga_type.clone(),
                    saga.status.clone(),
                    "unchecked".into(),
                    one_line(&u.reason),
                ]);
            }
        }
        write_table(&["saga", "type", "status", "kind", "what"], &rows, out)?;
    }
    Ok(())
}

/// `skald sagas audit ID`.
pub async fn saga(saga_id: &str, api: &ApiArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let client = Client::new(api)?;
    let body = client.get(&["v1", "sagas", saga_id, "audit"], &[]).await?.body;
    let audit: SagaAudit = decode(&body, "saga audit")?;
    if api.json {
        print_json(&body, out)?;
    } else {
        print_saga(&audit, out)?;
    }
    let clean = audit.disagreements.is_empty() && audit.unchecked.is_empty();
    Ok(if clean { Outcome::Success } else { Outcome::Failure })
}

/// One saga's audit as tables.
pub fn print_saga(audit: &SagaAudit, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(out, "saga {} ({} {})", audit.saga_id, audit.saga_type, audit.status)?;
    let rows: Vec<Vec<String>> = audit.steps.iter().map(StepAudit::cells).collect();
    write_table(&STEP_COLUMNS, &rows, out)?;
    let notes: Vec<Vec<String>> = audit
        .steps
        .iter()
        .filter_map(|s| s.note.as_ref().map(|n| vec![s.step.clone(), n.clone()]))
        .collect();
    if !notes.is_empty() {
        writeln!(out, "\nnotes:")?;
        write_table(&["step", "note"], &notes, out)?;
    }
    if !audit.unexplained.is_empty() {
        writeln!(out, "\nrecorded by participants, made by no step:")?;
        let rows: Vec<Vec<String>> =
            audit.unexplained.iter().map(|u| vec![u.participant.clone(), u.text()]).collect();
        write_table(&["participant", "what"], &rows, out)?;
    }
    for u in &audit.unchecked {
        writeln!(out, "\nnot checked: {}: {}", u.participant, one_line(&u.reason))?;
    }
    if audit.disagreements.is_empty() {
        if audit.unchecked.is_empty() {
            writeln!(out, "\nevery participant agrees")?;
        }
    } else {
        writeln!(out, "\ndisagreements:")?;
        let rows: Vec<Vec<String>> = audit
            .disagreements
            .iter()
            .map(|d| vec![d.kind.as_str().to_owned(), d.message.clone()])
            .collect();
        write_table(&["kind", "what"], &rows, out)?;
    }
    Ok(())
}
