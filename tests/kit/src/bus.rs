//! A secured bus the test owns: a private `nats-server` configured as
//! `skald bus init` configures one (an nkey identity per process, only its
//! part's subjects, anonymous clients refused), optionally with TLS and
//! client certificates (mutual TLS) from a throwaway certificate authority.

use crate::process::NatsServer;
use anyhow::{Context, Result};
use sagas::protocol::Namespace;
use skald_transport::BusOptions;
use skald_transport::access::{self, BusFiles, Server, ServerTls};
use std::path::{Path, PathBuf};

/// The certificate files of a throwaway CA: the server's, and one client
/// certificate every identity presents.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// A new CA, a server certificate for 127.0.0.1 and localhost, and a
    /// client certificate, all written into `dir`.
    ///
    /// # Errors
    /// When a key or certificate cannot be made or written.
    pub fn write(dir: &Path) -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| -> Result<(String, String)> {
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(names)?.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()])?;
        let (client_cert, client_key) = leaf(vec!["skald-test-client".into()])?;
        let files = Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        for (path, text) in [
            (&files.ca, ca_cert.pem()),
            (&files.server_cert, server_cert),
            (&files.server_key, server_key),
            (&files.client_cert, client_cert),
            (&files.client_key, client_key),
        ] {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(files)
    }
}

/// A private nats-server with Skald's permissions for one namespace.
#[derive(Debug)]
pub struct SecuredBus {
    pub server: NatsServer,
    pub tls: Option<TlsFiles>,
    files: BusFiles,
    dir: PathBuf,
}

impl SecuredBus {
    /// Start one for `ns` with identities `orchestrator`, each of
    /// `participants` and each of `starters`; with `tls`, clients must use
    /// TLS and present a certificate of the bus's CA.
    ///
    /// # Errors
    /// When the files cannot be written or the server does not start.
    pub fn start(
        ns: &Namespace,
        participants: &[&str],
        starters: &[&str],
        tls: bool,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("skald-bus-{}", crate::token()));
        std::fs::create_dir_all(&dir)?;
        let tls = if tls { Some(TlsFiles::write(&dir)?) } else { None };
        let port = crate::free_port()?;
        let text = |p: &Path| p.display().to_string();
        let server = Server {
            host: "127.0.0.1".into(),
            port,
            store_dir: text(&dir.join("jetstream")),
            tls: tls.as_ref().map(|t| ServerTls {
                cert_file: text(&t.server_cert),
                key_file: text(&t.server_key),
                ca_file: Some(text(&t.ca)),
            }),
        };
        let files =
            access::write_bus(&dir, ns, &server, &access::identities(participants, starters))?;
        let server = NatsServer::with_config(port, &files.config, &dir)?;
        Ok(Self { server, tls, files, dir })
    }

    /// How `name` connects: its nkey, its inboxes and, on a TLS bus, the CA
    /// and the client certificate.
    #[must_use]
    /// An identity the bus was not started with connects anonymously.
    pub fn options(&self, name: &str) -> BusOptions {
        let anonymous = self.anonymous();
        match self.files.options_for(name, &anonymous.url) {
            Some(identity) => BusOptions {
                nkey_file: identity.nkey_file,
                inbox_prefix: identity.inbox_prefix,
                ..anonymous
            },
            None => anonymous,
        }
    }

    /// How a client without an identity would connect (TLS, if the bus has it).
    #[must_use]
    pub fn anonymous(&self) -> BusOptions {
        let tls = self.tls.as_ref();
        BusOptions {
            tls_ca: tls.map(|t| t.ca.clone()),
            tls_cert: tls.map(|t| t.client_cert.clone()),
            tls_key: tls.map(|t| t.client_key.clone()),
            ..BusOptions::plain(&self.server.url())
        }
    }
}

impl Drop for SecuredBus {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
