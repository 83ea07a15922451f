//! `skald token new`: mint an API token and the line that grants it.
//!
//! The token is printed once and kept nowhere; the server's tokens file
//! (`skald serve --api-tokens-file`) holds only its SHA-256, so this command
//! prints the line to add there. Nothing here talks to a server.

use crate::client::{CliError, Outcome};
use orchestrator::api::auth::{Role, hash_token, new_token};
use std::io::Write;
use std::time::SystemTime;

/// Longest token name (the API records it as `by` on every repair).
const NAME_LEN_MAX: usize = 128;

/// API tokens.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a new API token and print it with its line for the tokens file.
    #[command(
        long_about = "Make a new random API token (256 bits) for NAME with ROLE: viewer reads, \
            operator also starts and repairs sagas, admin also registers definitions.\n\n\
            Prints two lines on stdout: the token (shown only this once: give it to its user, \
            who sets SKALD_TOKEN or --token), then the line to add under `tokens:` in the file \
            `skald serve --api-tokens-file` reads, which holds only the token's SHA-256. \
            Send `skald serve` SIGHUP (or restart it) to load it.",
        after_help = "Examples:\n  \
            skald token new --name ann --role operator\n  \
            skald token new --name ci --role viewer --expires-at 2027-01-01T00:00:00Z\n  \
            skald token new --name ops-admin --role admin | tail -1 >> tokens.yaml\n\n\
            Exit status: 0 made, 2 usage."
    )]
    New {
        /// Who holds the token (recorded as `by` on every repair it makes).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// When the token stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        expires_at: Option<String>,
    },
}

/// A role as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Reads sagas and definitions.
    Viewer,
    /// Reads, and sends events to waiting sagas.
    Signaller,
    /// Also starts and repairs sagas.
    Operator,
    /// Also registers definitions.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => Self::Viewer,
            RoleArg::Signaller => Self::Signaller,
            RoleArg::Operator => Self::Operator,
            RoleArg::Admin => Self::Admin,
        }
    }
}

/// Run a `token` command: the token and its line to `out`, guidance to `err`.
pub fn run(
    command: &TokenCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    match command {
        TokenCommand::New { name, role, expires_at } => {
            let token = new_token();
            let line = tokens_file_line(name, (*role).into(), expires_at.as_deref(), &token)?;
            writeln!(out, "{token}")?;
            writeln!(out, "{line}")?;
            writeln!(
                err,
                "The first line is the token: it is shown only now; give it to {name} \
                 (SKALD_TOKEN or --token). Add the second line under `tokens:` in the \
                 --api-tokens-file of `skald serve` and send it SIGHUP (or restart it)."
            )?;
            Ok(Outcome::Success)
        }
    }
}

/// `  - {name: …, role: …, sha256: …[, expires_at: …]}` for `token`.
fn tokens_file_line(
    name: &str,
    role: Role,
    expires_at: Option<&str>,
    token: &str,
) -> Result<String, CliError> {
    if name.trim().is_empty() || name.len() > NAME_LEN_MAX || name.chars().any(char::is_control) {
        return Err(CliError::usage(format!(
            "--name must be 1-{NAME_LEN_MAX} bytes of text without control characters"
        )));
    }
    let mut line = format!(
        "  - {{name: {}, role: {}, sha256: {}",
        yaml_scalar(name),
        role.as_str(),
        hash_token(token)
    );
    if let Some(t) = expires_at {
        let at = humantime::parse_rfc3339_weak(t).map_err(|e| {
            CliError::usage(format!(
                "--expires-at `{t}` is not an RFC 3339 time ({e}); use e.g. 2027-01-01T00:00:00Z"
            ))
        })?;
        if at <= SystemTime::now() {
            return Err(CliError::usage(format!(
                "--expires-at {t} has already passed; give a time in the future"
            )));
        }
        line.push_str(&format!(", expires_at: {}", humantime::format_rfc3339_seconds(at)));
    }
    line.push('}');
    Ok(line)
}

/// A name as a YAML scalar: plain when that is safe, else double-quoted (JSON
/// string syntax, which YAML reads the same).
fn yaml_scalar(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if plain { name.to_owned() } else { serde_json::Value::String(name.to_owned()).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator::api::auth::Tokens;

    #[test]
    fn the_line_grants_the_token_its_role() {
        for name in ["ann", "Ann O'Hara: ops, {night}", "ci@example.com"] {
            let token = new_token();
            let line =
                tokens_file_line(name, Role::Admin, Some("2999-01-01T00:00:00Z"), &token).unwrap();
            let tokens = Tokens::parse("t.yaml", &format!("tokens:\n{line}\n")).unwrap();
            let caller = tokens.check(&token, SystemTime::now()).unwrap();
            assert_eq!((caller.name.as_str(), caller.role), (name, Role::Admin), "{line}");
            assert!(tokens.check("other", SystemTime::now()).is_none());
        }
    }

    #[test]
    fn bad_names_and_times_are_usage_errors() {
        for (name, at) in [
            ("", None),
            ("a\nb", None),
            ("ann", Some("tomorrow")),
            ("ann", Some("2001-01-01T00:00:00Z")),
        ] {
            let e = tokens_file_line(name, Role::Viewer, at, "t").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{name:?} {at:?}: {e}");
        }
    }
}
