//! The `ledger` command line: serve the participant, open accounts, move
//! money, show balances, verify the ledger.
//!
//! Exit codes: 0 done; 1 the ledger refused (the reason is printed) or
//! `verify` found it unsound; 2 a usage error; 3 it could not run (database
//! or NATS unreachable, ...).

use crate::handlers::now_ms;
use crate::model::{AccountFlags, NewAccount, NewTransfer};
use crate::ops::OpError;
use crate::serve::{self, ServeConfig};
use crate::store::Store;
use crate::verify::{self, Report, VerifyOptions};
use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use skald_participant::service;
use std::process::ExitCode;

/// Most accounts `ledger balance` shows at once.
const BALANCE_ACCOUNTS_MAX: usize = 100;

const EXIT_REFUSED: u8 = 1;
const EXIT_CANNOT_RUN: u8 = 3;

/// The Skald ledger: an event-sourced double-entry ledger with two-phase
/// transfers, and the saga participant `ledger` (actions `hold`, `post`,
/// compensation `void`).
///
/// Amounts are integer minor units (cents). Exit codes: 0 done, 1 refused or
/// unsound, 2 usage error, 3 could not run (database or NATS unreachable).
#[derive(Debug, Parser)]
#[command(name = "ledger", version)]
pub struct Cli {
    /// The ledger's database: `sqlite://FILE?mode=rwc` or
    /// `postgres://USER:PASSWORD@HOST/DB`.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://ledger.db?mode=rwc"
    )]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the saga participant `ledger` until SIGTERM or Ctrl-C.
    ///
    /// Handles `hold` (a pending transfer), `post` and the compensation
    /// `void` of the `topup` and `payout` sagas. SIGTERM or Ctrl-C lets the
    /// commands in flight finish, then exits 0.
    Serve(ServeArgs),
    /// Open accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Move money now: debit one account, credit another (to fund a wallet,
    /// for example). With --pending it is a hold, to `post` or `void` later.
    ///
    /// The id is the idempotency key: the same id with the same fields again
    /// answers `exists` and moves nothing; with other fields it is refused.
    Transfer(TransferArgs),
    /// Post a pending transfer: make the held amount final.
    Post {
        /// The pending transfer's id.
        transfer_id: String,
    },
    /// Void a pending transfer: release the held amount.
    Void {
        /// The pending transfer's id.
        transfer_id: String,
    },
    /// Show the balances of accounts.
    ///
    /// balance = credits posted - debits posted; available = balance - debits
    /// pending (what a wallet with debits_must_not_exceed_credits may spend).
    Balance {
        /// Account ids (at most 100).
        #[arg(required = true, num_args = 1..=BALANCE_ACCOUNTS_MAX)]
        accounts: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replay every event and check the ledger: projections match the log,
    /// debits equal credits per currency, no flag is broken, no hold is old.
    ///
    /// Exits 0 when sound and no pending hold is older than
    /// --pending-older-than; 1 with a report otherwise.
    Verify {
        /// List pending holds at least this old (and fail): `0s` for any,
        /// `10m`, `1h`, ...
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration_ms)]
        pending_older_than: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// NATS server (with JetStream), credentials and TLS.
    #[command(flatten)]
    bus: skald_participant::BusOptions,

    /// Subject and stream prefix; must match the orchestrator's.
    #[arg(long, env = "SKALD_PREFIX", default_value = "skald")]
    prefix: String,

    /// Most commands handled at once (1..=256).
    #[arg(long, env = "LEDGER_CONCURRENCY", value_name = "N", default_value_t = skald_participant::IN_FLIGHT_MAX_DEFAULT)]
    concurrency: usize,

    /// On SQLite, most commands that share one commit (group commit: one
    /// fsync for many postings, each reply still after its commit); 1
    /// commits each command on its own (1..=256). PostgreSQL ignores it.
    #[arg(long, env = "LEDGER_COMMIT_GROUP_MAX", value_name = "N", default_value_t = 1)]
    commit_group_max: usize,
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Open an account with zero balances. Opening it again with the same
    /// currency and flags answers `exists`; with others it is refused.
    Create {
        /// Letters, digits, `_`, `-`, `.`, `:`; at most 64.
        id: String,
        /// Three upper-case letters, e.g. EUR.
        #[arg(long)]
        currency: String,
        /// Balance rules (at most one): a wallet that cannot be overdrawn has
        /// debits_must_not_exceed_credits.
        #[arg(long, value_enum, value_delimiter = ',')]
        flags: Vec<Flag>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Flag {
    /// Debits (posted and pending) may never exceed posted credits.
    DebitsMustNotExceedCredits,
    /// Credits (posted and pending) may never exceed posted debits.
    CreditsMustNotExceedDebits,
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// The transfer's id, its idempotency key.
    id: String,
    /// The account debited (the money leaves it).
    #[arg(long, value_name = "ACCOUNT")]
    debit: String,
    /// The account credited (the money goes to it).
    #[arg(long, value_name = "ACCOUNT")]
    credit: String,
    /// Minor units (cents), 1..=10^15.
    #[arg(long)]
    amount: i64,
    /// Three upper-case letters; both accounts must hold it.
    #[arg(long)]
    currency: String,
    /// Hold the amount as a pending transfer instead of posting it.
    #[arg(long)]
    pending: bool,
}

fn duration_ms(text: &str) -> Result<u64, String> {
    sagas::Duration::parse(text).map(sagas::Duration::as_millis).map_err(|e| e.to_string())
}

/// Parse the arguments and run: the whole `ledger` binary.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    service::init_logging(match cli.command {
        Command::Serve(_) => service::SERVE_LOG_FILTER,
        _ => "warn,sqlx=warn",
    });
    service::run_main(ExitCode::from(EXIT_CANNOT_RUN), run(cli))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Serve(args) = cli.command {
        let config = ServeConfig {
            bus: args.bus,
            database_url: cli.database_url,
            namespace: service::namespace(&args.prefix)?,
            concurrency: args.concurrency,
            commit_group_max: args.commit_group_max,
        };
        serve::run(config, service::shutdown_on_signal("commands")).await?;
        return Ok(ExitCode::SUCCESS);
    }

    let store = Store::connect(&cli.database_url).await?;
    let now = now_ms();
    match cli.command {
        Command::Serve(_) => Ok(ExitCode::SUCCESS),
        Command::Accounts(AccountsCommand::Create { id, currency, flags }) => {
            let new = NewAccount {
                flags: AccountFlags {
                    debits_must_not_exceed_credits: flags
                        .contains(&Flag::DebitsMustNotExceedCredits),
                    credits_must_not_exceed_debits: flags
                        .contains(&Flag::CreditsMustNotExceedDebits),
                },
                id,
                currency,
            };
            done(store.create_account(&new, now).await, |r| {
                format!("account {}: {}", new.id, r.as_str())
            })
        }
        Command::Transfer(t) => {
            let new = NewTransfer {
                id: t.id,
                debit_account_id: t.debit,
                credit_account_id: t.credit,
                amount: t.amount,
                currency: t.currency,
                pending: t.pending,
            };
            done(store.create_transfer(&new, now).await, |r| {
                let what = if new.pending { "pending transfer" } else { "transfer" };
                format!(
                    "{what} {}: {} ({} {} from {} to {})",
                    new.id,
                    r.as_str(),
                    new.amount,
                    new.currency,
                    new.debit_account_id,
                    new.credit_account_id
                )
            })
        }
        Command::Post { transfer_id } => done(store.post_transfer(&transfer_id, now).await, |r| {
            format!("transfer {transfer_id}: {}", r.as_str())
        }),
        Command::Void { transfer_id } => {
            done(store.void_transfer(&transfer_id, None, now).await, |r| {
                format!("transfer {transfer_id}: {}", r.as_str())
            })
        }
        Command::Balance { accounts, json } => balance(&store, &accounts, json).await,
        Command::Verify { pending_older_than, json } => {
            let options = VerifyOptions { pending_older_than_ms: pending_older_than, now_ms: now };
            let report = verify::verify(&store, options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render_report(&report));
            }
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REFUSED) })
        }
    }
}

/// Print the result of a write, or the refusal; database trouble is an error.
fn done<T>(result: Result<T, OpError>, say: impl FnOnce(T) -> String) -> Result<ExitCode> {
    match result {
        Ok(r) => {
            println!("{}", say(r));
            Ok(ExitCode::SUCCESS)
        }
        Err(OpError::Refused(refusal)) => {
            eprintln!("refused ({}): {refusal}", refusal.code());
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Err(e) => Err(e.into()),
    }
}

async fn balance(store: &Store, ids: &[String], json: bool) -> Result<ExitCode> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match store.account(id).await {
            Ok(Some(account)) => found.push(account),
            Ok(None) => missing.push(id.clone()),
            Err(OpError::Refused(refusal)) => {
                eprintln!("refused ({}): {refusal}", refusal.code());
                return Ok(ExitCode::from(EXIT_REFUSED));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        let rows: Vec<serde_json::Value> = found
            .iter()
            .map(|a| {
                let b = a.balances;
                serde_json::json!({
                    "id": a.id,
                    "currency": a.currency,
                    "flags": a.flags,
                    "debits_posted": b.debits_posted,
                    "credits_posted": b.credits_posted,
                    "debits_pending": b.debits_pending,
                    "credits_pending": b.credits_pending,
                    "balance": b.balance(),
                    "available": b.available(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "accounts": rows }))?);
    } else if !found.is_empty() {
        let mut table = vec![
            [
                "ACCOUNT",
                "CURRENCY",
                "DEBITS_POSTED",
                "CREDITS_POSTED",
                "DEBITS_PENDING",
                "CREDITS_PENDING",
                "BALANCE",
                "AVAILABLE",
                "FLAGS",
            ]
            .map(str::to_owned),
        ];
        for a in &found {
            let b = a.balances;
            let flags = a.flags.names().join(",");
            table.push([
                a.id.clone(),
                a.currency.clone(),
                b.debits_posted.to_string(),
                b.credits_posted.to_string(),
                b.debits_pending.to_string(),
                b.credits_pending.to_string(),
                b.balance().to_string(),
                b.available().to_string(),
                if flags.is_empty() { "-".to_owned() } else { flags },
            ]);
        }
        print!("{}", render_table(&table));
    }
    for id in &missing {
        eprintln!("refused (account_not_found): account `{id}` does not exist");
    }
    Ok(if missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REFUSED) })
}

/// Columns padded to their widest cell, two spaces apart.
fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> =
            row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn render_report(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verdict = if r.sound { "sound" } else { "NOT SOUND" };
    let _ = writeln!(
        out,
        "ledger {verdict}: {} events, {} accounts, {} transfers",
        r.events, r.accounts, r.transfers
    );
    for c in &r.currencies {
        let _ = writeln!(
            out,
            "  {}: posted debits {} / credits {}, pending debits {} / credits {}",
            c.currency, c.debits_posted, c.credits_posted, c.debits_pending, c.credits_pending
        );
    }
    if !r.problems.is_empty() {
        let _ = writeln!(out, "problems ({}):", r.problems.len() as u64 + r.problems_omitted);
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
        if r.problems_omitted > 0 {
            let _ = writeln!(out, "  ... and {} more", r.problems_omitted);
        }
    }
    let threshold = sagas::Duration::from_millis(r.pending_older_than_ms);
    let stale = r.stale_holds.len() as u64 + r.stale_holds_omitted;
    if stale == 0 {
        let _ = writeln!(out, "pending holds older than {threshold}: none");
    } else {
        let _ = writeln!(out, "pending holds older than {threshold}: {stale}");
        for h in &r.stale_holds {
            let age = sagas::Duration::from_secs(u64::try_from(h.age_ms / 1000).unwrap_or(0));
            let _ = writeln!(
                out,
                "  - {}: {} {} from {} to {}, pending for {age}",
                h.transfer_id, h.amount, h.currency, h.debit_account_id, h.credit_account_id
            );
        }
        if r.stale_holds_omitted > 0 {
            let _ = writeln!(out, "  ... and {} more", r.stale_holds_omitted);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from([
            "ledger",
            "accounts",
            "create",
            "alice",
            "--currency",
            "EUR",
            "--flags",
            "debits_must_not_exceed_credits",
        ])
        .unwrap();
        let Command::Accounts(AccountsCommand::Create { flags, .. }) = cli.command else {
            panic!("not accounts create: {cli:?}")
        };
        assert_eq!(flags, [Flag::DebitsMustNotExceedCredits]);
        let cli =
            Cli::try_parse_from(["ledger", "verify", "--pending-older-than", "90s", "--json"])
                .unwrap();
        assert!(matches!(cli.command, Command::Verify { pending_older_than: 90_000, json: true }));
        assert!(Cli::try_parse_from(["ledger", "verify", "--pending-older-than", "5 m"]).is_err());
        assert!(Cli::try_parse_from(["ledger", "balance"]).is_err());
        assert!(Cli::try_parse_from(["ledger", "accounts", "create", "a"]).is_err());
    }

    #[test]
    fn tables_line_up() {
        let rows =
            [["A".to_owned(), "LONG HEADER".to_owned()], ["longer".to_owned(), "1".to_owned()]];
        assert_eq!(render_table(&rows), "A       LONG HEADER\nlonger  1\n");
    }

    #[test]
    fn every_subcommand_has_help() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
