//! Harness for the sync system tests: a real Mosquitto (configured by
//! `callgate-coordinator broker-config mosquitto`), a real coordinator and real appliance
//! processes (`callgate-appliance sync-load`), each on free loopback ports in a temp dir,
//! killed when dropped. Verification reads the coordinator's SQLite database and decodes
//! every stored record against the generator's definition.

#![allow(dead_code, unreachable_pub)]

use callgate_appliance::sync::identity::IdentityDir;
use callgate_appliance::sync::load::call_record;
use callgate_common::ids::ApplianceId;
use callgate_common::wire::CallRecord;
use callgate_system_tests::{binary, free_loopback_addr};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Worlds with up to this many appliances enroll each one with the technician's commands
/// (`csr`, `appliance provision`, `install-identity`: three processes per box); larger ones
/// in bulk.
const SMALL_WORLD: usize = 8;

/// Which broker the link runs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// An external Mosquitto configured by `broker-config mosquitto`.
    Mosquitto,
    /// The coordinator's embedded broker (`sync.embedded_broker`).
    Embedded,
}

/// A running `sync-load` process, killed when dropped.
pub struct Load(pub Child);

impl std::ops::Deref for Load {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Load {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One test's world: broker, coordinator, appliances, in one temp dir.
pub struct World {
    pub root: tempfile::TempDir,
    pub broker_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub enroll_addr: SocketAddr,
    pub broker: Option<Child>,
    pub coordinator: Option<Child>,
    /// The coordinator's database, as a URL the tests read through.
    pub db_url: String,
    /// Which broker.
    pub kind: BrokerKind,
}

fn run_ok(bin: &str, args: &[&str]) -> String {
    let out = Command::new(binary(bin))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running binary");
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl World {
    /// Creates the coordinator's data, enrolls `appliances` offline (key and CSR made by
    /// each appliance, signed by the coordinator), writes the Mosquitto config.
    pub fn new(appliances: &[&str]) -> World {
        World::with_database(appliances, None)
    }

    /// Like [`World::new`] with the chosen broker.
    pub fn with_broker(appliances: &[&str], kind: BrokerKind) -> World {
        World::build(appliances, None, kind)
    }

    /// Like [`World::new`], with the coordinator on `database_url` (PostgreSQL) instead of
    /// SQLite in its data directory.
    pub fn with_database(appliances: &[&str], database_url: Option<&str>) -> World {
        World::build(appliances, database_url, BrokerKind::Mosquitto)
    }

    fn build(appliances: &[&str], database_url: Option<&str>, kind: BrokerKind) -> World {
        let root = tempfile::tempdir().expect("temp dir");
        let broker_addr = free_loopback_addr();
        let http_addr = free_loopback_addr();
        let enroll_addr = free_loopback_addr();
        let w = World {
            root,
            broker_addr,
            http_addr,
            enroll_addr,
            broker: None,
            coordinator: None,
            db_url: String::new(),
            kind,
        };
        let mut w = w;
        w.db_url = match database_url {
            Some(u) => u.to_string(),
            None => format!(
                "sqlite://{}",
                w.path("coordinator/coordinator.db").display()
            ),
        };
        let db_line = database_url
            .map(|u| format!("database_url = \"{u}\"\n"))
            .unwrap_or_default();
        let embedded_line = match kind {
            BrokerKind::Embedded => format!("embedded_broker = \"{broker_addr}\"\n"),
            BrokerKind::Mosquitto => String::new(),
        };
        std::fs::write(
            w.path("coordinator.toml"),
            format!(
                "[http]\nlisten = \"{http_addr}\"\n[store]\ndata_dir = \"{}\"\n{db_line}\
                 [sync]\nbroker = \"{broker_addr}\"\nenroll_listen = \"{enroll_addr}\"\n{embedded_line}",
                w.path("coordinator").display()
            ),
        )
        .unwrap();
        if appliances.len() <= SMALL_WORLD {
            for name in appliances {
                w.enroll_offline(name);
            }
        } else {
            w.enroll_offline_in_bulk(appliances);
        }
        w.write_broker_config();
        w
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn coord_config(&self) -> String {
        self.path("coordinator.toml").display().to_string()
    }

    pub fn appliance_config(&self, name: &str) -> PathBuf {
        let path = self.path(&format!("{name}.toml"));
        if !path.exists() {
            std::fs::write(
                &path,
                format!(
                    "[appliance]\nid = \"{name}\"\ndata_dir = \"{}\"\n[log]\nlevel = \"info\"\n\
                     [sync]\nbroker = \"{}\"\n",
                    self.path(name).display(),
                    self.broker_addr
                ),
            )
            .unwrap();
        }
        path
    }

    fn enroll_offline(&self, name: &str) {
        let cfg = self.appliance_config(name);
        let cfg = cfg.to_str().unwrap();
        let csr = self.path(&format!("{name}.csr"));
        let out = self.path(&format!("{name}-issued"));
        run_ok(
            "callgate-appliance",
            &["-c", cfg, "csr", "--out", csr.to_str().unwrap()],
        );
        run_ok(
            "callgate-coordinator",
            &[
                "-c",
                &self.coord_config(),
                "appliance",
                "provision",
                name,
                "--csr",
                csr.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        run_ok(
            "callgate-appliance",
            &[
                "-c",
                cfg,
                "install-identity",
                "--cert",
                out.join("cert.pem").to_str().unwrap(),
                "--ca",
                out.join("ca.pem").to_str().unwrap(),
            ],
        );
    }

    /// Offline enrollment of many boxes (the benchmark's hundreds): each box's key and CSR
    /// are made in this process by the appliance's own code (no process per box), and
    /// one `appliance provision-many` signs them all.
    fn enroll_offline_in_bulk(&self, appliances: &[&str]) {
        let csrs = self.path("csr");
        std::fs::create_dir_all(&csrs).unwrap();
        let identities: Vec<(ApplianceId, IdentityDir)> = appliances
            .iter()
            .map(|name| {
                self.appliance_config(name);
                let app = ApplianceId::new(*name).unwrap();
                let identity = IdentityDir::in_data_dir(&self.path(name));
                let csr = identity.generate_csr(&app).unwrap();
                std::fs::write(csrs.join(format!("{name}.csr")), csr).unwrap();
                (app, identity)
            })
            .collect();
        run_ok(
            "callgate-coordinator",
            &[
                "-c",
                &self.coord_config(),
                "appliance",
                "provision-many",
                "--dir",
                csrs.to_str().unwrap(),
            ],
        );
        for (app, identity) in identities {
            let out = csrs.join(app.as_str());
            let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
            identity
                .install(&read("cert.pem"), &read("ca.pem"))
                .unwrap();
        }
    }

    pub fn write_broker_config(&self) {
        run_ok(
            "callgate-coordinator",
            &[
                "-c",
                &self.coord_config(),
                "broker-config",
                "mosquitto",
                "--dir",
                self.path("broker").to_str().unwrap(),
                "--listen",
                &self.broker_addr.to_string(),
            ],
        );
    }

    /// Starts Mosquitto and waits for its port (the embedded broker starts with the
    /// coordinator).
    pub fn start_broker(&mut self) {
        if self.kind == BrokerKind::Embedded {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("mosquitto.log"))
            .unwrap();
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.path("broker/mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting mosquitto (scripts/setup installs it)");
        self.broker = Some(child);
        wait_port(self.broker_addr, Duration::from_secs(10));
    }

    /// `kill -9` the broker.
    pub fn kill_broker(&mut self) {
        if let Some(mut c) = self.broker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the coordinator (all-in-one) and waits until healthy.
    pub async fn start_coordinator(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("coordinator.log"))
            .unwrap();
        let child = Command::new(binary("callgate-coordinator"))
            .args(["-c", &self.coord_config(), "all-in-one"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting coordinator");
        self.coordinator = Some(child);
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client
                .get(format!("http://{}/healthz", self.http_addr))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "coordinator not healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` the coordinator.
    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts `callgate-appliance sync-load` for `name`; killed if dropped unfinished (a
    /// failing test leaves no process behind).
    pub fn start_load(&self, name: &str, records: u64, rate: u32) -> Load {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{name}.log")))
            .unwrap();
        Command::new(binary("callgate-appliance"))
            .arg("-c")
            .arg(self.appliance_config(name))
            .args([
                "sync-load",
                "--records",
                &records.to_string(),
                "--rate",
                &rate.to_string(),
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map(Load)
            .expect("starting appliance")
    }

    /// Waits for a load process to finish successfully.
    pub async fn wait_load(&self, name: &str, mut child: Load, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "sync-load {name} failed: {}",
                    self.log(name)
                );
                return;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "sync-load {name} did not finish in {limit:?}: {}",
                    self.log(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    pub async fn db(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.db_url).await.unwrap()
    }

    /// Rows in `call_records` for `name`.
    pub async fn stored_count(&self, name: &str) -> i64 {
        let db = self.db().await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records WHERE appliance = $1")
            .bind(name)
            .fetch_one(&db)
            .await
            .unwrap_or((0,));
        db.close().await;
        n
    }

    /// Waits until at least `n` records of `name` are stored.
    pub async fn wait_stored(&self, name: &str, n: i64, limit: Duration) {
        let start = Instant::now();
        while self.stored_count(name).await < n {
            assert!(
                start.elapsed() < limit,
                "fewer than {n} records of {name} stored in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every record `0..total` of `name` stored exactly once, by count and by content, and
    /// the coordinator applied exactly `total` sequenced messages from it.
    pub async fn assert_exactly_once(&self, name: &str, total: u64) {
        self.assert_exactly_once_with(name, total, 0).await
    }

    /// Like [`World::assert_exactly_once`] when `other` sequenced messages that are not call
    /// records (e.g. a certificate renewal) were sent too.
    pub async fn assert_exactly_once_with(&self, name: &str, total: u64, other: u64) {
        let app = ApplianceId::new(name).unwrap();
        let db = self.db().await;
        let rows: Vec<(String, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT call_id, record, uplink_seq FROM call_records WHERE appliance = $1 \
             ORDER BY started_at",
        )
        .bind(name)
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(
            rows.len() as u64,
            total,
            "count of stored records of {name}\n--- {name}'s log:\n{}\n--- coordinator log:\n{}",
            self.log(name),
            self.coordinator_log()
        );
        for (i, (call_id, bytes, _seq)) in rows.iter().enumerate() {
            let expected = call_record(&app, i as u64);
            let got: CallRecord = postcard::from_bytes(bytes).unwrap();
            assert_eq!(got, expected, "record {i} of {name}");
            assert_eq!(call_id, &expected.call.to_string());
        }
        let (hw, applied): (i64, i64) = sqlx::query_as(
            "SELECT high_water, applied_count FROM sync_uplink_state WHERE appliance = $1",
        )
        .bind(name)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(
            (hw as u64, applied as u64),
            (total + other, total + other),
            "every sequence number applied once"
        );
        db.close().await;
    }

    /// Every appliance in `names` had records `0..total` stored exactly once (by count and
    /// content) and exactly `total` sequence numbers applied: one pass over the tables, for
    /// the benchmark's hundreds of boxes. Panics naming the first few that did not.
    pub async fn assert_every_appliance_exactly_once(&self, names: &[String], total: u64) {
        let db = self.db().await;
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT appliance, call_id, record FROM call_records ORDER BY appliance, started_at",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let marks: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT appliance, high_water, applied_count FROM sync_uplink_state")
                .fetch_all(&db)
                .await
                .unwrap();
        db.close().await;
        let mut stored: std::collections::HashMap<&str, Vec<(&str, &[u8])>> = Default::default();
        for (app, call, bytes) in &rows {
            stored
                .entry(app.as_str())
                .or_default()
                .push((call.as_str(), bytes.as_slice()));
        }
        let marks: std::collections::HashMap<&str, (i64, i64)> = marks
            .iter()
            .map(|(a, hw, n)| (a.as_str(), (*hw, *n)))
            .collect();
        let mut wrong = Vec::new();
        for name in names {
            let app = ApplianceId::new(name.as_str()).unwrap();
            let got = stored.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let content_ok = got.len() as u64 == total
                && got.iter().enumerate().all(|(i, (call, bytes))| {
                    let expected = call_record(&app, i as u64);
                    postcard::from_bytes::<CallRecord>(bytes).ok().as_ref() == Some(&expected)
                        && *call == expected.call.to_string()
                });
            let mark = marks.get(name.as_str()).copied().unwrap_or((0, 0));
            if !content_ok || mark != (total as i64, total as i64) {
                wrong.push(format!(
                    "{name}: {} rows stored, mark {mark:?}, content ok: {content_ok}",
                    got.len()
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} appliances not exactly once at {total} records each, e.g. {:?}",
            wrong.len(),
            names.len(),
            &wrong[..wrong.len().min(5)]
        );
    }

    /// Appliances the coordinator holds online (`appliance_presence`) that it has heard
    /// from since `since_ms` (wall clock): a box that went offline, or whose `online` dates
    /// from before, is not counted.
    pub async fn online_since(&self, since_ms: i64) -> i64 {
        let db = self.db().await;
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM appliance_presence WHERE online = 1 AND last_seen_at >= $1",
        )
        .bind(since_ms)
        .fetch_one(&db)
        .await
        .unwrap_or((0,));
        db.close().await;
        n
    }

    /// Established TCP connections the broker holds on its listening address, counted from
    /// the kernel's table (`/proc/net/tcp`, `tcp6`) on the broker's side — the coordinator's
    /// own connection included.
    pub fn broker_connections(&self) -> usize {
        let port = format!("{:04X}", self.broker_addr.port());
        let ip = match self.broker_addr.ip() {
            std::net::IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{:02X}{:02X}{:02X}{:02X}", o[3], o[2], o[1], o[0])
            }
            std::net::IpAddr::V6(_) => String::new(),
        };
        let local = format!("{ip}:{port}");
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|t| {
                t.lines()
                    .skip(1)
                    .filter(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        cols.len() > 3
                            && cols[3] == "01"
                            && (cols[1] == local || (ip.is_empty() && cols[1].ends_with(&port)))
                    })
                    .count()
            })
            .sum()
    }

    /// The coordinator's Prometheus text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Publishes `payload` with `as_appliance`'s certificate on `topic` with
    /// `mosquitto_pub` (QoS 1). Returns whether mosquitto_pub reported success.
    pub fn publish_as(&self, as_appliance: &str, topic: &str, payload: &[u8]) -> bool {
        let file = self.path("payload.bin");
        std::fs::write(&file, payload).unwrap();
        let id = self.path(&format!("{as_appliance}/identity"));
        Command::new("mosquitto_pub")
            .args(["-h", &self.broker_addr.ip().to_string()])
            .args(["-p", &self.broker_addr.port().to_string()])
            .arg("--cafile")
            .arg(id.join("ca.pem"))
            .arg("--cert")
            .arg(id.join("cert.pem"))
            .arg("--key")
            .arg(id.join("key.pem"))
            .args(["-q", "1", "-t", topic, "-f"])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("mosquitto_pub (scripts/setup installs mosquitto-clients)")
            .status
            .success()
    }

    pub fn coordinator_log(&self) -> String {
        std::fs::read_to_string(self.path("coordinator.log")).unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_coordinator();
        self.kill_broker();
    }
}

/// The mosquitto binary (Debian installs it in /usr/sbin, often off a user's PATH).
pub fn mosquitto() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mosquitto")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_port(addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < limit, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throw-away PostgreSQL cluster in a temp dir on a free loopback port, stopped when
/// dropped. As root (CI containers) the server runs as the `postgres` user, which the
/// `postgresql` package creates.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub url: String,
}

fn pg_bin(name: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql");
    if let Ok(versions) = std::fs::read_dir(debian) {
        let mut found: Vec<PathBuf> = versions
            .flatten()
            .map(|v| v.path().join("bin").join(name))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn as_postgres(bin: &str) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
        c
    } else {
        Command::new(pg_bin(bin))
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let port = free_loopback_addr().port();
        let ok = as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "callgate", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb (scripts/setup installs postgresql)");
        assert!(ok.success(), "initdb failed");
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            dir.path().display()
        );
        let ok = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl start failed");
        let ok = Command::new(pg_bin("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "callgate",
                "callgate",
            ])
            .status()
            .unwrap();
        assert!(ok.success(), "createdb failed");
        Postgres {
            url: format!("postgres://callgate@127.0.0.1:{port}/callgate"),
            dir,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs each listed `async fn name(kind: BrokerKind)` once per broker, as
/// `mosquitto::name` and `embedded_broker::name`.
#[macro_export]
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod mosquitto {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::sync_common::BrokerKind::Mosquitto).await
                }
            )*
        }
        mod embedded_broker {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::sync_common::BrokerKind::Embedded).await
                }
            )*
        }
    };
}
