//! Connecting to NATS: who this process is on the bus, over what, and an
//! error that says how to fix it without ever printing a secret.
//!
//! Every Skald process (orchestrator, participants, CLI tools, benchmarks)
//! takes the same [`BusOptions`] from the same flags and environment
//! variables, so a deployment sets them once:
//!
//! | flag                  | environment          | what                                          |
//! |-----------------------|----------------------|-----------------------------------------------|
//! | `--nats-url`          | `NATS_URL`           | server URL(s), comma-separated; `user:password@` or `token@` in a URL is used as credentials and never printed |
//! | `--nats-user`         | `NATS_USER`          | user name (with `--nats-password`)            |
//! | `--nats-password`     | `NATS_PASSWORD`      | password                                      |
//! | `--nats-token`        | `NATS_TOKEN`         | token                                         |
//! | `--nats-nkey`         | `NATS_NKEY`          | file holding an nkey seed (`SU…`)             |
//! | `--nats-creds`        | `NATS_CREDS`         | `.creds` file (JWT and nkey seed)             |
//! | `--nats-tls`          | `NATS_TLS`           | require TLS (implied by the three below)      |
//! | `--nats-tls-ca`       | `NATS_TLS_CA`        | CA certificate(s) (PEM) to trust              |
//! | `--nats-tls-cert`     | `NATS_TLS_CERT`      | client certificate (PEM), for mutual TLS      |
//! | `--nats-tls-key`      | `NATS_TLS_KEY`       | the client certificate's key (PEM)            |
//! | `--nats-inbox-prefix` | `NATS_INBOX_PREFIX`  | subject prefix of this client's reply inboxes |
//! | `--delivery`          | `SKALD_DELIVERY`     | how commands and replies travel: `direct` (default) or `jetstream` ([`Delivery`]) |
//!
//! At most one kind of credential may be given. A process that starts
//! another Skald process passes them on through the environment
//! ([`BusOptions::child_env`]), never on a command line.

use crate::TransportError;
use std::path::PathBuf;
use std::time::Duration;

/// How long a connection attempt may take before it is an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The URL used when none is given.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// Longest URL list, credential or path accepted.
const VALUE_LEN_MAX: usize = 4_096;

/// Where the bus is and who this process is on it.
#[derive(Clone, Default, clap::Args)]
pub struct BusOptions {
    /// NATS server URL(s), comma-separated. `nats://user:password@host:port`
    /// and `nats://token@host:port` are used as credentials and never printed.
    #[arg(long = "nats-url", env = "NATS_URL", default_value = DEFAULT_URL, hide_env_values = true)]
    pub url: String,
    /// NATS user name (with `--nats-password`).
    #[arg(long = "nats-user", env = "NATS_USER", requires = "password")]
    pub user: Option<String>,
    /// NATS password of `--nats-user`.
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    /// NATS authentication token.
    #[arg(long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding this identity's nkey seed.
    #[arg(long = "nats-nkey", env = "NATS_NKEY", value_name = "FILE")]
    pub nkey_file: Option<PathBuf>,
    /// NATS `.creds` file (user JWT and nkey seed).
    #[arg(long = "nats-creds", env = "NATS_CREDS", value_name = "FILE")]
    pub creds_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    #[arg(long = "nats-tls", env = "NATS_TLS")]
    pub tls: bool,
    /// CA certificate(s) (PEM) that signed the NATS server's certificate.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with `--nats-tls-key`).
    #[arg(
        long = "nats-tls-cert",
        env = "NATS_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Key (PEM) of `--nats-tls-cert`.
    #[arg(long = "nats-tls-key", env = "NATS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Subject prefix of this client's reply inboxes (`_INBOX` by default); a
    /// bus that gives each identity its own inboxes lets it subscribe only there.
    #[arg(long = "nats-inbox-prefix", env = "NATS_INBOX_PREFIX")]
    pub inbox_prefix: Option<String>,
    /// How commands and replies travel: `direct` (core NATS to the live
    /// participant; the orchestrator's outbox sends again what is not
    /// answered) or `jetstream` (stored in streams and acknowledged). The
    /// orchestrator and every participant must use the same.
    #[arg(long = "delivery", env = "SKALD_DELIVERY", value_enum, default_value_t = Delivery::default())]
    pub delivery: Delivery,
}

/// How commands reach participants and replies reach the orchestrator
/// (DESIGN.md, wire protocol; docs/delivery.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Delivery {
    /// Through the commands and replies streams: each message is stored,
    /// delivered from the stream and acknowledged (8 messages per command).
    #[value(name = "jetstream")]
    JetStream,
    /// The default. On core NATS subjects outside the streams
    /// (`<prefix>.direct.…`): a command goes to a live replica of its
    /// participant and the reply comes straight back (4 messages per
    /// command). Nothing is stored on the bus: the outbox row stays until the
    /// reply is recorded and is sent again, with growing pauses, until then.
    #[default]
    Direct,
}

impl Delivery {
    /// The value of `--delivery` / `SKALD_DELIVERY` that selects it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JetStream => "jetstream",
            Self::Direct => "direct",
        }
    }
}

impl std::fmt::Debug for BusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |set: bool| if set { "<set>" } else { "<none>" };
        f.debug_struct("BusOptions")
            .field("url", &self.redacted_url())
            .field("user", &self.user)
            .field("password", &secret(self.password.is_some()))
            .field("token", &secret(self.token.is_some()))
            .field("nkey_file", &self.nkey_file)
            .field("creds_file", &self.creds_file)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("delivery", &self.delivery)
            .finish()
    }
}

/// The credential a connection presents.
enum Credential {
    None,
    UserPassword(String, String),
    Token(String),
    Nkey(PathBuf),
    Creds(PathBuf),
}

/// What was wrong with the options; never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum BusOptionsError {
    #[error("give at most one NATS credential; got {0}")]
    SeveralCredentials(String),
    #[error(
        "the NATS URLs carry different credentials; give them once, with --nats-user/--nats-password or --nats-token"
    )]
    MixedUrlCredentials,
    #[error("{what} is over {VALUE_LEN_MAX} bytes")]
    TooLong { what: &'static str },
    #[error("cannot read the NATS {what} file {path}: {message}")]
    File { what: &'static str, path: PathBuf, message: String },
    #[error(
        "the NATS inbox prefix `{0}` must be subject tokens (letters, digits, `_`, `-`, separated by `.`)"
    )]
    InboxPrefix(String),
}

/// One server address with its credentials taken out.
struct SplitUrl {
    address: String,
    credential: Option<(String, Option<String>)>,
}

fn split_url(url: &str) -> SplitUrl {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return SplitUrl { address: url.to_owned(), credential: None };
    };
    let credential = match userinfo.split_once(':') {
        Some((user, password)) => (decode(user), Some(decode(password))),
        None => (decode(userinfo), None),
    };
    let address = match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    };
    SplitUrl { address, credential: Some(credential) }
}

/// Percent-decoding of a URL's user or password (`%40` is `@`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl BusOptions {
    /// Options for `url` alone (credentials, if any, inside it).
    #[must_use]
    pub fn plain(url: &str) -> Self {
        Self { url: url.to_owned(), ..Self::default() }
    }

    /// The server URLs with any credentials taken out: safe to print.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        self.url.split(',').map(|u| split_url(u).address).collect::<Vec<_>>().join(",")
    }

    /// True when the connection must use TLS.
    #[must_use]
    pub fn tls_required(&self) -> bool {
        self.tls
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.url.split(',').any(|u| u.trim().starts_with("tls://"))
    }

    fn credential(&self) -> Result<(Vec<String>, Credential), BusOptionsError> {
        if self.url.len() > VALUE_LEN_MAX {
            return Err(BusOptionsError::TooLong { what: "the NATS URL list" });
        }
        for (what, value) in [
            ("the NATS user", &self.user),
            ("the NATS password", &self.password),
            ("the NATS token", &self.token),
            ("the NATS inbox prefix", &self.inbox_prefix),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > VALUE_LEN_MAX) {
                return Err(BusOptionsError::TooLong { what });
            }
        }
        let split: Vec<SplitUrl> = self.url.split(',').map(split_url).collect();
        let mut in_urls = split.iter().filter_map(|s| s.credential.clone());
        let from_url = in_urls.next();
        if in_urls.any(|other| Some(&other) != from_url.as_ref()) {
            return Err(BusOptionsError::MixedUrlCredentials);
        }
        let mut given: Vec<(&str, Credential)> = Vec::new();
        match from_url {
            Some((user, Some(password))) => {
                given.push((
                    "user and password in the URL",
                    Credential::UserPassword(user, password),
                ));
            }
            Some((token, None)) => given.push(("token in the URL", Credential::Token(token))),
            None => {}
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            given.push((
                "--nats-user/--nats-password",
                Credential::UserPassword(user.clone(), password.clone()),
            ));
        }
        if let Some(token) = &self.token {
            given.push(("--nats-token", Credential::Token(token.clone())));
        }
        if let Some(path) = &self.nkey_file {
            given.push(("--nats-nkey", Credential::Nkey(path.clone())));
        }
        if let Some(path) = &self.creds_file {
            given.push(("--nats-creds", Credential::Creds(path.clone())));
        }
        let addresses = split.into_iter().map(|s| s.address).collect();
        if given.len() > 1 {
            let names = given.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
            return Err(BusOptionsError::SeveralCredentials(names));
        }
        Ok((addresses, given.pop().map_or(Credential::None, |(_, c)| c)))
    }

    /// The connect options these bus options describe (without connecting).
    ///
    /// # Errors
    /// [`BusOptionsError`] for contradictory options or an unreadable file.
    pub async fn connect_options(
        &self,
        name: &str,
    ) -> Result<(Vec<String>, async_nats::ConnectOptions), BusOptionsError> {
        let (addresses, credential) = self.credential()?;
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT)
            .require_tls(self.tls_required());
        options = match credential {
            Credential::None => options,
            Credential::UserPassword(user, password) => options.user_and_password(user, password),
            Credential::Token(token) => options.token(token),
            Credential::Nkey(path) => {
                let seed = read_secret(&path, "nkey seed")?;
                options.nkey(seed.trim().to_owned())
            }
            Credential::Creds(path) => options.credentials_file(&path).await.map_err(|e| {
                BusOptionsError::File { what: "credentials", path, message: e.to_string() }
            })?,
        };
        if let Some(ca) = &self.tls_ca {
            readable(ca, "CA certificate")?;
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            readable(cert, "client certificate")?;
            readable(key, "client key")?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(prefix) = &self.inbox_prefix {
            if !prefix.split('.').all(sagas::protocol::is_subject_token) {
                return Err(BusOptionsError::InboxPrefix(prefix.clone()));
            }
            options = options.custom_inbox_prefix(prefix);
        }
        Ok((addresses, options))
    }

    /// Connect as `name`, failing fast when NATS is not there or refuses us.
    ///
    /// # Errors
    /// [`TransportError::Options`] for bad options, [`TransportError::Connect`]
    /// (whose message says how to start nats-server) when the connection fails.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, TransportError> {
        let (addresses, options) = self.connect_options(name).await?;
        let servers: Vec<async_nats::ServerAddr> =
            addresses.iter().map(|a| a.parse()).collect::<Result<_, _>>().map_err(
                |e: std::io::Error| TransportError::BadUrl {
                    url: self.redacted_url(),
                    message: e.to_string(),
                },
            )?;
        options
            .connect(servers)
            .await
            .map_err(|source| TransportError::Connect { url: self.redacted_url(), source })
    }

    /// The environment that gives a child process these same options (its
    /// `NATS_*` variables), so secrets never travel on a command line. Unset
    /// options are listed with `None`: remove them from the child's
    /// environment so the parent's own do not leak through.
    #[must_use]
    pub fn child_env(&self) -> Vec<(&'static str, Option<std::ffi::OsString>)> {
        let text = |v: &Option<String>| v.as_ref().map(Into::into);
        let path = |v: &Option<PathBuf>| v.as_ref().map(|p| p.as_os_str().to_owned());
        vec![
            ("NATS_URL", Some(self.url.clone().into())),
            ("NATS_USER", text(&self.user)),
            ("NATS_PASSWORD", text(&self.password)),
            ("NATS_TOKEN", text(&self.token)),
            ("NATS_NKEY", path(&self.nkey_file)),
            ("NATS_CREDS", path(&self.creds_file)),
            ("NATS_TLS", self.tls.then(|| "true".into())),
            ("NATS_TLS_CA", path(&self.tls_ca)),
            ("NATS_TLS_CERT", path(&self.tls_cert)),
            ("NATS_TLS_KEY", path(&self.tls_key)),
            ("NATS_INBOX_PREFIX", text(&self.inbox_prefix)),
            ("SKALD_DELIVERY", Some(self.delivery.as_str().into())),
        ]
    }

    /// Apply [`BusOptions::child_env`] to a command about to be spawned.
    pub fn pass_to(&self, command: &mut std::process::Command) {
        for (key, value) in self.child_env() {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
    }
}

fn read_secret(path: &PathBuf, what: &'static str) -> Result<String, BusOptionsError> {
    let fail = |message: String| BusOptionsError::File { what, path: path.clone(), message };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > VALUE_LEN_MAX as u64 {
        return Err(fail(format!("over {VALUE_LEN_MAX} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8".to_owned()))
}

fn readable(path: &PathBuf, what: &'static str) -> Result<(), BusOptionsError> {
    std::fs::metadata(path).map(drop).map_err(|e| BusOptionsError::File {
        what,
        path: path.clone(),
        message: e.to_string(),
    })
}

/// Connect to the NATS server(s) at `url` as `name` (credentials, if any, in
/// the URL), failing fast when it is not there.
///
/// # Errors
/// See [`BusOptions::connect`].
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, TransportError> {
    BusOptions::plain(url).connect(name).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_in_a_url_are_taken_out_and_never_printed() {
        let o = BusOptions::plain("nats://ledger:s%40cret@h1:4222,nats://ledger:s%40cret@h2:4222");
        assert_eq!(o.redacted_url(), "nats://h1:4222,nats://h2:4222");
        let (addresses, credential) = o.credential().unwrap();
        assert_eq!(addresses, ["nats://h1:4222", "nats://h2:4222"]);
        assert!(
            matches!(credential, Credential::UserPassword(u, p) if u == "ledger" && p == "s@cret")
        );
        assert!(!format!("{o:?}").contains("cret"));
        let token = BusOptions::plain("tok3n@127.0.0.1:4222");
        assert_eq!(token.redacted_url(), "127.0.0.1:4222");
        assert!(matches!(token.credential().unwrap().1, Credential::Token(t) if t == "tok3n"));
    }

    #[test]
    fn one_credential_at_most() {
        let o = BusOptions { token: Some("t".into()), ..BusOptions::plain("nats://u:p@h:1") };
        let e = o.credential().err().unwrap().to_string();
        assert!(e.contains("user and password in the URL, --nats-token"), "{e}");
        let mixed = BusOptions::plain("nats://a:b@h:1,nats://c:d@h:2");
        assert!(matches!(mixed.credential(), Err(BusOptionsError::MixedUrlCredentials)));
    }

    #[test]
    fn tls_is_required_when_asked_for_or_implied() {
        assert!(!BusOptions::plain(DEFAULT_URL).tls_required());
        assert!(BusOptions::plain("tls://h:4222").tls_required());
        let ca = BusOptions { tls_ca: Some("ca.pem".into()), ..BusOptions::plain(DEFAULT_URL) };
        assert!(ca.tls_required());
    }

    #[test]
    fn children_get_the_options_by_environment() {
        let o = BusOptions {
            password: Some("pw".into()),
            user: Some("u".into()),
            ..BusOptions::plain("nats://h:1")
        };
        let env = o.child_env();
        let get = |k: &str| env.iter().find(|(key, _)| *key == k).unwrap().1.clone();
        assert_eq!(get("NATS_PASSWORD"), Some("pw".into()));
        assert_eq!(get("NATS_TOKEN"), None);
    }
}
