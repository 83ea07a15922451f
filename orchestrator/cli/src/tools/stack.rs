//! The processes `skald up` and the benchmarks start, and how they start them.
//!
//! Programs are found next to `skald` ([`sibling_binary`], [`ServiceBins`]);
//! child processes are kept in one [`Services`] list and stopped together; the
//! money sagas' services (psp-sim, `ledger`, `payment`, on SQLite files in one
//! directory) are started by [`MoneyStack`], and the `ledger` command line is
//! driven through [`Ledger`]; an orchestrator runs in this process as an
//! [`InProcess`] that reports every saga's end. The shipped saga definitions
//! the tools run are built into the binary here.

use orchestrator::engine::driver::Driver;
use orchestrator::serve::{Orchestrator, ServeError};
use sagas::Definition;
use skald_transport::BusOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The shipped `bench` definition: (file name, YAML).
pub const BENCH: (&str, &str) =
    ("bench.yaml", include_str!("../../../../sagas/definitions/bench.yaml"));
/// The shipped `topup` definition: (file name, YAML).
pub const TOPUP: (&str, &str) =
    ("topup.yaml", include_str!("../../../../sagas/definitions/topup.yaml"));
/// The shipped `payout` definition: (file name, YAML).
pub const PAYOUT: (&str, &str) =
    ("payout.yaml", include_str!("../../../../sagas/definitions/payout.yaml"));

/// The shipped `topup_3ds` definition: (file name, YAML).
pub const TOPUP_3DS: (&str, &str) =
    ("topup_3ds.yaml", include_str!("../../../../sagas/definitions/topup_3ds.yaml"));

/// How long [`Services::stop`] waits for each child after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often [`wait_port`] tries, and how long it waits between tries.
const PORT_TRIES: u32 = 200;
const PORT_RETRY: Duration = Duration::from_millis(50);

/// What can go wrong while starting the stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(
        "cannot run `{bin}`: {source}. Build the services first: `cargo build --release -p skald-cli -p ledger -p payment`"
    )]
    Spawn { bin: String, source: std::io::Error },
    #[error("`ledger {args}` failed: {output}")]
    Ledger { args: String, output: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A shipped definition, loaded as the orchestrator loads a file.
pub fn definition((name, yaml): (&str, &str)) -> Result<Definition, String> {
    sagas::definition::load(name, yaml).map_err(|e| e.to_string())
}

/// A program built next to this one (`target/<profile>/`), else found on PATH.
#[must_use]
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The URL of a SQLite file `name` in `dir`, created when missing.
#[must_use]
pub fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(name).display())
}

/// Where the money sagas' programs are (`--ledger-bin`, `--payment-bin`,
/// `--psp-sim-bin`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceBins {
    /// The `ledger` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub ledger_bin: Option<PathBuf>,
    /// The `payment` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub payment_bin: Option<PathBuf>,
    /// The `psp-sim` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub psp_sim_bin: Option<PathBuf>,
}

/// The program given (a `--*-bin` flag), else [`sibling_binary`] `name`.
#[must_use]
pub fn given_or_sibling(given: Option<&PathBuf>, name: &str) -> PathBuf {
    given.cloned().unwrap_or_else(|| sibling_binary(name))
}

/// A free TCP port on 127.0.0.1 (free when asked; a child binds it next).
pub fn free_port() -> Result<u16, StackError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait up to 10 s until something listens on `port` (`what`, for the error).
pub async fn wait_port(port: u16, what: &str) -> Result<(), StackError> {
    for _ in 0..PORT_TRIES {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(PORT_RETRY).await;
    }
    Err(StackError::Setup(format!("{what} did not listen on port {port} within 10 s")))
}

/// Where `setpriv` (util-linux) may be installed.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

/// A command for `bin` that dies with this process: through `setpriv
/// --pdeathsig TERM` when it is installed, the child gets SIGTERM when the
/// thread that started it ends, even when this process is killed with
/// SIGKILL. (`setpriv` execs `bin`: the child's pid is `bin`'s.) Without
/// `setpriv`, [`Services`] still stops its children on every exit it sees.
pub fn command(bin: &Path) -> Command {
    match SETPRIV.iter().map(Path::new).find(|p| p.is_file()) {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "TERM", "--"]).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Child processes, stopped together by [`Services::stop`] and killed when dropped.
#[derive(Debug, Default)]
pub struct Services(Vec<Child>);

impl Services {
    /// Start `cmd` with no stdin and stdout, killed when dropped: its pid (0 if
    /// it has none).
    pub fn start(&mut self, cmd: &mut Command) -> std::io::Result<u32> {
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).kill_on_drop(true).spawn()?;
        let pid = child.id().unwrap_or(0);
        self.0.push(child);
        Ok(pid)
    }

    /// Start `bin` with `args` and `envs` (and, on a bus, its options by
    /// environment), logging errors only.
    pub fn spawn(
        &mut self,
        bin: &Path,
        args: &[&str],
        envs: &[(&str, String)],
        bus: Option<&BusOptions>,
    ) -> Result<(), StackError> {
        let mut cmd = command(bin);
        cmd.args(args).env("RUST_LOG", "error");
        if let Some(bus) = bus {
            bus.pass_to(cmd.as_std_mut());
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        self.start(&mut cmd)
            .map_err(|source| StackError::Spawn { bin: bin.display().to_string(), source })?;
        Ok(())
    }

    /// Whether the child with `pid` has exited (and how).
    pub fn exited(&mut self, pid: u32) -> Option<String> {
        exit_status(self.0.iter_mut().find(|c| c.id() == Some(pid))?)
    }

    /// Whether any child has exited (and how).
    pub fn any_exited(&mut self) -> Option<String> {
        self.0.iter_mut().find_map(exit_status)
    }

    /// SIGKILL the child with `pid`, as `kill -9`.
    pub async fn kill(&mut self, pid: u32) {
        if let Some(child) = self.0.iter_mut().find(|c| c.id() == Some(pid)) {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM every child, then wait up to 10 s for each.
    pub async fn stop(self) {
        self.stop_within(STOP_GRACE).await;
    }

    /// SIGTERM every child, then wait up to `grace` for each and SIGKILL the
    /// ones still running.
    pub async fn stop_within(mut self, grace: Duration) {
        for child in &self.0 {
            if let Some(pid) = child.id() {
                terminate(pid).await;
            }
        }
        for child in &mut self.0 {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

/// Send SIGTERM to a process (through `kill`, as this crate has no libc).
pub async fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// The `ledger` program on its SQLite file.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub bin: PathBuf,
    /// Its `DATABASE_URL`.
    pub db: String,
}

impl Ledger {
    /// Run `ledger ARGS` to the end: its output (stdout, then stderr).
    pub async fn run(&self, args: &[&str]) -> Result<String, StackError> {
        let out = Command::new(&self.bin)
            .args(args)
            .env("DATABASE_URL", &self.db)
            .env("RUST_LOG", "error")
            .output()
            .await
            .map_err(|source| StackError::Spawn { bin: self.bin.display().to_string(), source })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(StackError::Ledger { args: args.join(" "), output: text.trim().to_owned() })
        }
    }

    /// Open a EUR account that may go negative (a clearing account).
    pub async fn open_clearing(&self, name: &str) -> Result<String, StackError> {
        self.run(&["accounts", "create", name, "--currency", "EUR"]).await
    }

    /// Open a EUR wallet: an account that never pays out more than it holds.
    pub async fn open_wallet(&self, name: &str) -> Result<String, StackError> {
        let flags = "debits_must_not_exceed_credits";
        self.run(&["accounts", "create", name, "--currency", "EUR", "--flags", flags]).await
    }

    /// `ledger verify`, holds of any age counted as pending: its report.
    pub async fn verify(&self) -> Result<String, StackError> {
        self.run(&["verify", "--pending-older-than", "0ms"]).await
    }
}

/// The money sagas' services on SQLite files in one directory: psp-sim (the
/// provider), the `ledger` and `payment` participants, and any other child
/// started alongside them in [`MoneyStack::services`].
#[derive(Debug)]
pub struct MoneyStack {
    pub ledger: Ledger,
    /// `payment`'s `--database-url`.
    pub payment_db: String,
    payment_bin: PathBuf,
    psp_sim_bin: PathBuf,
    /// psp-sim's books (`--books`): the provider survives its restarts.
    psp_books: PathBuf,
    pub services: Services,
}

impl MoneyStack {
    /// The programs of `bins`, `ledger.db`, `payment.db` and psp-sim's
    /// `psp-sim.books` in `dir`; nothing started yet.
    #[must_use]
    pub fn new(bins: &ServiceBins, dir: &Path) -> Self {
        Self {
            ledger: Ledger {
                bin: given_or_sibling(bins.ledger_bin.as_ref(), "ledger"),
                db: sqlite_url(dir, "ledger.db"),
            },
            payment_db: sqlite_url(dir, "payment.db"),
            payment_bin: given_or_sibling(bins.payment_bin.as_ref(), "payment"),
            psp_sim_bin: given_or_sibling(bins.psp_sim_bin.as_ref(), "psp-sim"),
            psp_books: dir.join("psp-sim.books"),
            services: Services::default(),
        }
    }

    /// Start psp-sim on a free port with `args` and wait until it listens: the port.
    pub async fn start_psp_sim(&mut self, args: &[&str]) -> Result<u16, StackError> {
        let port = free_port()?;
        let port_text = port.to_string();
        let books = self.psp_books.display().to_string();
        let mut all = vec!["--port", port_text.as_str(), "--books", books.as_str()];
        all.extend_from_slice(args);
        self.services.spawn(&self.psp_sim_bin, &all, &[], None)?;
        wait_port(port, "psp-sim").await?;
        Ok(port)
    }

    /// Start `ledger serve` and `payment serve` (charging through psp-sim on
    /// `psp_port`) on the subjects of `prefix`; `extra` ends both command
    /// lines, `ledger_extra` and `payment_extra` each one's.
    pub fn start_participants(
        &mut self,
        prefix: &str,
        [ledger_bus, payment_bus]: [&BusOptions; 2],
        psp_port: u16,
        extra: &[&str],
        [ledger_extra, payment_extra]: [&[&str]; 2],
    ) -> Result<(), StackError> {
        let mut ledger = vec!["serve", "--prefix", prefix];
        ledger.extend_from_slice(extra);
        ledger.extend_from_slice(ledger_extra);
        self.services.spawn(
            &self.ledger.bin,
            &ledger,
            &[("DATABASE_URL", self.ledger.db.clone())],
            Some(ledger_bus),
        )?;
        let psp_url = format!("http://127.0.0.1:{psp_port}");
        let mut payment = vec![
            "serve",
            "--prefix",
            prefix,
            "--database-url",
            &self.payment_db,
            "--psp-url",
            &psp_url,
        ];
        payment.extend_from_slice(extra);
        payment.extend_from_slice(payment_extra);
        self.services.spawn(&self.payment_bin, &payment, &[], Some(payment_bus))
    }

    /// Stop every child ([`Services::stop`]).
    pub async fn stop(self) {
        self.services.stop().await;
    }
}

/// How `child` exited, if it has.
fn exit_status(child: &mut Child) -> Option<String> {
    match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        Ok(None) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Longest [`listening`] waits.
const LISTENING_WAIT_MAX: Duration = Duration::from_secs(30);

/// Wait until `participant` listens for commands on `prefix`'s bus. The SDK
/// subscribes a participant to its commands first and to inspections after:
/// once it answers an (empty) inspection, a command sent now reaches it.
/// Without this wait the first commands of a run could go out before it
/// listens (direct delivery keeps nothing for a participant not there yet)
/// and wait for the outbox's re-send, which would count in the run's
/// latencies. `exited` tells whether the participant's process has exited
/// (and how), which ends the wait.
pub async fn listening(
    client: &async_nats::Client,
    prefix: &str,
    participant: &str,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let subject = sagas::protocol::Namespace::new(prefix)?.inspect_subject(participant);
    let body = serde_json::to_vec(&sagas::protocol::InspectRequest { sagas: Vec::new() })
        .map_err(|e| e.to_string())?;
    let began = std::time::Instant::now();
    loop {
        let asked = client.request(subject.clone(), body.clone().into());
        match tokio::time::timeout(Duration::from_secs(1), asked).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(Err(e)) => return Err(format!("cannot reach the {participant} participant: {e}")),
            Err(_) => {}
        }
        if let Some(status) = exited() {
            return Err(format!("the {participant} participant exited early ({status})"));
        }
        if began.elapsed() > LISTENING_WAIT_MAX {
            return Err(format!(
                "the {participant} participant did not listen within {}s",
                LISTENING_WAIT_MAX.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An orchestrator running in this process, reporting the id of every saga
/// that ends on [`InProcess::ended`].
#[derive(Debug)]
pub struct InProcess {
    pub driver: Driver,
    pub ended: mpsc::UnboundedReceiver<String>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), ServeError>>,
}

impl InProcess {
    /// Run `orchestrator` (connected and configured) until [`InProcess::stop`].
    #[must_use]
    pub fn start(mut orchestrator: Orchestrator) -> Self {
        let (ended_tx, ended) = mpsc::unbounded_channel();
        orchestrator.driver = orchestrator.driver.clone().with_end_listener(ended_tx);
        let driver = orchestrator.driver.clone();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(orchestrator.run(shutdown.clone()));
        Self { driver, ended, shutdown, server }
    }

    /// Shut the orchestrator down and wait until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shipped_definitions_load() {
        for file in [BENCH, TOPUP, PAYOUT, TOPUP_3DS] {
            let d = definition(file).unwrap();
            assert_eq!(format!("{}.yaml", d.name), file.0);
        }
    }

    #[test]
    fn given_programs_win_over_siblings() {
        let given = PathBuf::from("/opt/ledger");
        assert_eq!(given_or_sibling(Some(&given), "ledger"), given);
        assert!(given_or_sibling(None, "ledger").ends_with("ledger"));
    }
}
