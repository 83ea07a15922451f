//! `skald bus init`: a secured bus for one prefix, as files.
//!
//! Writes a nats-server configuration in which each Skald process has an
//! nkey identity and only its part's subjects (see
//! [`skald_transport::access`]), and, per identity, its seed file (mode 0600)
//! and an environment file that points a process at it. `skald up` runs its
//! own nats-server on the same files.

use crate::client::{CliError, Outcome};
use sagas::protocol::Namespace;
use skald_transport::access::{self, BusFiles, ORCHESTRATOR, Server, ServerTls};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Most identities one bus may be written with.
const IDENTITIES_MAX: usize = 64;

/// The secured bus.
#[derive(Debug, clap::Subcommand)]
pub enum BusCommand {
    /// Write a nats-server configuration and an nkey identity per Skald process.
    #[command(
        long_about = "Write, into --dir, a nats-server configuration (nats-server.conf) for the \
            subjects of --prefix in which anonymous clients are refused and each Skald process \
            signs in with its own nkey: the orchestrator alone may publish commands and answer \
            start requests; each participant may read only its own commands and publish only \
            replies that name it; each starter may only send start requests. Per identity \
            NAME it writes NAME.nk (the nkey seed, mode 0600: the secret) and NAME.env \
            (NATS_NKEY and NATS_INBOX_PREFIX for that process). The configuration holds only \
            public keys.\n\n\
            Start the server with `nats-server -c DIR/nats-server.conf`, and each process with \
            its file's variables (e.g. `set -a; . DIR/ledger.env; set +a; ledger serve`).",
        after_help = "Examples:\n  \
            skald bus init --dir bus\n  \
            skald bus init --dir bus --participant ledger --participant payment --starter api\n  \
            skald bus init --dir bus --port 4443 --tls-cert server.pem --tls-key server.key --tls-ca ca.pem\n\n\
            Exit status: 0 written, 1 cannot write, 2 usage."
    )]
    Init(InitArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Subject and stream prefix of the Skald processes on this bus.
    #[arg(long, env = "SKALD_PREFIX", default_value = "skald")]
    pub prefix: String,
    /// A participant service (repeat); default: ledger and payment.
    #[arg(long = "participant", value_name = "NAME")]
    pub participants: Vec<String>,
    /// An identity that may start sagas over NATS (repeat).
    #[arg(long = "starter", value_name = "NAME")]
    pub starters: Vec<String>,
    /// Address the server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port the server listens on.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// Where the server keeps JetStream's files; default: DIR/jetstream.
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// The server's TLS certificate (PEM); with --tls-key, clients must use TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates the server requires (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Replace files a previous run wrote (new keys: every process needs its new file).
    #[arg(long, conflicts_with = "if_missing")]
    pub force: bool,
    /// Write nothing, and succeed, when DIR already holds a configuration
    /// (for an init step that runs at every start, as in compose.yaml).
    #[arg(long)]
    pub if_missing: bool,
}

fn absolute(path: &Path) -> std::io::Result<String> {
    Ok(std::path::absolute(path)?.display().to_string())
}

/// Write the bus of `args` (see [`BusCommand::Init`]); files already there are
/// replaced only with `args.force`.
///
/// # Errors
/// [`CliError`] for bad names or a file that cannot be written.
pub fn write(args: &InitArgs) -> Result<BusFiles, CliError> {
    let ns = Namespace::new(&args.prefix).map_err(CliError::usage)?;
    let participants: Vec<&str> = if args.participants.is_empty() {
        vec!["ledger", "payment"]
    } else {
        args.participants.iter().map(String::as_str).collect()
    };
    let starters: Vec<&str> = args.starters.iter().map(String::as_str).collect();
    let names = access::identities(&participants, &starters);
    if names.len() > IDENTITIES_MAX {
        return Err(CliError::usage(format!("at most {IDENTITIES_MAX} identities on one bus")));
    }
    for (i, (name, _)) in names.iter().enumerate() {
        if name.len() > 64 || !sagas::protocol::is_subject_token(name) {
            return Err(CliError::usage(format!(
                "identity `{name}` must be 1-64 ASCII letters, digits, `_` or `-`"
            )));
        }
        if names[..i].iter().any(|(other, _)| other == name) {
            return Err(CliError::usage(format!("identity `{name}` is given twice")));
        }
    }
    std::fs::create_dir_all(&args.dir)?;
    let config = args.dir.join("nats-server.conf");
    if config.exists() && !args.force {
        return Err(CliError::usage(format!(
            "{} exists; pass --force to replace it (and every identity's keys)",
            config.display()
        )));
    }
    let store = match &args.store_dir {
        Some(d) => d.clone(),
        None => args.dir.join("jetstream"),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert_file: absolute(cert)?,
            key_file: absolute(key)?,
            ca_file: args.tls_ca.as_deref().map(absolute).transpose()?,
        }),
        _ => None,
    };
    let server =
        Server { host: args.host.clone(), port: args.port, store_dir: absolute(&store)?, tls };
    Ok(access::write_bus(&args.dir, &ns, &server, &names)?)
}

/// Run a `bus` command: what was written to `out`, how to use it to `err`.
///
/// # Errors
/// See [`write`].
pub fn run(
    command: &BusCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    match command {
        BusCommand::Init(args) => {
            let config = args.dir.join("nats-server.conf");
            if args.if_missing && config.exists() {
                writeln!(err, "{} exists; nothing written", config.display())?;
                return Ok(Outcome::Success);
            }
            let files = write(args)?;
            writeln!(out, "{}", files.config.display())?;
            for (name, seed) in &files.identities {
                writeln!(out, "{name}\t{}", seed.display())?;
            }
            writeln!(
                err,
                "Start the server: nats-server -c {}\n\
                 Start each process with its identity's variables, e.g.: \
                 set -a; . {}; set +a; skald serve --prefix {}",
                files.config.display(),
                args.dir.join(format!("{ORCHESTRATOR}.env")).display(),
                args.prefix
            )?;
            Ok(Outcome::Success)
        }
    }
}
