//! A throw-away PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl`
//! starts `postgres` on a free loopback port, and every test gets its own fresh database
//! ([`PgCluster::fresh_database`]).
//!
//! One cluster serves a whole test process ([`shared_cluster`]). Because statics are never
//! dropped, a small watchdog process waits for the test process to exit and then stops the
//! server and removes the directory, so nothing outlives the run even on a panic or kill.
//!
//! PostgreSQL refuses to run as root: when the tests run as root the cluster's files belong
//! to the `postgres` system user (created by the `postgresql` package) and the server runs as
//! that user through `runuser`.
//!
//! Must not: touch any system PostgreSQL service, listen beyond 127.0.0.1, or need a
//! password (the cluster trusts loopback connections; it exists only for the test run).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The user the cluster runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";
/// The superuser `initdb` creates; tests connect as this role.
const ROLE: &str = "callgate";

/// A running cluster.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    next_db: AtomicU32,
}

/// The cluster this test process shares, started on first use.
///
/// Panics with the reason when PostgreSQL is not installed (`scripts/setup` installs it) or
/// does not start; the panic message includes the server's log.
pub fn shared_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| PgCluster::start().unwrap_or_else(|e| panic!("{e}")))
}

/// The directory holding `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/*/bin`, or
/// whatever directory `PATH` finds `initdb` in.
pub fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Creates and starts a new cluster. Prefer [`shared_cluster`] in tests.
    pub fn start() -> Result<PgCluster, String> {
        let bin = find_bin_dir().ok_or(
            "PostgreSQL's initdb/pg_ctl not found under /usr/lib/postgresql/*/bin or on PATH; \
             run scripts/setup",
        )?;
        let root = tempfile::Builder::new()
            .prefix("callgate-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let run_as = running_as_root().then_some(SYSTEM_USER);
        if let Some(user) = run_as {
            check(
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(&root)
                    .output(),
                "chown",
            )?;
        }
        let port = crate::free_loopback_addr().port();
        let cluster = PgCluster {
            bin,
            root,
            port,
            run_as,
            next_db: AtomicU32::new(0),
        };
        cluster.spawn_reaper()?;
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-U",
                ROLE,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            cluster.port,
            cluster.root.display()
        );
        let log = cluster.root.join("server.log");
        let started = cluster.run(
            "pg_ctl",
            &[
                "-D",
                &cluster.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if let Err(e) = started {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{e}\nserver log:\n{server_log}"));
        }
        Ok(cluster)
    }

    fn data_dir(&self) -> String {
        self.root.join("data").display().to_string()
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, socket, log).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a new, empty database and returns its `postgres://` URL.
    pub fn fresh_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                ROLE,
                &name,
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.url(&name)
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one of the cluster's programs with `args` (as the cluster's user) and returns
    /// its standard output.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .env("LC_ALL", "C");
        check(cmd.output(), program)
    }

    /// Starts a detached shell that waits for this test process to exit, then stops the
    /// server and removes the directory.
    fn spawn_reaper(&self) -> Result<(), String> {
        let stop = format!(
            "{} -D {} -m immediate -w stop",
            self.bin.join("pg_ctl").display(),
            self.data_dir()
        );
        let stop = match self.run_as {
            Some(user) => format!("runuser -u {user} -- {stop}"),
            None => stop,
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; \
             rm -rf {root}",
            pid = std::process::id(),
            root = self.root.display()
        );
        Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the cluster's reaper: {e}"))?;
        Ok(())
    }
}

fn check(out: std::io::Result<Output>, what: &str) -> Result<String, String> {
    let out = out.map_err(|e| format!("running {what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
