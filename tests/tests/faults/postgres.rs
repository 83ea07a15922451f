//! A PostgreSQL server of the test's own, so that it may stop it
//! (`pg_ctl stop -m immediate`) and start it again on the same data.

use sea_orm::{ConnectionTrait, Database};
use skald_tests::process::free_port;
use skald_tests::token;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

/// A PostgreSQL server this test owns, so it may stop it: `initdb` into a
/// temporary directory, `pg_ctl` to start and stop (as the `postgres` user
/// when the test runs as root, since PostgreSQL refuses to run as root).
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("skald-pg-{}", token()));
        std::fs::create_dir_all(&dir).unwrap();
        let uid = Process::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres {
            let chown = Process::new("chown").arg("postgres:postgres").arg(&dir).status().unwrap();
            assert!(chown.success(), "cannot hand {} to the postgres user", dir.display());
        }
        let pg = Self { dir, port: free_port().unwrap(), as_postgres };
        let dir = pg.dir.display().to_string();
        pg.run("initdb", &["-D", &dir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .unwrap();
        pg.up();
        pg
    }

    fn bin(tool: &str) -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect())
            .unwrap_or_default();
        versions.sort();
        versions
            .into_iter()
            .rev()
            .map(|b| b.join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(tool))
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = if self.as_postgres {
            let mut c = Process::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Self::bin(tool));
            c
        } else {
            Process::new(Self::bin(tool))
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn up(&self) {
        let dir = self.dir.display().to_string();
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port
        );
        let log = format!("{dir}/postgres.log");
        self.run("pg_ctl", &["-D", &dir, "-l", &log, "-w", "-t", "60", "-o", &options, "start"])
            .unwrap();
    }

    pub fn stop_immediate(&self) {
        let dir = self.dir.display().to_string();
        self.run("pg_ctl", &["-D", &dir, "-m", "immediate", "-w", "stop"]).unwrap();
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub async fn create_database(&self, name: &str) -> String {
        let admin = Database::connect(self.url("postgres")).await.unwrap();
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
        admin.close().await.unwrap();
        self.url(name)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &dir, "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
