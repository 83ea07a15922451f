//! `skald up`: Skald's main job on one machine, in one command.
//!
//! Starts a nats-server of its own on a free port, secured as `skald bus
//! init` writes one (an nkey identity per process; or uses `--nats-url`), the
//! provider simulator (`psp-sim`, with some provider faults switched on), the
//! `ledger` and `payment` participants as processes, and an orchestrator with
//! its HTTP API and console in this process, all on SQLite files in one data
//! directory; opens wallets in the ledger; runs a batch of sample `topup` and
//! `payout` sagas (good cards, declined cards, 3-D Secure cards, a sanctioned
//! card, payouts larger than a wallet)
//! with a progress bar; prints how they ended, the balances and `ledger
//! verify`; then serves the console until Ctrl-C, or exits with `--exit`.

use crate::commands::bus::{self as bus_files, InitArgs};
use crate::tools::stack::{self, InProcess, MoneyStack, ServiceBins, Services, StackError};
use orchestrator::api::{Role, Tokens, auth};
use orchestrator::audit::{Auditor, Tally};
use orchestrator::engine::driver::Driver;
use orchestrator::serve::{Orchestrator, ServeConfig};
use serde::Serialize;
use serde_json::{Value, json};
use skald_transport::BusOptions;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DEFINITIONS: [(&str, &str); 4] =
    [stack::TOPUP, stack::TOPUP_3DS, stack::PAYOUT, stack::BENCH];
const WALLETS: [&str; 3] = ["alice", "bob", "carol"];
/// Each wallet opens with this, plus [`PAYOUT_AMOUNT`] for every payout the
/// batch may make from it, so the expected outcomes hold in any order the
/// sagas happen to run.
const OPENING_BALANCE_BASE: i64 = 5_000;
/// A payout the wallet covers.
const PAYOUT_AMOUNT: i64 = 500;
/// A payout no wallet covers (far over any opening balance).
const PAYOUT_TOO_LARGE: i64 = 100_000_000;
pub const SAGAS_MAX: u32 = 10_000;
/// Share of provider calls psp-sim answers with a 5xx (retried by payment).
const PROVIDER_FAILURE_RATE: &str = "0.05";
/// Share of charges psp-sim makes and then drops the answer to (the payment
/// service's reconciler and the same idempotency key recover them).
const PROVIDER_DROP_RATE: &str = "0.03";
/// Longest wait for the batch to end.
const BATCH_WAIT_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, clap::Args)]
pub struct UpConfig {
    /// A NATS server (with JetStream) for every process of the stack;
    /// credentials, if any, in the URL. Default: a nats-server of the stack's
    /// own on a free port, secured as `skald bus init` writes it.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Directory for the SQLite files, NATS data and the admin token (created
    /// if missing; reused by later runs).
    #[arg(long, default_value = "skald-quickstart")]
    pub data_dir: PathBuf,
    /// How many sample sagas to run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=i64::from(SAGAS_MAX)))]
    pub sagas: u32,
    /// Subject and stream prefix of this stack; default: `quickstart-` and a
    /// random word chosen on the first run and kept in the data directory, so
    /// two data directories never share subjects on one NATS.
    #[arg(long, env = "SKALD_PREFIX")]
    pub prefix: Option<String>,
    /// Where the API and console listen; default: 127.0.0.1:8080, or a free
    /// port when another program (another `skald up`) holds 8080.
    #[arg(long, env = "SKALD_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Run the batch, print the summary and exit (0 when every saga ended as
    /// expected and the ledger verifies) instead of serving the console.
    #[arg(long)]
    pub exit: bool,
    /// Print the summary as JSON on stdout (the set-up lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// How commands and replies travel between the orchestrator, the ledger
    /// and payment: `direct` (the default) or `jetstream` (docs/delivery.md).
    #[arg(long, env = "SKALD_DELIVERY", value_enum, default_value_t = skald_transport::Delivery::default())]
    pub delivery: skald_transport::Delivery,
    #[command(flatten)]
    pub bins: ServiceBins,
}

/// The sample batch: (type, key, input, what to expect).
fn samples(run: &str, n: u32) -> Vec<(&'static str, String, Value, &'static str)> {
    (0..n)
        .map(|i| {
            let wallet = WALLETS[i as usize % WALLETS.len()];
            match i % 8 {
                0..=1 => ("topup", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                            "amount": 1_000 + i64::from(i) * 10, "currency": "EUR", "card_token": "tok_visa"}), "completed"),
                2 => ("topup_3ds", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                       "amount": 1_500 + i64::from(i) * 10, "currency": "EUR", "card_token": "tok_3ds"}), "completed"),
                6 => ("topup_3ds", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                       "amount": 900, "currency": "EUR", "card_token": "tok_3ds_fail"}), "compensated: 3-D Secure failed"),
                7 => ("topup_3ds", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                       "amount": 60_000, "currency": "EUR", "card_token": "tok_visa"}), "completed"),
                3 if i % 16 == 11 => ("topup_3ds", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                       "amount": 800, "currency": "EUR", "card_token": "tok_sanctioned"}), "compensated: screening refused the card"),
                3 => ("topup", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                       "amount": 700, "currency": "EUR", "card_token": "tok_decline"}), "compensated: card declined"),
                4 => ("payout", json!({"wallet_account": wallet, "payout_account": "payout_clearing",
                       "amount": PAYOUT_AMOUNT, "currency": "EUR", "bank_account": "DE89370400440532013000"}), "completed"),
                _ => ("payout", json!({"wallet_account": wallet, "payout_account": "payout_clearing",
                       "amount": PAYOUT_TOO_LARGE, "currency": "EUR", "bank_account": "DE89370400440532013000"}), "failed: insufficient funds"),
            }
        })
        .enumerate()
        .map(|(i, (t, input, expect))| (t, format!("{run}-{i}"), input, expect))
        .collect()
}

/// How the batch ended.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub sagas: usize,
    /// Count per end status (`completed`, `compensated`, `failed`, `parked`, and
    /// `running`/`compensating` for any that had not ended).
    pub by_status: BTreeMap<String, usize>,
    /// Sagas that did not end the way their sample expects.
    pub unexpected: Vec<String>,
    pub ledger_sound: bool,
    pub ledger_verify: String,
    /// Every saga of the batch audited across services (its history beside
    /// what the ledger, the payment service and the provider recorded).
    pub audit: AuditTotals,
    pub balances: String,
    pub console_url: Option<String>,
    pub data_dir: String,
    pub ok: bool,
}

/// The batch's audit across services.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditTotals {
    pub checked: u64,
    pub agreeing: u64,
    pub disagreeing: u64,
    pub unchecked: u64,
    /// Disagreements by kind (only kinds found).
    pub by_kind: BTreeMap<String, u64>,
    /// The sagas to look at (`skald sagas audit ID`), first few.
    pub to_look_at: Vec<String>,
}

/// Sagas audited per round of questions.
const AUDIT_BATCH: usize = 200;
/// How long sagas that do not agree yet are audited again: the payment
/// service's reconciler gives back a charge whose step was given up within
/// its grace (30 s).
const AUDIT_SETTLE_MAX: Duration = Duration::from_secs(45);

/// Audit `ids` across services; sagas that do not agree are asked about
/// again (every 2 s, up to [`AUDIT_SETTLE_MAX`]) while the services settle.
async fn audit_batch(auditor: &Auditor, driver: &Driver, ids: &[String]) -> AuditTotals {
    let deadline = tokio::time::Instant::now() + AUDIT_SETTLE_MAX;
    let mut todo: Vec<String> = ids.to_vec();
    let mut agreeing = 0_u64;
    loop {
        let mut tally = Tally::default();
        for chunk in todo.chunks(AUDIT_BATCH) {
            match auditor.audit(driver, chunk).await {
                Ok(audits) => tally.add(audits),
                Err(e) => tracing::warn!(error = %e, "auditing the batch failed"),
            }
        }
        agreeing += tally.agreeing;
        let settled = tally.clean() || tokio::time::Instant::now() >= deadline;
        todo = tally.sagas.iter().map(|s| s.saga_id.clone()).collect();
        if settled {
            return AuditTotals {
                checked: ids.len() as u64,
                agreeing,
                disagreeing: tally.disagreeing,
                unchecked: tally.unchecked,
                by_kind: tally.by_kind.into_iter().filter(|(_, n)| *n > 0).collect(),
                to_look_at: todo.into_iter().take(10).collect(),
            };
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Say something about the set-up: on stdout, or stderr when stdout is JSON.
fn say(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The bus every process of the stack connects to.
#[derive(Debug)]
struct Bus {
    orchestrator: BusOptions,
    ledger: BusOptions,
    payment: BusOptions,
}

/// `nats-server` on PATH or where Debian and the release archives put it.
fn nats_server_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nats-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/local/bin/nats-server"),
        ])
        .find(|p| p.is_file())
}

/// The stack's bus: the one at `--nats-url` (every process connects to it as
/// given), or by default a nats-server of its own on a free port, secured as
/// `skald bus init` writes it (an identity per process, only its part's
/// subjects), its files in `dir/bus` and JetStream's in `dir/nats`.
async fn bus(
    given: Option<&str>,
    prefix: &str,
    dir: &Path,
    services: &mut Services,
    json: bool,
) -> Result<Bus, StackError> {
    if let Some(url) = given {
        let options = BusOptions::plain(url);
        say(
            json,
            &format!(
                "  nats          {} (given; every process connects as given)",
                options.redacted_url()
            ),
        );
        return Ok(Bus {
            orchestrator: options.clone(),
            ledger: options.clone(),
            payment: options,
        });
    }
    let Some(bin) = nats_server_bin() else {
        return Err(StackError::Setup(
            "`nats-server` is not installed; install it (Debian: apt-get install nats-server) \
             or give --nats-url of a NATS server with JetStream"
                .to_owned(),
        ));
    };
    let port = stack::free_port()?;
    let init = InitArgs {
        dir: dir.join("bus"),
        prefix: prefix.to_owned(),
        participants: vec!["ledger".to_owned(), "payment".to_owned()],
        starters: Vec::new(),
        host: "127.0.0.1".to_owned(),
        port,
        store_dir: Some(dir.join("nats")),
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
        force: true,
        if_missing: false,
    };
    let files = bus_files::write(&init).map_err(|e| StackError::Setup(e.to_string()))?;
    let config = files.config.display().to_string();
    let log = dir.join("bus").join("nats-server.log").display().to_string();
    services
        .spawn(&bin, &["-c", &config, "-l", &log], &[], None)
        .map_err(|e| StackError::Setup(format!("cannot start `{}`: {e}", bin.display())))?;
    stack::wait_port(port, "nats-server").await?;
    let url = format!("nats://127.0.0.1:{port}");
    let options = |name: &str| {
        files.options_for(name, &url).ok_or_else(|| {
            StackError::Setup(format!("the bus was written without the identity `{name}`"))
        })
    };
    say(
        json,
        &format!(
            "  nats          {url} (its own nats-server; an identity per process, anonymous refused: {config})"
        ),
    );
    Ok(Bus {
        orchestrator: options(skald_transport::access::ORCHESTRATOR)?,
        ledger: options("ledger")?,
        payment: options("payment")?,
    })
}

/// The console's usual address.
const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8080";

/// The text kept in `dir/name` (trimmed), or `make`'s, written there (with
/// `mode`) on the first run.
fn kept(
    dir: &Path,
    name: &str,
    mode: u32,
    make: impl FnOnce() -> String,
) -> Result<String, StackError> {
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_owned());
    }
    let made = make();
    std::fs::write(&path, format!("{made}\n"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(made)
}

/// The prefix of this data directory: made once, kept in `prefix`.
fn data_dir_prefix(dir: &Path) -> Result<String, StackError> {
    kept(dir, "prefix", 0o644, || {
        format!("quickstart-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    })
}

/// The usual address, bound, unless `--http-addr` was given or another
/// program (another `skald up`) holds it; then the API binds what the
/// config says (`--http-addr`, or a free port).
async fn usual_listener(given: Option<&str>) -> Option<tokio::net::TcpListener> {
    match given {
        Some(_) => None,
        None => tokio::net::TcpListener::bind(HTTP_ADDR_DEFAULT).await.ok(),
    }
}

/// The admin token of this data directory: made once, kept in `admin.token` (mode 0600).
fn admin_token(dir: &Path) -> Result<String, StackError> {
    kept(dir, "admin.token", 0o600, auth::new_token)
}

/// Run `skald up`; returns the summary once the batch is done (and, without
/// `--exit`, once `stop` is cancelled: Ctrl-C, SIGTERM or SIGHUP). When
/// `stop` is cancelled during the batch, the batch is cut short (its sagas
/// carry on at the next `skald up` in the same directory).
pub async fn run(config: &UpConfig, stop: CancellationToken) -> Result<Summary, StackError> {
    let json = config.json;
    std::fs::create_dir_all(&config.data_dir)?;
    let dir = std::fs::canonicalize(&config.data_dir)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    say(json, &format!("Skald — data in {}", dir.display()));
    let mut money = MoneyStack::new(&config.bins, &dir);
    let prefix = match &config.prefix {
        Some(p) => p.clone(),
        None => data_dir_prefix(&dir)?,
    };
    let mut bus = bus(config.nats_url.as_deref(), &prefix, &dir, &mut money.services, json).await?;
    for options in [&mut bus.orchestrator, &mut bus.ledger, &mut bus.payment] {
        options.delivery = config.delivery;
    }
    say(
        json,
        match config.delivery {
            skald_transport::Delivery::Direct => {
                "  delivery      direct (commands and replies on core NATS; docs/delivery.md)"
            }
            skald_transport::Delivery::JetStream => {
                "  delivery      jetstream (commands and replies stored in streams; docs/delivery.md)"
            }
        },
    );
    // The payment service takes the provider's webhooks (3-D Secure) here.
    let hook_addr = format!("127.0.0.1:{}", stack::free_port()?);
    let webhook_url = format!("http://{hook_addr}/webhooks/psp");
    let psp_port = money
        .start_psp_sim(&[
            "--failure-rate",
            PROVIDER_FAILURE_RATE,
            "--drop-after-charge-rate",
            PROVIDER_DROP_RATE,
            "--seed",
            "7",
            "--webhook-url",
            &webhook_url,
        ])
        .await?;
    say(
        json,
        &format!(
            "  psp-sim       http://127.0.0.1:{psp_port} (5xx on {PROVIDER_FAILURE_RATE}, answers dropped after charging on {PROVIDER_DROP_RATE} of calls)"
        ),
    );
    // Enough for every payout of the batch, whatever order they run in.
    let opening = OPENING_BALANCE_BASE + PAYOUT_AMOUNT * i64::from(config.sagas);
    let ledger = money.ledger.clone();
    ledger.open_clearing("psp_clearing").await?;
    ledger.open_clearing("payout_clearing").await?;
    for w in WALLETS {
        ledger.open_wallet(w).await?;
        ledger
            .run(&[
                "transfer",
                &format!("opening-{w}-{run_id}"),
                "--debit",
                "psp_clearing",
                "--credit",
                w,
                "--amount",
                &opening.to_string(),
                "--currency",
                "EUR",
            ])
            .await?;
    }
    say(
        json,
        &format!(
            "  ledger        {} (wallets {} opened with {opening} each)",
            dir.join("ledger.db").display(),
            WALLETS.join(", ")
        ),
    );

    let definitions = DEFINITIONS
        .into_iter()
        .map(stack::definition)
        .collect::<Result<Vec<_>, _>>()
        .map_err(StackError::Setup)?;
    let serve = ServeConfig {
        bus: bus.orchestrator.clone(),
        database_url: format!("sqlite://{}", dir.join("skald.db").display()),
        prefix: prefix.clone(),
        definitions: dir.clone(),
        partitions: 16,
        http_addr: config.http_addr.clone().unwrap_or_else(|| "127.0.0.1:0".to_owned()),
        instance: Some("skald-up".to_owned()),
        ..ServeConfig::defaults()
    };
    let usual = usual_listener(config.http_addr.as_deref()).await;
    // The orchestrator creates the streams: on a secured bus no participant may.
    let mut orchestrator = Orchestrator::connect_with(&serve, Some(definitions)).await?;
    if let Some(listener) = usual {
        orchestrator.set_listener(listener);
    }
    money.start_participants(
        &prefix,
        [&bus.ledger, &bus.payment],
        psp_port,
        &[],
        [&[], &["--webhook-addr", &hook_addr]],
    )?;
    say(json, &format!("  payment       {}", dir.join("payment.db").display()));
    let token = admin_token(&dir)?;
    orchestrator.set_tokens(Tokens::single("admin", Role::Admin, &token));
    let console_url = orchestrator.http_addr().map(|a| format!("http://{a}/"));
    let auditor =
        Auditor::new(orchestrator.client.clone(), orchestrator.driver.namespace().clone());
    // The first commands go out only once both listen: with direct delivery
    // a command nobody listens for waits for the outbox's re-send.
    for participant in ["ledger", "payment"] {
        let listening = stack::listening(&orchestrator.client, &prefix, participant, || {
            money.services.any_exited()
        });
        tokio::select! {
            listening = listening => listening.map_err(StackError::Setup)?,
            () = stop.cancelled() => {
                return Err(StackError::Setup("stopped before the first saga".to_owned()));
            }
        }
    }
    let mut running = InProcess::start(orchestrator);
    let driver = running.driver.clone();
    say(
        json,
        &format!("  orchestrator  {} (subjects `{}.*`)", dir.join("skald.db").display(), prefix),
    );
    if let Some(url) = &console_url {
        say(
            json,
            &format!("  console       {url}  (token in {})", dir.join("admin.token").display()),
        );
    }
    say(json, "");

    let batch = samples(&run_id, config.sagas);
    let progress = indicatif::ProgressBar::new(batch.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} sagas ended")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress.set_message("running");
    let mut open: HashMap<String, usize> = HashMap::new();
    for (i, (saga_type, key, input, _)) in batch.iter().enumerate() {
        let started = driver
            .start(saga_type, key, input)
            .await
            .map_err(|e| StackError::Setup(e.to_string()))?;
        open.insert(started.saga_id().to_owned(), i);
    }
    let ids: Vec<(String, usize)> = open.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let wait = async {
        while !open.is_empty() {
            match running.ended.recv().await {
                Some(id) => {
                    if open.remove(&id).is_some() {
                        progress.inc(1);
                    }
                }
                None => break,
            }
        }
    };
    let ending = tokio::select! {
        ended = tokio::time::timeout(BATCH_WAIT_MAX, wait) => {
            if ended.is_err() { "timed out" } else { "done" }
        }
        () = stop.cancelled() => "stopped",
    };
    progress.finish_with_message(ending);

    let mut unexpected = Vec::new();
    let mut rows: Vec<(usize, String)> = Vec::new();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for (id, i) in &ids {
        let loaded = driver.store().load(id).await.map_err(|e| StackError::Setup(e.to_string()))?;
        let (status, error) =
            loaded.map_or(("missing".into(), None), |l| (l.row.status, l.row.last_error));
        *by_status.entry(status.clone()).or_default() += 1;
        let (saga_type, _, input, expect) = &batch[*i];
        let why =
            error.as_deref().map(|e| format!(" ({})", e.chars().take(200).collect::<String>()));
        if !expect.starts_with(status.as_str()) {
            let why = why.clone().unwrap_or_default();
            unexpected.push(format!("{id}: {saga_type} ended {status}, expected {expect}{why}"));
        }
        let note = error
            .map(|e| format!(" ({})", e.chars().take(60).collect::<String>()))
            .unwrap_or_default();
        rows.push((
            *i,
            format!(
                "{saga_type:<9} {:<7} {:>8}  {status:<12} expected {expect}{note}",
                input["wallet_account"].as_str().unwrap_or(""),
                input["amount"].as_i64().unwrap_or(0)
            ),
        ));
    }
    rows.sort();
    if !json {
        println!("saga      wallet    amount  ended as");
        for (_, row) in &rows {
            println!("{row}");
        }
    }
    let all: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    let audit = audit_batch(&auditor, &driver, &all).await;
    let mut accounts: Vec<&str> = WALLETS.to_vec();
    accounts.extend(["psp_clearing", "payout_clearing"]);
    let mut args = vec!["balance"];
    args.extend(accounts);
    let balances = ledger.run(&args).await?;
    let (ledger_sound, ledger_verify) = match ledger.verify().await {
        Ok(report) => (true, report.trim().to_owned()),
        Err(e) => (false, e.to_string()),
    };
    let ended = by_status
        .iter()
        .filter(|(s, _)| matches!(s.as_str(), "completed" | "compensated" | "failed" | "parked"))
        .map(|(_, n)| n)
        .sum::<usize>();
    let summary = Summary {
        sagas: ids.len(),
        ok: ledger_sound
            && unexpected.is_empty()
            && ended == ids.len()
            && audit.disagreeing == 0
            && audit.unchecked == 0,
        by_status,
        unexpected,
        ledger_sound,
        ledger_verify,
        audit,
        balances,
        console_url: console_url.clone(),
        data_dir: dir.display().to_string(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    } else {
        print_summary(&summary);
    }

    if !config.exit {
        if let Some(url) = &console_url {
            say(
                json,
                &format!(
                    "\nConsole: {url}  — sign in with the admin token:\n  {token}\n\
                     API: {url}docs (Swagger UI); `skald sagas list --api-url {} --token $(cat {})`\n\
                     Ctrl-C stops everything.",
                    url.trim_end_matches('/'),
                    dir.join("admin.token").display()
                ),
            );
        } else {
            say(json, "\nRunning; Ctrl-C stops everything.");
        }
        stop.cancelled().await;
    }
    running.stop().await;
    money.stop().await;
    Ok(summary)
}

fn print_summary(s: &Summary) {
    let counts: Vec<String> = s.by_status.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("\n{} sagas: {}\n", s.sagas, counts.join(", "));
    print!("{}", s.balances);
    if s.ledger_sound {
        println!("\nledger verify: sound\n{}", s.ledger_verify);
    } else {
        println!("\nledger verify: NOT sound\n{}", s.ledger_verify);
    }
    let a = &s.audit;
    if a.disagreeing == 0 && a.unchecked == 0 {
        println!(
            "across services: all {} sagas agree with what the ledger, the payment service and the provider recorded",
            a.checked
        );
    } else {
        let kinds: Vec<String> = a.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "across services: {} of {} sagas disagree ({}), {} could not be checked; look at them with `skald sagas audit ID`:",
            a.disagreeing,
            a.checked,
            kinds.join(", "),
            a.unchecked
        );
        for id in &a.to_look_at {
            println!("  {id}");
        }
    }
    for u in &s.unexpected {
        println!("unexpected: {u}");
    }
}
