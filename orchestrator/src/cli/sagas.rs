//! `skald sagas ...`: list, show, start and repair sagas through the operator
//! API of a running `skald serve`, one saga at a time or in bulk.
//!
//! Nothing here decides anything: the API checks every request and the CLI
//! prints its answer, as a table for people or as the API's JSON (`--json`)
//! for scripts. Repairs and bulk jobs carry a request id the CLI makes before
//! sending, so a request whose answer was lost can be repeated safely.

use super::client::{
    ApiArgs, Body, CliError, Client, Outcome, decode, one_line, print_json, time_ms, write_table,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Pages `sagas list --all` follows at most.
pub const ALL_PAGES_MAX: usize = 100;
/// The page size `--all` asks for when `--limit` is not given (the API's maximum).
const ALL_PAGE_SIZE: u64 = crate::store::PAGE_SIZE_MAX;
/// Largest `--input @file` read.
const INPUT_BYTES_MAX: u64 = 1024 * 1024;
/// How often a bulk job's progress is asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a bulk job may make no progress before the CLI stops following it.
const STALL_MAX: Duration = Duration::from_secs(60);
/// Characters of an event's detail or a saga's input shown in a table.
const DETAIL_CHARS_MAX: usize = 120;
/// Filter keys `sagas bulk --filter` accepts (as the API names them).
const FILTER_KEYS: [&str; 7] =
    ["type", "status", "step", "older_than", "newer_than", "stuck", "key"];

/// Sagas on a running `skald serve`.
#[derive(Debug, clap::Subcommand)]
pub enum SagasCommand {
    /// List sagas, newest first, filtered.
    #[command(
        long_about = "List sagas, newest first, as a table: id, type, status, current step, \
            attempt, start time, idempotency key and the stuck classes it is in. Every filter \
            narrows the list. One page (--limit, default 50) at a time: follow `next_cursor` \
            with --cursor, or --all to follow up to 100 pages.",
        after_help = "Examples:\n  \
            skald sagas list\n  \
            skald sagas list --type topup --status running,parked\n  \
            skald sagas list --stuck any --older-than 10m\n  \
            skald sagas list --status compensating --all --json | jq '.items[].saga_id'\n\n\
            Exit status: 0 listed, 1 the API refused, 2 usage, 3 the API cannot be reached."
    )]
    List(ListArgs),
    /// Show one saga: summary, stuck classes, steps and its event history.
    #[command(
        long_about = "Show one saga in full: its summary (status, step, attempt, key, \
            times, owner, input, why it turned back), the stuck classes it is in and why, a \
            table of its steps (result, undo, attempts, what each waits for) and its event \
            timeline. --json prints everything the API knows, commands and replies included.",
        after_help = "Examples:\n  \
            skald sagas show 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11\n  \
            skald sagas show 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --json | jq .events\n\n\
            Exit status: 0 shown, 1 unknown saga or refused, 2 usage, 3 the API cannot be reached."
    )]
    Show {
        /// The saga id.
        #[arg(value_name = "SAGA_ID")]
        saga_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Start a saga (operator role).
    #[command(
        long_about = "Start a saga of TYPE with a JSON input (checked against the definition's \
            schema) and your idempotency key: the same key and input start one saga however \
            often they are sent, so repeating a command whose answer was lost is safe. The \
            same key with another input is refused.",
        after_help = "Examples:\n  \
            skald sagas start topup --key order-1042 --input '{\"wallet\":\"w1\",\"amount\":500}'\n  \
            skald sagas start topup --key order-1042 --input @order-1042.json\n  \
            echo '{}' | skald sagas start bench --key run-7 --input @-\n\n\
            Exit status: 0 started (or already started with this key), 1 refused, 2 usage, \
            3 the API cannot be reached."
    )]
    Start {
        /// The saga type (a definition name; see `skald definitions list`).
        #[arg(value_name = "TYPE")]
        saga_type: String,
        /// The input: JSON text, `@file` to read it from a file, or `@-` from stdin.
        #[arg(long, value_name = "JSON|@FILE", default_value = "{}")]
        input: String,
        /// Your idempotency key for this business transaction.
        #[arg(long, value_name = "KEY")]
        key: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send the current command's next attempt now (operator role).
    #[command(
        long_about = "Retry now: send the next attempt of the command a saga is waiting on \
            (running or compensating, with retries left) instead of waiting for its timeout \
            or backoff.",
        after_help = "Example:\n  \
            skald sagas retry 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --reason 'ledger is back'\n\n\
            Exit status: 0 done, 1 refused (the message says why), 2 usage, \
            3 the API cannot be reached."
    )]
    Retry(RepairArgs),
    /// Count the current step as done (or undone) and move on (operator role).
    #[command(
        long_about = "Skip the current step: a `do` counts as done (and is undone if the saga \
            later compensates and it was ever sent), an `undo` as undone. Needs --reason. Not \
            while an answer is awaited: retry now, or wait for the timeout.",
        after_help = "Example:\n  \
            skald sagas skip 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --reason 'refunded by hand, ticket 88'\n\n\
            Exit status: 0 done, 1 refused (the message says why), 2 usage, \
            3 the API cannot be reached."
    )]
    Skip(RepairArgs),
    /// Stop a running saga and compensate what it did (operator role).
    #[command(
        long_about = "Abort a running saga before its pivot was sent: the current step is given \
            up and every step done so far is undone, newest first. Needs --reason.",
        after_help = "Example:\n  \
            skald sagas abort 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --reason 'customer cancelled'\n\n\
            Exit status: 0 done, 1 refused (the message says why), 2 usage, \
            3 the API cannot be reached."
    )]
    Abort(RepairArgs),
    /// Resume a parked saga with a fresh retry budget (operator role).
    #[command(
        long_about = "Resume a parked saga: its current command gets a fresh retry budget and \
            is sent again. Not for a command the participant refused for good: skip or resolve \
            those.",
        after_help = "Example:\n  \
            skald sagas resume 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --reason 'payment fixed'\n\n\
            Exit status: 0 done, 1 refused (the message says why), 2 usage, \
            3 the API cannot be reached."
    )]
    Resume(RepairArgs),
    /// End a parked saga as completed, compensated or failed (operator role).
    #[command(
        long_about = "Resolve a parked saga by hand: it ends as --outcome (completed, \
            compensated or failed) with --evidence saying how you know. Terminal: nothing more \
            is sent for it.",
        after_help = "Example:\n  \
            skald sagas resolve 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --outcome compensated \\\n    \
            --evidence 'refund re_123 issued by hand at the provider'\n\n\
            Exit status: 0 done, 1 refused (the message says why), 2 usage, \
            3 the API cannot be reached."
    )]
    Resolve {
        /// The saga id.
        #[arg(value_name = "SAGA_ID")]
        saga_id: String,
        /// How the saga ended.
        #[arg(long, value_enum)]
        outcome: ResolveAs,
        /// How you know (recorded with the resolution).
        #[arg(long, value_name = "TEXT")]
        evidence: String,
        /// Makes the repair idempotent: repeat with the same id to apply it at most once.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Repair every saga a filter matches, or preview it with --dry-run (operator role).
    #[command(
        long_about = "Apply ACTION to every saga the filters match (all filters must hold). \
            --dry-run lists what would change and what would be refused, and changes nothing. \
            A real run starts a job on the server that repairs at most --rate sagas a second \
            (at most --max sagas); the CLI prints its progress on stderr until it is done, then \
            the report. The job's id is its request id: run the same command with \
            --request-id <job id> to follow a job again without repeating any repair.\n\n\
            Filters (--filter KEY=VALUE, repeatable, at least one): type=, status= (comma list \
            or repeated), step=, older_than=10m, newer_than=1h, stuck=any|overdue|retrying|\
            parked|past_deadline|no_owner, key= (text the idempotency key contains).",
        after_help = "Examples:\n  \
            skald sagas bulk abort --filter type=topup --filter status=running \\\n    \
            --filter older_than=1h --reason 'provider outage' --dry-run\n  \
            skald sagas bulk resume --filter stuck=parked --filter type=payout \\\n    \
            --reason 'ledger fixed' --rate 5\n  \
            skald sagas bulk resolve --filter status=parked --outcome failed \\\n    \
            --reason 'written off, ticket 91' --max 20\n\n\
            Exit status: 0 done (or the dry run listed), 1 any saga failed or the API refused, \
            2 usage, 3 the API cannot be reached."
    )]
    Bulk(BulkArgs),
}

/// The list's filters and paging (the query of `GET /v1/sagas`).
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Saga type.
    #[arg(long = "type", value_name = "TYPE")]
    pub saga_type: Option<String>,
    /// Statuses, comma-separated: running, compensating, parked, completed, compensated, failed.
    #[arg(long, value_name = "STATUS[,STATUS]")]
    pub status: Option<String>,
    /// The step the saga is at.
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// Started longer ago than this (30s, 10m, 2h, 3d).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Started more recently than this.
    #[arg(long, value_name = "AGE")]
    pub newer_than: Option<String>,
    /// A stuck class (overdue, retrying, parked, past_deadline, no_owner) or `any`.
    #[arg(long, value_name = "CLASS")]
    pub stuck: Option<String>,
    /// Text the idempotency key contains.
    #[arg(long, value_name = "TEXT")]
    pub key: Option<String>,
    /// Sagas per page, 1-200 (default 50; 200 with --all).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Start after this cursor (the `next_cursor` of the previous page).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Follow `next_cursor` up to 100 pages.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// One saga and why.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The saga id.
    #[arg(value_name = "SAGA_ID")]
    pub saga_id: String,
    /// Why (recorded in the saga's history; required for skip and abort).
    #[arg(long, value_name = "TEXT", default_value = "", hide_default_value = true)]
    pub reason: String,
    /// Makes the repair idempotent: repeat with the same id to apply it at most once.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How a resolved saga ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolveAs {
    Completed,
    Compensated,
    Failed,
}

impl ResolveAs {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

/// A repair action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    Retry,
    Skip,
    Abort,
    Resume,
    Resolve,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::Abort => "abort",
            Self::Resume => "resume",
            Self::Resolve => "resolve",
        }
    }
}

/// A bulk repair (the body of `POST /v1/bulk`).
#[derive(Debug, clap::Args)]
pub struct BulkArgs {
    /// What to do to each saga.
    #[arg(value_enum, value_name = "ACTION")]
    pub action: Action,
    /// Which sagas: KEY=VALUE, repeatable (type, status, step, older_than, newer_than, stuck, key).
    #[arg(long = "filter", value_name = "KEY=VALUE", required = true)]
    pub filters: Vec<String>,
    /// Why (recorded in each saga's history; required for skip, abort and resolve).
    #[arg(long, value_name = "TEXT", default_value = "", hide_default_value = true)]
    pub reason: String,
    /// For resolve: how the sagas ended.
    #[arg(long, value_enum, required_if_eq("action", "resolve"))]
    pub outcome: Option<ResolveAs>,
    /// List what would change and what would be refused; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repairs per second, 1-1000 (server default 20).
    #[arg(long, value_name = "N")]
    pub rate: Option<u32>,
    /// At most this many sagas, 1-10000 (server default 1000).
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// The job id: the same id again follows that job instead of starting another.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Run a `sagas` command: results to `out`, progress to `err`.
pub async fn run(
    command: &SagasCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    match command {
        SagasCommand::List(args) => list(args, out, err).await,
        SagasCommand::Show { saga_id, api } => show(saga_id, api, out).await,
        SagasCommand::Start { saga_type, input, key, api } => {
            start(saga_type, input, key, api, out).await
        }
        SagasCommand::Retry(a) => repair(Action::Retry, a, None, out).await,
        SagasCommand::Skip(a) => repair(Action::Skip, a, None, out).await,
        SagasCommand::Abort(a) => repair(Action::Abort, a, None, out).await,
        SagasCommand::Resume(a) => repair(Action::Resume, a, None, out).await,
        SagasCommand::Resolve { saga_id, outcome, evidence, request_id, api } => {
            let args = RepairArgs {
                saga_id: saga_id.clone(),
                reason: evidence.clone(),
                request_id: request_id.clone(),
                api: api.clone(),
            };
            repair(Action::Resolve, &args, Some(*outcome), out).await
        }
        SagasCommand::Bulk(args) => bulk(args, out, err).await,
    }
}

// ---- What the CLI reads of the API's answers (the API may send more). ----

#[derive(Debug, Deserialize)]
struct Summary {
    saga_id: String,
    saga_type: String,
    status: String,
    current_step: Option<String>,
    current_kind: Option<String>,
    #[serde(default)]
    attempt: i64,
    attempts_max: Option<u32>,
    #[serde(default)]
    partition: i64,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    created_at_ms: i64,
    #[serde(default)]
    updated_at_ms: i64,
    deadline_at_ms: Option<i64>,
    last_error: Option<String>,
    park_reason: Option<String>,
    #[serde(default)]
    stuck: Vec<Stuck>,
}

#[derive(Debug, Deserialize)]
struct Stuck {
    class: String,
    #[serde(default)]
    detail: String,
}

#[derive(Debug, Deserialize)]
struct Detail {
    #[serde(flatten)]
    summary: Summary,
    owner: Option<String>,
    #[serde(default)]
    definition_version: u32,
    #[serde(default)]
    definition_hash: String,
    #[serde(default)]
    input: Value,
    cause: Option<Value>,
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Step {
    name: String,
    participant: String,
    action: String,
    compensation: Option<String>,
    #[serde(default)]
    pivot: bool,
    result: String,
    undo: String,
    #[serde(rename = "do")]
    do_progress: Progress,
    undo_progress: Progress,
}

#[derive(Debug, Deserialize)]
struct Progress {
    attempts: u32,
    attempts_max: u32,
    waiting: String,
    due_at_ms: Option<u64>,
    last_error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Event {
    seq: i64,
    recorded_at_ms: i64,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    event: Value,
}

#[derive(Debug, Deserialize)]
struct Started {
    saga_id: String,
    created: bool,
}

#[derive(Debug, Deserialize)]
struct Repaired {
    saga_id: String,
    status: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    replayed: bool,
}

#[derive(Debug, Deserialize)]
struct Preview {
    matched: u64,
    would_change: Vec<WouldChange>,
    would_fail: Vec<WouldFail>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Debug, Deserialize)]
struct WouldChange {
    saga_id: String,
    events: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct WouldFail {
    saga_id: String,
    error: String,
}

#[derive(Debug, Deserialize)]
struct Job {
    job_id: String,
    state: String,
    total: u64,
    done: u64,
    succeeded: u64,
    replayed: u64,
    failed_count: u64,
    #[serde(default)]
    failed: Vec<WouldFail>,
}

// ---- list ----

async fn list(
    args: &ListArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client = Client::new(&args.api)?;
    let limit = args.limit.or(args.all.then_some(ALL_PAGE_SIZE));
    let query = |cursor: Option<&String>| {
        let opt = |v: Option<&String>| v.cloned().unwrap_or_default();
        vec![
            ("type", opt(args.saga_type.as_ref())),
            ("status", opt(args.status.as_ref())),
            ("step", opt(args.step.as_ref())),
            ("older_than", opt(args.older_than.as_ref())),
            ("newer_than", opt(args.newer_than.as_ref())),
            ("stuck", opt(args.stuck.as_ref())),
            ("key", opt(args.key.as_ref())),
            ("limit", limit.map(|l| l.to_string()).unwrap_or_default()),
            ("cursor", opt(cursor)),
        ]
    };
    let first = client.get(&["v1", "sagas"], &query(args.cursor.as_ref())).await?.body;
    let mut items: Vec<Value> = Vec::new();
    let mut next = page_parts(&first, &mut items)?;
    let mut pages = 1;
    while args.all
        && pages < ALL_PAGES_MAX
        && let Some(cursor) = next.take()
    {
        let page = client.get(&["v1", "sagas"], &query(Some(&cursor))).await?.body;
        next = page_parts(&page, &mut items)?;
        pages += 1;
    }
    if args.api.json {
        let body = if args.all { json!({ "items": items, "next_cursor": next }) } else { first };
        print_json(&body, out)?;
    } else {
        let sagas: Vec<Summary> = decode(&Value::Array(items), "saga list")?;
        if sagas.is_empty() {
            writeln!(err, "no sagas match")?;
        } else {
            write_table(&LIST_HEADER, &sagas.iter().map(list_row).collect::<Vec<_>>(), out)?;
        }
    }
    if let Some(cursor) = next {
        let how =
            if args.all { format!("stopped after {ALL_PAGES_MAX} pages; ") } else { String::new() };
        writeln!(err, "{how}more sagas match: add --cursor {cursor} for the next page")?;
    }
    Ok(Outcome::Success)
}

/// Add a page's items to `items` and return its `next_cursor`.
fn page_parts(page: &Value, items: &mut Vec<Value>) -> Result<Option<String>, CliError> {
    let bad = || CliError::failed("the API's answer is not a saga list; use --json to see it");
    items.extend(page.get("items").and_then(Value::as_array).ok_or_else(bad)?.iter().cloned());
    Ok(page.get("next_cursor").and_then(Value::as_str).map(str::to_owned))
}

const LIST_HEADER: [&str; 8] =
    ["saga", "type", "status", "step", "attempt", "started", "key", "stuck"];

fn list_row(s: &Summary) -> Vec<String> {
    let stuck: Vec<&str> = s.stuck.iter().map(|c| c.class.as_str()).collect();
    vec![
        s.saga_id.clone(),
        s.saga_type.clone(),
        s.status.clone(),
        step_label(s),
        attempt_label(s),
        time_ms(s.created_at_ms),
        s.idempotency_key.clone(),
        if stuck.is_empty() { "-".to_owned() } else { stuck.join(",") },
    ]
}

fn step_label(s: &Summary) -> String {
    match (&s.current_step, s.current_kind.as_deref()) {
        (None, _) => "-".to_owned(),
        (Some(step), Some("undo")) => format!("{step} (undo)"),
        (Some(step), _) => step.clone(),
    }
}

fn attempt_label(s: &Summary) -> String {
    match (&s.current_step, s.attempts_max) {
        (None, _) => "-".to_owned(),
        (Some(_), Some(max)) => format!("{}/{max}", s.attempt),
        (Some(_), None) => s.attempt.to_string(),
    }
}

// ---- show ----

async fn show(saga_id: &str, api: &ApiArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let client = Client::new(api)?;
    let body = client.get(&["v1", "sagas", saga_id], &[]).await?.body;
    if api.json {
        print_json(&body, out)?;
        return Ok(Outcome::Success);
    }
    let d: Detail = decode(&body, "saga")?;
    write_detail(&d, out)?;
    Ok(Outcome::Success)
}

fn write_detail(d: &Detail, out: &mut dyn Write) -> std::io::Result<()> {
    let s = &d.summary;
    let hash = d.definition_hash.get(..12).unwrap_or(&d.definition_hash);
    let mut fields: Vec<(&str, String)> = vec![
        ("saga", s.saga_id.clone()),
        ("type", format!("{} v{} (hash {hash})", s.saga_type, d.definition_version)),
        ("status", s.status.clone()),
    ];
    if s.current_step.is_some() {
        let of = s.attempts_max.map_or_else(String::new, |m| format!(" of {m}"));
        let kind = s.current_kind.as_deref().unwrap_or("do");
        let step = s.current_step.as_deref().unwrap_or("-");
        fields.push(("step", format!("{step} ({kind}), attempt {}{of}", s.attempt)));
    }
    fields.push(("key", s.idempotency_key.clone()));
    fields.push(("started", time_ms(s.created_at_ms)));
    fields.push(("updated", time_ms(s.updated_at_ms)));
    fields.push(("deadline", s.deadline_at_ms.map_or_else(|| "none".to_owned(), time_ms)));
    let owner = d.owner.as_deref().unwrap_or("no live owner");
    fields.push(("owner", format!("{owner} (partition {})", s.partition)));
    fields.push(("input", truncated(&d.input.to_string())));
    if let Some(cause) = &d.cause {
        fields.push(("cause", truncated(&compact(cause))));
    }
    if let Some(e) = &s.last_error {
        fields.push(("error", one_line(e)));
    }
    if let Some(r) = &s.park_reason {
        fields.push(("parked", one_line(r)));
    }
    if s.stuck.is_empty() {
        fields.push(("stuck", "no".to_owned()));
    }
    for (name, value) in &fields {
        writeln!(out, "{name:<9}{value}")?;
    }
    for c in &s.stuck {
        writeln!(out, "stuck    {}: {}", c.class, one_line(&c.detail))?;
    }
    writeln!(out)?;
    writeln!(out, "steps")?;
    let rows: Vec<Vec<String>> = d
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let pivot = if st.pivot { " (pivot)" } else { "" };
            let waiting = waiting_label(&st.do_progress, &st.undo_progress);
            vec![
                (i + 1).to_string(),
                format!("{}{pivot}", st.name),
                st.participant.clone(),
                st.action.clone(),
                st.compensation.clone().unwrap_or_else(|| "-".to_owned()),
                st.result.clone(),
                st.undo.clone(),
                format!("{}/{}", st.do_progress.attempts, st.do_progress.attempts_max),
                format!("{}/{}", st.undo_progress.attempts, st.undo_progress.attempts_max),
                waiting,
            ]
        })
        .collect();
    write_table(
        &[
            "#",
            "step",
            "participant",
            "action",
            "compensation",
            "result",
            "undo",
            "do",
            "undo#",
            "waiting",
        ],
        &rows,
        out,
    )?;
    writeln!(out)?;
    writeln!(out, "events")?;
    let rows: Vec<Vec<String>> = d
        .events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                time_ms(e.recorded_at_ms),
                e.event_type.clone(),
                event_detail(&e.event),
            ]
        })
        .collect();
    write_table(&["seq", "recorded", "event", "detail"], &rows, out)
}

/// What a step waits for, if anything: `reply to do until <time>`.
fn waiting_label(do_progress: &Progress, undo_progress: &Progress) -> String {
    let one = |kind: &str, p: &Progress| {
        let what = match p.waiting.as_str() {
            "idle" => return None,
            "reply" => "reply",
            "backoff" => "retry",
            other => other,
        };
        let until = p
            .due_at_ms
            .and_then(|ms| i64::try_from(ms).ok())
            .map_or_else(String::new, |ms| format!(" until {}", time_ms(ms)));
        let error = p
            .last_error
            .as_deref()
            .map_or_else(String::new, |e| format!(" (last: {})", one_line(e)));
        Some(format!("{what} to {kind}{until}{error}"))
    };
    let parts: Vec<String> =
        [one("do", do_progress), one("undo", undo_progress)].into_iter().flatten().collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join("; ") }
}

/// An event's fields other than the ones every event has, as `k=v`; times
/// (`*_at`, in Unix milliseconds) as RFC 3339.
fn event_detail(event: &Value) -> String {
    const SKIP: [&str; 7] =
        ["v", "type", "at", "saga_id", "saga_type", "definition_hash", "payload"];
    let Some(fields) = event.as_object() else { return truncated(&compact(event)) };
    let parts: Vec<String> = fields
        .iter()
        .filter(|(k, v)| !SKIP.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| match v.as_i64() {
            Some(ms) if k.ends_with("_at") => format!("{k}={}", time_ms(ms)),
            _ => format!("{k}={}", compact(v)),
        })
        .collect();
    truncated(&parts.join(" "))
}

/// A JSON value in one line; strings without quotes.
fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => one_line(s),
        other => other.to_string(),
    }
}

fn truncated(text: &str) -> String {
    if text.chars().count() <= DETAIL_CHARS_MAX {
        return text.to_owned();
    }
    let mut t: String = text.chars().take(DETAIL_CHARS_MAX).collect();
    t.push_str("… (--json for all)");
    t
}

// ---- start ----

async fn start(
    saga_type: &str,
    input: &str,
    key: &str,
    api: &ApiArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let input = read_input(input)?;
    let client = Client::new(api)?;
    let body = json!({ "type": saga_type, "input": input, "idempotency_key": key });
    let answer = client.post(&["v1", "sagas"], Body::Json(&body)).await.map_err(|e| {
        e.with_timeout_hint("repeat the same command (same --key): it starts the saga at most once")
    })?;
    if api.json {
        print_json(&answer.body, out)?;
        return Ok(Outcome::Success);
    }
    let started: Started = decode(&answer.body, "start answer")?;
    if started.created {
        writeln!(out, "started {saga_type} saga {} (key {key})", started.saga_id)?;
    } else {
        writeln!(
            out,
            "{saga_type} saga {} was already started with key {key}; nothing new started",
            started.saga_id
        )?;
    }
    Ok(Outcome::Success)
}

/// `--input`: JSON text, `@file`, or `@-` for stdin.
fn read_input(input: &str) -> Result<Value, CliError> {
    let (text, from) = match input.strip_prefix('@') {
        None => (input.to_owned(), "--input".to_owned()),
        Some(path) => {
            let mut text = String::new();
            let read = if path == "-" {
                std::io::stdin().take(INPUT_BYTES_MAX + 1).read_to_string(&mut text)
            } else {
                std::fs::File::open(path)
                    .and_then(|f| f.take(INPUT_BYTES_MAX + 1).read_to_string(&mut text))
            };
            read.map_err(|e| {
                CliError::usage(format!("cannot read --input {input}: {e}; check the path"))
            })?;
            if text.len() as u64 > INPUT_BYTES_MAX {
                return Err(CliError::usage(format!(
                    "--input {input} is larger than {INPUT_BYTES_MAX} bytes"
                )));
            }
            (text, format!("--input {input}"))
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{from} is not JSON ({e}); give JSON like '{{\"amount\": 5}}', @file or @-"
        ))
    })
}

// ---- repairs ----

async fn repair(
    action: Action,
    args: &RepairArgs,
    outcome: Option<ResolveAs>,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client = Client::new(&args.api)?;
    let request_id = args.request_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut body = json!({ "reason": args.reason, "request_id": request_id });
    if let Some(o) = outcome {
        body["outcome"] = json!(o.as_str());
    }
    let answer = client
        .post(&["v1", "sagas", &args.saga_id, action.as_str()], Body::Json(&body))
        .await
        .map_err(|e| {
            e.with_timeout_hint(&format!(
                "the {} may have been applied: repeat with --request-id {request_id} \
                 to apply it at most once",
                action.as_str()
            ))
        })?;
    if args.api.json {
        print_json(&answer.body, out)?;
        return Ok(Outcome::Success);
    }
    let r: Repaired = decode(&answer.body, "repair answer")?;
    let recorded = if r.events.is_empty() { "nothing".to_owned() } else { r.events.join(", ") };
    let replayed = if r.replayed {
        format!(" (request {request_id} was already done; this is its first answer)")
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} {}: now {}; recorded {recorded}{replayed}",
        action.as_str(),
        r.saga_id,
        r.status
    )?;
    Ok(Outcome::Success)
}

// ---- bulk ----

/// The `filter` object of a bulk request from `--filter KEY=VALUE` flags.
fn bulk_filter(filters: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut map = Map::new();
    for f in filters {
        let Some((key, value)) = f.split_once('=') else {
            return Err(CliError::usage(format!(
                "--filter `{f}` is not KEY=VALUE; use e.g. --filter status=parked"
            )));
        };
        let key = key.trim().replace('-', "_");
        if !FILTER_KEYS.contains(&key.as_str()) {
            return Err(CliError::usage(format!(
                "--filter `{f}`: unknown key `{key}`; use one of {}",
                FILTER_KEYS.join(", ")
            )));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(CliError::usage(format!("--filter `{f}` has no value")));
        }
        match map.get_mut(&key) {
            Some(Value::String(statuses)) if key == "status" => {
                statuses.push(',');
                statuses.push_str(value);
            }
            Some(_) => {
                return Err(CliError::usage(format!(
                    "--filter {key}= is given twice; give it once (only status= may repeat)"
                )));
            }
            None => {
                map.insert(key, Value::String(value.to_owned()));
            }
        }
    }
    Ok(map)
}

async fn bulk(
    args: &BulkArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    if args.outcome.is_some() && args.action != Action::Resolve {
        return Err(CliError::usage("--outcome is only for `bulk resolve`"));
    }
    let filter = bulk_filter(&args.filters)?;
    let client = Client::new(&args.api)?;
    let job_id = args.request_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut body = json!({
        "action": args.action.as_str(),
        "filter": filter,
        "reason": args.reason,
        "dry_run": args.dry_run,
        "request_id": job_id,
    });
    if let Some(o) = args.outcome {
        body["outcome"] = json!(o.as_str());
    }
    if let Some(r) = args.rate {
        body["rate_per_second"] = json!(r);
    }
    if let Some(m) = args.max {
        body["max_sagas"] = json!(m);
    }
    let answer = client.post(&["v1", "bulk"], Body::Json(&body)).await.map_err(|e| {
        e.with_timeout_hint(&format!(
            "the job may have started: repeat with --request-id {job_id} to follow it \
             without starting another"
        ))
    })?;
    if args.dry_run {
        return preview(args, &answer.body, out);
    }
    let action = args.action.as_str();
    let mut job: Job = decode(&answer.body, "bulk job")?;
    writeln!(
        err,
        "bulk job {}: {action} on {} sagas; to follow it again, repeat with --request-id {}",
        job.job_id, job.total, job.job_id
    )?;
    let mut last = answer.body;
    let (mut seen, mut progressed_at) = (None, Instant::now());
    while job.state != "done" {
        if seen != Some(job.done) {
            writeln!(err, "{}", progress_line(&job))?;
            seen = Some(job.done);
            progressed_at = Instant::now();
        } else if progressed_at.elapsed() > STALL_MAX {
            return Err(CliError::failed(format!(
                "bulk job {} made no progress for {}s ({}/{} done); follow it again by \
                 repeating the command with --request-id {}",
                job.job_id,
                STALL_MAX.as_secs(),
                job.done,
                job.total,
                job.job_id
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        last = client
            .get(&["v1", "bulk", &job.job_id], &[])
            .await
            .map_err(|e| {
                e.with_timeout_hint(&format!("follow the job again with --request-id {job_id}"))
            })?
            .body;
        job = decode(&last, "bulk job")?;
    }
    writeln!(err, "{}", progress_line(&job))?;
    if args.api.json {
        print_json(&last, out)?;
    } else {
        writeln!(
            out,
            "bulk {action} {}: {} sagas, {} succeeded, {} already done, {} failed",
            job.job_id, job.total, job.succeeded, job.replayed, job.failed_count
        )?;
        if !job.failed.is_empty() {
            writeln!(out, "failed:")?;
            let rows: Vec<Vec<String>> =
                job.failed.iter().map(|f| vec![f.saga_id.clone(), one_line(&f.error)]).collect();
            write_table(&["saga", "error"], &rows, out)?;
        }
        let unlisted = job.failed_count.saturating_sub(job.failed.len() as u64);
        if unlisted > 0 {
            writeln!(out, "({unlisted} more failures not listed)")?;
        }
    }
    Ok(if job.failed_count == 0 { Outcome::Success } else { Outcome::Failure })
}

fn progress_line(job: &Job) -> String {
    format!(
        "bulk job {}: {}/{} done ({} succeeded, {} already done, {} failed){}",
        job.job_id,
        job.done,
        job.total,
        job.succeeded,
        job.replayed,
        job.failed_count,
        if job.state == "done" { ", finished" } else { "" }
    )
}

fn preview(args: &BulkArgs, body: &Value, out: &mut dyn Write) -> Result<Outcome, CliError> {
    if args.api.json {
        print_json(body, out)?;
        return Ok(Outcome::Success);
    }
    let p: Preview = decode(body, "bulk preview")?;
    writeln!(
        out,
        "dry run: {} on {} matching sagas: {} would change, {} would be refused; nothing was changed",
        args.action.as_str(),
        p.matched,
        p.would_change.len(),
        p.would_fail.len()
    )?;
    if !p.would_change.is_empty() {
        writeln!(out, "would change:")?;
        let rows: Vec<Vec<String>> =
            p.would_change.iter().map(|c| vec![c.saga_id.clone(), c.events.join(", ")]).collect();
        write_table(&["saga", "events it would record"], &rows, out)?;
    }
    if !p.would_fail.is_empty() {
        writeln!(out, "would be refused:")?;
        let rows: Vec<Vec<String>> =
            p.would_fail.iter().map(|f| vec![f.saga_id.clone(), one_line(&f.error)]).collect();
        write_table(&["saga", "why"], &rows, out)?;
    }
    if p.truncated {
        writeln!(
            out,
            "(more matched than were examined or listed: narrow the filter or raise --max)"
        )?;
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_filters_are_key_value_pairs_with_statuses_joined() {
        let f = bulk_filter(&[
            "type=topup".into(),
            "status=running".into(),
            "status=parked".into(),
            "older-than=10m".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(f),
            json!({"type": "topup", "status": "running,parked", "older_than": "10m"})
        );
        for bad in ["type", "colour=red", "type=", "type=a"] {
            let filters = vec!["type=x".to_owned(), bad.to_owned()];
            let e = bulk_filter(&filters).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }

    #[test]
    fn input_is_json_text_or_a_file() {
        assert_eq!(read_input(r#"{"a": 1}"#).unwrap(), json!({"a": 1}));
        let e = read_input("{a: 1}").unwrap_err();
        assert!(e.to_string().starts_with("--input is not JSON"), "{e}");
        let e = read_input("@/nonexistent/skald/input.json").unwrap_err();
        assert!(e.to_string().contains("cannot read --input @/nonexistent"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn event_details_leave_out_what_every_event_has() {
        let e = json!({"v": 1, "type": "command_sent", "at": 5, "step": "one", "kind": "do",
            "attempt": 1, "payload": {"big": "x"}, "timeout_at": 1000, "retry_at": null});
        assert_eq!(event_detail(&e), "attempt=1 kind=do step=one timeout_at=1970-01-01T00:00:01Z");
        let long = json!({"message": "x".repeat(500)});
        assert!(event_detail(&long).ends_with("… (--json for all)"));
    }
}
