//! `skald sagas ...`: list, show, start and repair sagas through the operator
//! API of a running `skald serve`, one saga at a time or in bulk.
//!
//! Nothing here decides anything: the API checks every request and the CLI
//! prints its answer, as a table for people or as the API's JSON (`--json`)
//! for scripts. Repairs and bulk jobs carry a request id the CLI makes before
//! sending, so a request whose answer was lost can be repeated safely.

mod bulk;
mod export;
mod list;
mod repair;
mod show;
mod signal;
mod start;

use crate::client::{
    ApiArgs, Body, CliError, Client, Outcome, STEP_HEADER, decode, one_line, print_json,
    step_cells, time_ms, write_table,
};
use bulk::bulk;
use export::export;
pub(crate) use export::tag_pairs;
use list::list;
use orchestrator::api::model::{
    BulkJob, BulkPreview, ProgressView, RepairOutcome, SagaDetail, SagaSummary, StartAnswer,
};
use repair::repair;
use show::show;
use signal::signal;
use start::start;

use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Pages `sagas list --all` follows at most.
pub const ALL_PAGES_MAX: usize = 100;
/// The page size `--all` asks for when `--limit` is not given (the API's maximum).
const ALL_PAGE_SIZE: u64 = orchestrator::store::PAGE_SIZE_MAX;
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
            skald sagas list --type topup --tag customer=42\n  \
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
            echo '{}' | skald sagas start bench --key run-7 --input @-\n  \
            skald sagas start topup --key order-1043 --input @order-1043.json --wait 30s\n\n\
            With --wait, the command answers when the saga has ended (or parked, or the wait \
            ran out) and prints its outcome: the definition's output when it completed, why \
            otherwise.\n\n\
            Exit status: 0 started (or already started with this key; with --wait: completed), \
            1 refused (with --wait: compensated, failed, parked or still running), 2 usage, \
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
        /// Wait for the saga's end, at most this long (default 60s, the most).
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "60s")]
        wait: Option<String>,
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
    /// Move a running saga to another version of its definition (operator role).
    #[command(
        long_about = "Move a running, compensating or parked saga to version --to-version of \
            its definition (registered with `skald definitions apply`). It moves only when its \
            recorded history is a valid history of that version up to where it is: the same \
            steps so far, with the same participant, action and compensation for every step \
            reached, its input valid under the new schema. The move is recorded in its history \
            (`definition_changed`, with who and why); from then on it runs the new version's \
            remaining steps. `skald definitions check FILE` tells which sagas could move. \
            --dry-run says whether it could, and changes nothing.",
        after_help = "Examples:\n  \
            skald sagas migrate 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --to-version 4 \\\n    \
            --reason 'fraud review step added' --dry-run\n  \
            skald sagas bulk migrate --filter type=topup --filter status=running \\\n    \
            --to-version 4 --reason 'fraud review step added'\n\n\
            Exit status: 0 moved (or could, with --dry-run), 1 refused (the message says why), \
            2 usage, 3 the API cannot be reached."
    )]
    Migrate {
        /// The saga id.
        #[arg(value_name = "SAGA_ID")]
        saga_id: String,
        /// The version of its definition to move it to.
        #[arg(long, value_name = "N")]
        to_version: u32,
        /// Why (recorded in the saga's history).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Say whether it could move; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Makes the move idempotent: repeat with the same id to apply it at most once.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send a saga an event one of its steps waits for (signaller role).
    #[command(
        long_about = "Send saga SAGA_ID the event EVENT (a waiting step's `wait_for.event`) with \
            its body (--payload: JSON, @file or @-) and your id for it (--event-id: the same id \
            again changes nothing, so a send whose answer was lost can be repeated). A step \
            waiting for it takes it now; one reached later takes it then (it is kept in the \
            saga's history). --key gives the correlation key when the step waits for one. \
            With `-` for SAGA_ID the event goes to the one running saga whose step waits for \
            EVENT with --key now (found by the key: refused when none or several wait).",
        after_help = "Examples:\n  \
            skald sagas signal 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 psp_result \\\n    \
            --event-id wh_81 --key ch_123 --payload '{\"status\":\"succeeded\"}'\n  \
            skald sagas signal - psp_result --key ch_123 --event-id wh_81 --payload @hook.json\n\n\
            Exit status: 0 taken or kept (or a duplicate), 1 refused (the saga ended, no step \
            waits for that event, or the body does not fit), 2 usage, 3 the API cannot be reached."
    )]
    Signal(SignalArgs),
    /// One saga across services: each step here beside what its participant recorded.
    #[command(
        long_about = "Audit one saga across services: ask each participant of the saga (over \
            the bus, through the server) what it recorded for the saga's commands, and print \
            each step as the orchestrator recorded it (do / undo here) beside the participant's \
            inbox entries (do / undo there) and the effect it reports (a ledger transfer, a \
            charge and what the provider says of it), with every disagreement: missing_record, \
            outcome_differs, no_effect, undone_there, not_undone, unexpected_effect, \
            unexpected_record, unexplained_effect. Changes nothing anywhere.",
        after_help = "Examples:\n  \
            skald sagas audit 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11\n  \
            skald sagas audit 0190a4c2-7d1e-7c3a-9f1e-2b4c6d8e0f11 --json | jq .disagreements\n\n\
            Exit status: 0 every participant agrees, 1 a disagreement, a participant that \
            could not be asked, or an unknown saga, 2 usage, 3 the API cannot be reached."
    )]
    Audit {
        /// The saga id.
        #[arg(value_name = "SAGA_ID")]
        saga_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Write sagas whole (row, tags, every event) to compressed JSON lines.
    #[command(
        long_about = "Export the sagas the filters match, whole, to compressed JSON lines under \
            --out, in a folder per day they ended (or last changed), a new file per page of 200 \
            (`YYYY-MM-DD/<id>.jsonl.gz`), one saga per line (`saga_id`, `saga_type`, \
            `definition_hash`, `status`, `idempotency_key`, `partition`, `created_at_ms`, \
            `ended_at_ms`, `tags`, `events`): the format and layout `skald serve --retention` \
            archives in. Each file is written whole (temporary name, synced, renamed); nothing \
            is removed from the server.",
        after_help = "Examples:\n  \
            skald sagas export --out archive --status completed,compensated,failed --older-than 30d\n  \
            skald sagas export --out audit --type topup --tag wallet=alice\n  \
            zcat archive/2026-11-02/*.jsonl.gz | jq -r .saga_id\n\n\
            Exit status: 0 exported, 1 the API refused or a file cannot be written, 2 usage, \
            3 the API cannot be reached."
    )]
    Export(ExportArgs),
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
            parked|past_deadline|no_owner|waiting, key= (text the idempotency key contains), \
            tag.<name>= (a business tag, e.g. tag.customer=42).",
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
    /// StartAnswer longer ago than this (30s, 10m, 2h, 3d).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// StartAnswer more recently than this.
    #[arg(long, value_name = "AGE")]
    pub newer_than: Option<String>,
    /// A stuck class (overdue, retrying, parked, past_deadline, no_owner, waiting) or `any`.
    #[arg(long, value_name = "CLASS")]
    pub stuck: Option<String>,
    /// Text the idempotency key contains.
    #[arg(long, value_name = "TEXT")]
    pub key: Option<String>,
    /// A business tag the saga has, NAME=VALUE (repeatable; all must match).
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    pub tags: Vec<String>,
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

/// Which sagas to export, and where.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The directory to write `YYYY-MM-DD/<id>.jsonl.gz` files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Saga type.
    #[arg(long = "type", value_name = "TYPE")]
    pub saga_type: Option<String>,
    /// Statuses, comma-separated (e.g. completed,compensated,failed).
    #[arg(long, value_name = "STATUS[,STATUS]")]
    pub status: Option<String>,
    /// Started longer ago than this (30s, 10m, 2h, 3d).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Started more recently than this.
    #[arg(long, value_name = "AGE")]
    pub newer_than: Option<String>,
    /// A business tag the saga has, NAME=VALUE (repeatable; all must match).
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    pub tags: Vec<String>,
    /// At most this many sagas.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max: u64,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// An event for a saga.
#[derive(Debug, clap::Args)]
pub struct SignalArgs {
    /// The saga id, or `-`: the saga waiting for EVENT with --key.
    #[arg(value_name = "SAGA_ID")]
    pub saga_id: String,
    /// The event's name (a waiting step's `wait_for.event`).
    #[arg(value_name = "EVENT")]
    pub event: String,
    /// Your id for this event: the same id again is taken once.
    #[arg(long, value_name = "ID")]
    pub event_id: String,
    /// The correlation key, when the waiting step asks for one.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// The event's body: JSON text, `@file`, or `@-` for stdin.
    #[arg(long, value_name = "JSON|@FILE", default_value = "{}")]
    pub payload: String,
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
    Migrate,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::Abort => "abort",
            Self::Resume => "resume",
            Self::Resolve => "resolve",
            Self::Migrate => "migrate",
        }
    }
}

/// A bulk repair (the body of `POST /v1/bulk`).
#[derive(Debug, clap::Args)]
pub struct BulkArgs {
    /// What to do to each saga.
    #[arg(value_enum, value_name = "ACTION")]
    pub action: Action,
    /// Which sagas: KEY=VALUE, repeatable (type, status, step, older_than, newer_than, stuck,
    /// key, tag.<name>).
    #[arg(long = "filter", value_name = "KEY=VALUE", required = true)]
    pub filters: Vec<String>,
    /// Why (recorded in each saga's history; required for skip, abort and resolve).
    #[arg(long, value_name = "TEXT", default_value = "", hide_default_value = true)]
    pub reason: String,
    /// For resolve: how the sagas ended.
    #[arg(long, value_enum, required_if_eq("action", "resolve"))]
    pub outcome: Option<ResolveAs>,
    /// For migrate: the version of their definition to move the sagas to.
    #[arg(long, value_name = "N", required_if_eq("action", "migrate"))]
    pub to_version: Option<u32>,
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
        SagasCommand::Start { saga_type, input, key, wait, api } => {
            start(saga_type, input, key, wait.as_deref(), api, out).await
        }
        SagasCommand::Retry(a) => repair(Action::Retry, a, json!({}), out).await,
        SagasCommand::Skip(a) => repair(Action::Skip, a, json!({}), out).await,
        SagasCommand::Abort(a) => repair(Action::Abort, a, json!({}), out).await,
        SagasCommand::Resume(a) => repair(Action::Resume, a, json!({}), out).await,
        SagasCommand::Resolve { saga_id, outcome, evidence, request_id, api } => {
            let args = RepairArgs {
                saga_id: saga_id.clone(),
                reason: evidence.clone(),
                request_id: request_id.clone(),
                api: api.clone(),
            };
            repair(Action::Resolve, &args, json!({ "outcome": outcome.as_str() }), out).await
        }
        SagasCommand::Migrate { saga_id, to_version, reason, dry_run, request_id, api } => {
            let args = RepairArgs {
                saga_id: saga_id.clone(),
                reason: reason.clone(),
                request_id: request_id.clone(),
                api: api.clone(),
            };
            let extra = json!({ "to_version": to_version, "dry_run": dry_run });
            repair(Action::Migrate, &args, extra, out).await
        }
        SagasCommand::Bulk(args) => bulk(args, out, err).await,
        SagasCommand::Export(args) => export(args, out).await,
        SagasCommand::Signal(args) => signal(args, out).await,
        SagasCommand::Audit { saga_id, api } => {
            crate::commands::audit::saga(saga_id, api, out).await
        }
    }
}
