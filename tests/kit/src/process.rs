//! Real processes for tests and tools: free ports, children that are killed
//! when their guard goes however the test ends, programs built next to this
//! one, and a `nats-server` with JetStream that the test owns (so it may kill
//! and restart it).

use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(20);
/// How long a `nats-server` may take to listen.
const NATS_START_WITHIN: Duration = Duration::from_secs(10);

/// A child process killed (`kill -9`) on drop if it still runs.
#[derive(Debug)]
pub struct ChildGuard {
    pub child: Child,
    /// What to call it in messages.
    pub name: String,
}

impl ChildGuard {
    /// Start `cmd` with stdin closed.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child =
            cmd.stdin(Stdio::null()).spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Self { child, name: name.to_owned() })
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -TERM` and wait for the exit status; `kill -9` and an error when
    /// it has not exited `within`.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process outlives `within`.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !sent.success() {
            bail!("cannot send SIGTERM to {} (pid {pid})", self.name);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked: bind it soon).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until something listens on `port` of 127.0.0.1.
///
/// # Errors
/// When nothing does within `within`.
pub fn wait_port(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {within:?}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// The program `name` built into the same target directory as the running
/// one (`target/<profile>/`, also when this is a test binary in its `deps/`),
/// else `name` alone, to be found on PATH.
#[must_use]
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent);
    let candidates = dir.into_iter().flat_map(|d| {
        let profile = (d.file_name() == Some("deps".as_ref())).then(|| d.parent()).flatten();
        [Some(d), profile].into_iter().flatten()
    });
    candidates.map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

/// A `nats-server` with JetStream on a random port of 127.0.0.1, owned by the
/// test: killed, and its store deleted, on drop.
#[derive(Debug)]
pub struct NatsServer {
    pub port: u16,
    store_dir: PathBuf,
    /// A configuration file to start with (it names the port and the store).
    config: Option<PathBuf>,
    /// More command-line arguments (a cluster node's name and routes).
    extra_args: Vec<String>,
    process: Option<ChildGuard>,
}

impl NatsServer {
    /// Start one and wait until it listens.
    ///
    /// # Errors
    /// When `nats-server` is not installed or does not listen in time.
    pub fn start() -> Result<Self> {
        let store_dir = std::env::temp_dir().join(format!("skald-nats-{}", crate::token()));
        std::fs::create_dir_all(&store_dir)?;
        let mut server = Self {
            port: free_port()?,
            store_dir,
            config: None,
            extra_args: Vec::new(),
            process: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// Start one from `config` (which must say `port` and a JetStream
    /// `store_dir` inside `owned_dir`) and wait until it listens on `port`.
    /// `owned_dir` is deleted on drop.
    ///
    /// # Errors
    /// When `nats-server` is not installed or does not listen in time.
    pub fn with_config(port: u16, config: &Path, owned_dir: &Path) -> Result<Self> {
        let mut server = Self {
            port,
            store_dir: owned_dir.to_owned(),
            config: Some(config.to_owned()),
            extra_args: Vec::new(),
            process: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port with the same JetStream store.
    ///
    /// # Errors
    /// When it cannot be started or does not listen in time.
    pub fn restart(&mut self) -> Result<()> {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let mut cmd = Command::new(binary);
        match &self.config {
            Some(config) => cmd.arg("-c").arg(config),
            None => cmd
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
                .arg(&self.store_dir),
        };
        cmd.args(&self.extra_args).stdout(Stdio::null()).stderr(Stdio::null());
        self.process = Some(ChildGuard::spawn("nats-server", &mut cmd)?);
        wait_port(self.port, NATS_START_WITHIN)
    }

    /// `kill -9` the server.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill9();
        }
    }
}

/// Three (or more) `nats-server`s with JetStream clustered on 127.0.0.1, each
/// on its own client port, cluster port and store; each node can be killed
/// and restarted on its store. Streams may have as many replicas as nodes.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Start `size` nodes routed to each other and wait until each listens.
    ///
    /// # Errors
    /// When `nats-server` is not installed or a node does not listen in time.
    pub fn start(size: usize) -> Result<Self> {
        let name = format!("skald-{}", crate::token());
        let cluster_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let store_dir = std::env::temp_dir().join(format!("{name}-n{i}"));
            std::fs::create_dir_all(&store_dir)?;
            let routes: Vec<String> = cluster_ports
                .iter()
                .filter(|p| *p != cluster_port)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            let extra_args = vec![
                "--name".to_owned(),
                format!("{name}-n{i}"),
                "--cluster_name".to_owned(),
                name.clone(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{cluster_port}"),
                "--routes".to_owned(),
                routes.join(","),
            ];
            let mut node = NatsServer {
                port: free_port()?,
                store_dir,
                config: None,
                extra_args,
                process: None,
            };
            node.restart()?;
            nodes.push(node);
        }
        Ok(Self { nodes })
    }

    /// Every node's URL, comma-separated: what clients connect with.
    #[must_use]
    pub fn url(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// Wait until the cluster can place a stream with a replica on every
    /// node (its JetStream meta leader is elected and every node has joined).
    ///
    /// # Errors
    /// When it cannot within `within`.
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let probe = format!("PROBE_{}", crate::token().to_ascii_uppercase());
        let mut last = String::new();
        while Instant::now() < deadline {
            let attempt = async {
                let servers: Vec<async_nats::ServerAddr> =
                    self.nodes.iter().map(|n| n.url().parse()).collect::<Result<_, _>>()?;
                let client = async_nats::connect(servers).await?;
                let js = async_nats::jetstream::new(client);
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: probe.clone(),
                    subjects: vec![format!("{}.probe", probe.to_ascii_lowercase())],
                    num_replicas: self.nodes.len(),
                    ..Default::default()
                })
                .await?;
                js.delete_stream(&probe).await?;
                Ok::<_, anyhow::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".to_owned(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("the NATS cluster cannot place a stream on every node: {last}")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_guarded_child_is_killed_on_drop_and_terminated_on_request() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        let pid = guard.pid().to_string();
        drop(guard);
        let alive = Command::new("kill").args(["-0", &pid]).stderr(Stdio::null()).status();
        assert!(!alive.unwrap().success(), "killed on drop");

        let mut guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        let status = guard.terminate(Duration::from_secs(10)).unwrap();
        assert!(!status.success(), "ended by the signal: {status}");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let err = ChildGuard::spawn("ghost", &mut Command::new("/no/such/program")).unwrap_err();
        assert!(err.to_string().contains("cannot start ghost"), "{err}");
    }

    #[test]
    fn a_free_port_is_free_and_waiting_on_it_fails() {
        let port = free_port().unwrap();
        assert!(wait_port(port, Duration::from_millis(50)).is_err());
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        wait_port(listener.local_addr().unwrap().port(), Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_sibling_binary_is_found_next_to_the_test_or_left_to_path() {
        assert_eq!(sibling_binary("no-such-program"), PathBuf::from("no-such-program"));
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(sibling_binary(name), exe);
    }

    #[test]
    fn a_private_nats_server_listens_and_stops() {
        let mut nats = NatsServer::start().unwrap();
        assert!(nats.url().ends_with(&nats.port.to_string()));
        nats.kill();
        assert!(wait_port(nats.port, Duration::from_millis(50)).is_err());
        nats.restart().unwrap();
        wait_port(nats.port, Duration::from_secs(1)).unwrap();
    }
}
