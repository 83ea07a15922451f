//! Who may say what on the bus: a nats-server configuration that gives each
//! Skald process an identity and only the subjects its part needs.
//!
//! - The **orchestrator** alone may publish commands (`<prefix>.cmd.>`), read
//!   the replies stream, answer start requests and ask participants what they
//!   recorded (`<prefix>.inspect.>`, the audit).
//! - A **participant** `X` may read only its own durable consumer (`X`, filtered
//!   on `<prefix>.cmd.X.>`; the filter is part of the permitted subject, so it
//!   cannot widen it), publish only replies that name it
//!   (`<prefix>.reply.*.X`), answer the inspections sent to it
//!   (`<prefix>.inspect.X`), and hand events from outside to waiting sagas
//!   (`<prefix>.signal.>`).
//! - With direct delivery the same holds on the `<prefix>.direct.` subjects:
//!   only the orchestrator publishes commands there and reads replies; `X`
//!   reads only `<prefix>.direct.cmd.X.>` and answers only on
//!   `<prefix>.direct.reply.*.X`.
//! - A **starter** may publish start requests (`<prefix>.start.>`) and events
//!   for waiting sagas (`<prefix>.signal.>`), and nothing else.
//!
//! Identities are nkeys: the configuration holds only public keys, each
//! process keeps its seed in a file of its own. Every identity gets its own
//! reply inboxes (`_INBOX_<name>`), so no one can read another's answers.
//! Anyone without an identity is refused.
//!
//! Only features of nats-server 2.9 are used (DESIGN.md, wire protocol).

use crate::BusOptions;
use sagas::protocol::Namespace;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The orchestrator's identity name.
pub const ORCHESTRATOR: &str = "orchestrator";

/// What an identity is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Orchestrator,
    Participant,
    Starter,
}

/// One identity on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// A subject token: the participant's name for a participant.
    pub name: String,
    pub role: Role,
    /// The nkey public key (`U…`) it signs in with.
    pub public_key: String,
}

impl Identity {
    /// The subject prefix of this identity's reply inboxes (`NATS_INBOX_PREFIX`).
    #[must_use]
    pub fn inbox_prefix(&self) -> String {
        inbox_prefix(&self.name)
    }
}

/// A new identity with a fresh nkey: the identity and its seed (`SU…`, the
/// secret the process signs in with; keep it in a file only it can read).
///
/// # Errors
/// When the seed cannot be encoded (never for a fresh user key).
pub fn new_identity(name: &str, role: Role) -> Result<(Identity, String), String> {
    let key = nkeys::KeyPair::new_user();
    let seed = key.seed().map_err(|e| format!("cannot encode the nkey seed of `{name}`: {e}"))?;
    Ok((Identity { name: name.to_owned(), role, public_key: key.public_key() }, seed))
}

/// The subject prefix of `name`'s reply inboxes.
#[must_use]
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX_{name}")
}

/// TLS for the server's client port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert_file: String,
    pub key_file: String,
    /// When set, clients must present a certificate this CA signed (mutual TLS).
    pub ca_file: Option<String>,
}

/// Where the server listens and keeps JetStream's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub store_dir: String,
    pub tls: Option<ServerTls>,
}

/// The subjects one identity may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests sent to it (the reply subject of a message it received).
    pub answer_requests: bool,
}

/// The permissions of `identity` under `ns`.
#[must_use]
pub fn permissions(ns: &Namespace, identity: &Identity) -> Permissions {
    let p = ns.prefix();
    let commands = ns.commands_stream();
    let replies = ns.replies_stream();
    let ended = ns.ended_stream();
    let inbox = format!("{}.>", identity.inbox_prefix());
    let name = &identity.name;
    match identity.role {
        Role::Orchestrator => Permissions {
            publish: vec![
                format!("{p}.cmd.>"),
                format!("{p}.ended.>"),
                format!("{p}.inspect.>"),
                "$JS.API.INFO".to_owned(),
                format!("$JS.API.STREAM.*.{commands}"),
                format!("$JS.API.STREAM.*.{replies}"),
                format!("$JS.API.STREAM.*.{ended}"),
                format!("$JS.API.CONSUMER.*.{replies}"),
                format!("$JS.API.CONSUMER.*.{replies}.>"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{replies}.*"),
                format!("$JS.API.CONSUMER.INFO.{commands}.*"),
                format!("$JS.API.CONSUMER.NAMES.{commands}"),
                format!("$JS.ACK.{replies}.>"),
                // Direct delivery (`--delivery direct`): commands outside the streams.
                ns.direct(&format!("{p}.cmd.>")),
            ],
            subscribe: vec![
                format!("{p}.start.>"),
                format!("{p}.signal.>"),
                ns.direct(&format!("{p}.reply.>")),
                inbox,
            ],
            answer_requests: true,
        },
        Role::Participant => Permissions {
            publish: vec![
                ns.replies_of(name),
                // Events from outside it hands to waiting sagas (a provider's webhook).
                format!("{p}.signal.>"),
                "$JS.API.INFO".to_owned(),
                format!("$JS.API.STREAM.INFO.{commands}"),
                format!("$JS.API.STREAM.INFO.{replies}"),
                format!("$JS.API.CONSUMER.INFO.{commands}.{name}"),
                format!(
                    "$JS.API.CONSUMER.CREATE.{commands}.{name}.{}",
                    ns.participant_filter(name)
                ),
                format!("$JS.API.CONSUMER.MSG.NEXT.{commands}.{name}"),
                format!("$JS.ACK.{commands}.{name}.>"),
                ns.direct(&ns.replies_of(name)),
            ],
            subscribe: vec![
                ns.inspect_subject(name),
                ns.direct(&ns.participant_filter(name)),
                inbox,
            ],
            // The answer to an inspection goes to the asker's reply subject.
            answer_requests: true,
        },
        // Starts sagas, and nothing else: no JetStream rights at all. (Who
        // may create a consumer may name any deliver subject, and the server
        // delivers there without the creator's publish permission: a starter
        // could aim the ends stream at command subjects.)
        Role::Starter => Permissions {
            publish: vec![format!("{p}.start.>"), format!("{p}.signal.>")],
            subscribe: vec![inbox],
            answer_requests: false,
        },
    }
}

fn quoted_list(items: &[String]) -> String {
    items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

/// The nats-server configuration (2.9 syntax) for `identities` under `ns`.
#[must_use]
pub fn server_config(ns: &Namespace, server: &Server, identities: &[Identity]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Skald bus for prefix `{}`: written by `skald bus init`; regenerate rather than edit.\n\
         # Anonymous clients are refused; each identity may use only its part's subjects.",
        ns.prefix()
    );
    let _ = writeln!(out, "host: \"{}\"\nport: {}", server.host, server.port);
    let _ = writeln!(out, "jetstream {{\n  store_dir: \"{}\"\n}}", server.store_dir);
    if let Some(tls) = &server.tls {
        let _ = writeln!(out, "tls {{");
        let _ =
            writeln!(out, "  cert_file: \"{}\"\n  key_file: \"{}\"", tls.cert_file, tls.key_file);
        if let Some(ca) = &tls.ca_file {
            let _ = writeln!(out, "  ca_file: \"{ca}\"\n  verify: true");
        }
        let _ = writeln!(out, "  timeout: 2\n}}");
    }
    let _ = writeln!(out, "authorization {{\n  users: [");
    for identity in identities {
        let p = permissions(ns, identity);
        let _ = writeln!(out, "    # {} ({:?})", identity.name, identity.role);
        let _ = writeln!(out, "    {{\n      nkey: \"{}\"", identity.public_key);
        let _ = writeln!(out, "      permissions: {{");
        let _ = writeln!(out, "        publish: {{ allow: [{}] }}", quoted_list(&p.publish));
        let _ = writeln!(out, "        subscribe: {{ allow: [{}] }}", quoted_list(&p.subscribe));
        if p.answer_requests {
            let _ = writeln!(out, "        allow_responses: true");
        }
        let _ = writeln!(out, "      }}\n    }}");
    }
    let _ = writeln!(out, "  ]\n}}");
    out
}

/// The identities of a bus: the orchestrator first, then each participant,
/// then each starter.
#[must_use]
pub fn identities<'a>(participants: &[&'a str], starters: &[&'a str]) -> Vec<(&'a str, Role)> {
    let mut names = vec![(ORCHESTRATOR, Role::Orchestrator)];
    names.extend(participants.iter().map(|p| (*p, Role::Participant)));
    names.extend(starters.iter().map(|s| (*s, Role::Starter)));
    names
}

/// The files of a bus, as [`write_bus`] wrote them.
#[derive(Debug, Clone)]
pub struct BusFiles {
    pub config: PathBuf,
    /// Name and seed file of each identity.
    pub identities: Vec<(String, PathBuf)>,
}

impl BusFiles {
    /// How the process of identity `name` connects to the server at `url`.
    #[must_use]
    pub fn options_for(&self, name: &str, url: &str) -> Option<BusOptions> {
        let (_, seed) = self.identities.iter().find(|(n, _)| n == name)?;
        Some(BusOptions {
            nkey_file: Some(seed.clone()),
            inbox_prefix: Some(inbox_prefix(name)),
            ..BusOptions::plain(url)
        })
    }
}

/// Into `dir` (which must exist): a fresh nkey per identity of `names`, its
/// seed in `NAME.nk` and `NATS_NKEY`/`NATS_INBOX_PREFIX` in `NAME.env` (both
/// mode 0600, replacing what was there), and `nats-server.conf` for `server`.
///
/// # Errors
/// When a key cannot be made or a file cannot be written.
pub fn write_bus(
    dir: &Path,
    ns: &Namespace,
    server: &Server,
    names: &[(&str, Role)],
) -> std::io::Result<BusFiles> {
    let mut identities = Vec::new();
    let mut files = Vec::new();
    for (name, role) in names {
        let (identity, seed) = new_identity(name, *role).map_err(std::io::Error::other)?;
        let seed_file = dir.join(format!("{name}.nk"));
        write_private(&seed_file, &format!("{seed}\n"))?;
        let env = format!(
            "NATS_NKEY={}\nNATS_INBOX_PREFIX={}\n",
            std::path::absolute(&seed_file)?.display(),
            identity.inbox_prefix()
        );
        write_private(&dir.join(format!("{name}.env")), &env)?;
        files.push(((*name).to_owned(), seed_file));
        identities.push(identity);
    }
    let config = dir.join("nats-server.conf");
    std::fs::write(&config, server_config(ns, server, &identities))?;
    Ok(BusFiles { config, identities: files })
}

/// Write `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(name: &str, role: Role) -> Identity {
        Identity { name: name.into(), role, public_key: format!("U{name}") }
    }

    #[test]
    fn a_participant_may_answer_only_for_itself_and_read_only_its_commands() {
        let ns = Namespace::new("t1").unwrap();
        let p = permissions(&ns, &id("ledger", Role::Participant));
        assert!(p.publish.contains(&"t1.reply.*.ledger".to_owned()));
        assert!(
            p.publish
                .contains(&"$JS.API.CONSUMER.CREATE.T1_COMMANDS.ledger.t1.cmd.ledger.>".to_owned())
        );
        assert!(!p.publish.iter().any(|s| s.starts_with("t1.cmd") || s.starts_with("t1.start")));
        assert!(p.publish.contains(&"t1.signal.>".to_owned()), "it hands webhooks to sagas");
        assert_eq!(p.subscribe, ["t1.inspect.ledger", "t1.direct.cmd.ledger.>", "_INBOX_ledger.>"]);
        assert!(p.publish.contains(&"t1.direct.reply.*.ledger".to_owned()));
        assert!(!p.publish.iter().any(|s| s.starts_with("t1.direct.cmd")));
        assert!(p.answer_requests, "it answers the inspections sent to it");
    }

    #[test]
    fn only_the_orchestrator_publishes_commands() {
        let ns = Namespace::new("t1").unwrap();
        let o = permissions(&ns, &id("orchestrator", Role::Orchestrator));
        assert!(o.publish.contains(&"t1.cmd.>".to_owned()));
        assert!(o.publish.contains(&"t1.direct.cmd.>".to_owned()));
        assert!(o.subscribe.contains(&"t1.direct.reply.>".to_owned()));
        assert!(o.answer_requests);
        let s = permissions(&ns, &id("api", Role::Starter));
        assert_eq!(
            s.publish,
            ["t1.start.>", "t1.signal.>"],
            "no JetStream rights: no consumer to aim anywhere"
        );
    }

    #[test]
    fn the_configuration_names_every_identity_by_public_key() {
        let ns = Namespace::new("t1").unwrap();
        let server =
            Server { host: "127.0.0.1".into(), port: 4333, store_dir: "/tmp/js".into(), tls: None };
        let text = server_config(
            &ns,
            &server,
            &[id("orchestrator", Role::Orchestrator), id("ledger", Role::Participant)],
        );
        assert!(text.contains("port: 4333"));
        assert!(text.contains("nkey: \"Uorchestrator\""));
        assert!(text.contains("nkey: \"Uledger\""));
        assert!(text.contains("allow_responses: true"));
        assert!(!text.contains("tls {"));
    }
}
