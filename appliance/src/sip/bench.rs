//! `callgate-appliance sip bench`: the SIP benchmark command (a command that prints a
//! table, never a timed test). Two modes, each stepping through call rates on loopback:
//! - `originate`: the appliance places calls to a SIPp UAS (answer, then BYE at once);
//! - `b2bua`: a SIPp UAC (the carrier) calls in, the appliance bridges each call out on a
//!   trunk to a SIPp UAS.
//!
//! Each row reports calls, failures, retransmissions and the appliance's CPU; the
//! sustained rate is the highest step with zero failed calls and zero retransmissions.
//! Build with `--release` for meaningful figures.

use super::udp::{DriverError, UdpAgent, UdpTrunkRouter};
use callgate_sip::agent::{AgentConfig, AgentEvent, CallSpec};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::transaction::TimerConfig;
use callgate_sip::trunk::router::RouterConfig;
use callgate_sip::trunk::{Trunk, TrunkGroup};
use callgate_sip::uri::Uri;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// SIPp could not be started or failed to report.
    #[error("sipp: {0}")]
    Sipp(String),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// One measured step.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Offered calls per second.
    pub rate: u32,
    /// Calls offered.
    pub calls: u64,
    /// Calls answered and ended cleanly.
    pub completed: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Retransmitted messages (ours, or SIPp's in b2bua mode).
    pub retransmissions: u64,
    /// Appliance CPU as a percentage of one core over the step.
    pub cpu_percent: f64,
}

fn cpu_seconds() -> f64 {
    // utime + stime (fields 14 and 15) in clock ticks of 1/100 s (USER_HZ on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// SIPp's socket buffers, as large as the 4 MiB the appliance's own SIP socket and
/// Kamailio (`maxbuffer`) get: with SIPp's default (64 KiB, 128 KiB in the kernel's
/// accounting) SIPp's own sockets overflowed at 2,400 calls/s (`ss -uam` showed thousands of
/// drops on the SIPp sockets, none on ours) and the retransmissions were SIPp's losses.
const SIPP_BUFFER_BYTES: &str = "4194304";

fn spawn_sipp(dir: &Path, args: &[String]) -> Result<tokio::process::Child, BenchError> {
    tokio::process::Command::new("sipp")
        .args(args)
        .args(["-nostdin", "-buff_size", SIPP_BUFFER_BYTES])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Sipp(format!("cannot start sipp: {e}")))
}

/// Waits for a SIPp load generator to quit, at most `limit` (its own `-timeout` is meant to
/// end it first, but an overloaded SIPp has been seen not to): then it is killed, and the
/// calls it did not report count as failed.
async fn wait_sipp(sipp: &mut tokio::process::Child, limit: Duration, rate: u32) {
    if tokio::time::timeout(limit, sipp.wait()).await.is_err() {
        tracing::warn!(
            rate,
            seconds = limit.as_secs(),
            "SIPp did not quit in time; killed, its unreported calls count as failed"
        );
        let _ = sipp.kill().await;
    }
}

/// A scratch directory for SIPp's files, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Scratch, BenchError> {
        let p =
            std::env::temp_dir().join(format!("callgate-sip-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| BenchError::Sipp(e.to_string()))?;
        Ok(Scratch(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn agent_config(seed: u64) -> AgentConfig {
    AgentConfig {
        local: SocketAddr::from(([127, 0, 0, 1], 0)),
        user: "bench".into(),
        timers: TimerConfig::default(),
        credentials: None,
        seed,
    }
}

/// Originate mode: the appliance calls a SIPp UAS at each rate for `seconds`.
pub async fn originate(rates: &[u32], seconds: u64) -> Result<Vec<BenchRow>, BenchError> {
    let dir = Scratch::new("originate")?;
    let port = free_port();
    let _uas = spawn_sipp(
        dir.path(),
        &[
            "-sn".into(),
            "uas".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ],
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let uas = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut ua, mut wire) =
        UdpAgent::start_traced(SocketAddr::from(([127, 0, 0, 1], 0)), agent_config(7)).await?;
    let mut rows = Vec::new();
    for &rate in rates {
        let calls = u64::from(rate) * seconds;
        let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let (mut completed, mut failed, mut placed) = (0u64, 0u64, 0u64);
        let mut seen = HashSet::new();
        let mut retrans = 0u64;
        let mut next = tokio::time::Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 40);
        while completed + failed < calls && tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = tokio::time::sleep_until(next), if placed < calls => {
                    let to = Uri::parse(&format!("sip:{placed}@{uas}")).map_err(|e| BenchError::Sipp(e.to_string()))?;
                    ua.place_call(CallSpec::new(to, uas, b"v=0\r\n".to_vec())).await?;
                    placed += 1;
                    next += gap;
                }
                e = ua.next_event() => match e {
                    Some(AgentEvent::Answered { leg, .. }) => ua.hang_up(leg)?,
                    Some(AgentEvent::Ended { .. }) => completed += 1,
                    Some(AgentEvent::Failed { .. }) => failed += 1,
                    Some(_) => {}
                    None => return Err(DriverError::Stopped.into()),
                },
                w = wire.recv() => {
                    if let Some(w) = w {
                        if w.outbound && !seen.insert(w.bytes) {
                            retrans += 1;
                        }
                    }
                }
            }
        }
        failed += calls.saturating_sub(completed + failed);
        let wall = t0.elapsed().as_secs_f64();
        rows.push(BenchRow {
            rate,
            calls,
            completed,
            failed,
            retransmissions: retrans,
            cpu_percent: (cpu_seconds() - cpu0) / wall * 100.0,
        });
    }
    Ok(rows)
}

/// Reads SuccessfulCall(C), FailedCall(C) and Retransmissions(C) from a SIPp stat file.
fn sipp_counts(path: &Path) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = text.lines().last()?.split(';').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i)?.trim().parse::<u64>().ok())
    };
    Some((
        col("SuccessfulCall(C)")?,
        col("FailedCall(C)")?,
        col("Retransmissions(C)")?,
    ))
}

/// B2BUA mode: a SIPp UAC calls into the appliance, which bridges to a SIPp UAS.
pub async fn b2bua(rates: &[u32], seconds: u64) -> Result<Vec<BenchRow>, BenchError> {
    let dir = Scratch::new("b2bua")?;
    let uas_port = free_port();
    let _uas = spawn_sipp(
        dir.path(),
        &[
            "-sn".into(),
            "uas".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uas_port.to_string(),
        ],
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let router = UdpTrunkRouter::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        agent_config(11),
        TrunkGroup::new(vec![Trunk {
            name: "out".into(),
            address: SocketAddr::from(([127, 0, 0, 1], uas_port)),
            domain: "127.0.0.1".into(),
            credentials: None,
            max_channels: 100_000,
            max_cps: 100_000,
            priority: 1,
            weight: 1,
        }]),
        RouterConfig {
            probe: None,
            ..RouterConfig::default()
        },
        false,
    )
    .await?;
    router.set_inbound_policy(InboundPolicy {
        allowed_sources: vec!["127.0.0.1".parse().expect("an IP")],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 100_000,
        per_source_burst: 100_000,
        routes: vec![InboundRoute {
            number: "*".into(),
            target: RouteTarget::Trunk("out".into()),
        }],
    })?;
    let mut rows = Vec::new();
    for &rate in rates {
        let calls = u64::from(rate) * seconds;
        let stats = dir.path().join(format!("uac-{rate}.csv"));
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let mut uac = spawn_sipp(
            dir.path(),
            &[
                "-sn".into(),
                "uac".into(),
                router.local_addr().to_string(),
                "-i".into(),
                "127.0.0.1".into(),
                "-p".into(),
                free_port().to_string(),
                "-r".into(),
                rate.to_string(),
                "-m".into(),
                calls.to_string(),
                "-trace_stat".into(),
                "-stf".into(),
                stats.to_string_lossy().into_owned(),
                "-fd".into(),
                "1".into(),
                "-timeout".into(),
                format!("{}", seconds + 60),
            ],
        )?;
        wait_sipp(&mut uac, Duration::from_secs(seconds + 90), rate).await;
        let wall = t0.elapsed().as_secs_f64();
        let (ok, failed, retrans) = sipp_counts(&stats)
            .ok_or_else(|| BenchError::Sipp(format!("no statistics in {}", stats.display())))?;
        rows.push(BenchRow {
            rate,
            calls,
            completed: ok,
            failed: failed + calls.saturating_sub(ok + failed),
            retransmissions: retrans,
            cpu_percent: (cpu_seconds() - cpu0) / wall * 100.0,
        });
    }
    Ok(rows)
}

/// The Kamailio 5.6 configuration of the comparison: a stateful (tm) proxy relaying every
/// request to the UAS.
fn kamailio_cfg(listen: u16, uas: u16) -> String {
    format!(
        r#"#!KAMAILIO
debug=0
log_stderror=yes
children=2
maxbuffer=4194304
listen=udp:127.0.0.1:{listen}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "textops.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (is_method("ACK") && t_check_trans()) {{ t_relay(); exit; }}
    t_check_trans();
    # SIPp's built-in UAC ignores Record-Route, so in-dialog requests come to us
    # without Route headers: every request goes on to the UAS, statefully.
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
}}
"#
    )
}

/// CPU seconds of a process and its direct children (Kamailio forks its workers).
fn tree_cpu_seconds(root: u32) -> f64 {
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        let ppid = f.get(1).and_then(|p| p.parse::<u32>().ok());
        if pid == root || ppid == Some(root) {
            let ticks = f.get(11).and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
            total += ticks / 100.0;
        }
    }
    total
}

/// Kamailio mode: the same SIPp pair with Kamailio 5.6 as a stateful proxy in the middle
/// (`-m 4096 -M 16 -x tlsf`, 4 MiB maxbuffer). CPU is Kamailio's.
pub async fn kamailio(rates: &[u32], seconds: u64) -> Result<Vec<BenchRow>, BenchError> {
    let dir = Scratch::new("kamailio")?;
    let uas_port = free_port();
    let _uas = spawn_sipp(
        dir.path(),
        &[
            "-sn".into(),
            "uas".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uas_port.to_string(),
        ],
    )?;
    let kam_port = free_port();
    let cfg = dir.path().join("kamailio.cfg");
    std::fs::write(&cfg, kamailio_cfg(kam_port, uas_port))
        .map_err(|e| BenchError::Sipp(e.to_string()))?;
    let kam = tokio::process::Command::new("kamailio")
        .args([
            "-f",
            &cfg.to_string_lossy(),
            "-DD",
            "-E",
            "-m",
            "4096",
            "-M",
            "16",
            "-x",
            "tlsf",
        ])
        .args(["-P", &dir.path().join("kamailio.pid").to_string_lossy()])
        .args(["-Y", &dir.path().to_string_lossy()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Sipp(format!("cannot start kamailio: {e}")))?;
    let mut kam = kam;
    let kam_pid = kam
        .id()
        .ok_or_else(|| BenchError::Sipp("kamailio exited at once".into()))?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Ok(Some(status)) = kam.try_wait() {
        return Err(BenchError::Sipp(format!(
            "kamailio stopped ({status}); check its config with `kamailio -c -f {}`",
            cfg.display()
        )));
    }
    let mut rows = Vec::new();
    for &rate in rates {
        let calls = u64::from(rate) * seconds;
        let stats = dir.path().join(format!("uac-{rate}.csv"));
        let cpu0 = tree_cpu_seconds(kam_pid);
        let t0 = Instant::now();
        let mut uac = spawn_sipp(
            dir.path(),
            &[
                "-sn".into(),
                "uac".into(),
                format!("127.0.0.1:{kam_port}"),
                "-i".into(),
                "127.0.0.1".into(),
                "-p".into(),
                free_port().to_string(),
                "-r".into(),
                rate.to_string(),
                "-m".into(),
                calls.to_string(),
                // A 180 overtaken by its 200 is harmless, and Kamailio's two workers
                // forward them in parallel over UDP: SIPp's default would abort such a
                // call as "unexpected" and count it failed. Only here: our B2BUA relays
                // in order, and with this behaviour off an overloaded SIPp stops
                // quitting at its -timeout (the b2bua steps then never end).
                "-default_behaviors".into(),
                "all,-abortunexp".into(),
                "-trace_stat".into(),
                "-stf".into(),
                stats.to_string_lossy().into_owned(),
                "-fd".into(),
                "1".into(),
                "-timeout".into(),
                format!("{}", seconds + 60),
            ],
        )?;
        wait_sipp(&mut uac, Duration::from_secs(seconds + 90), rate).await;
        let wall = t0.elapsed().as_secs_f64();
        let (ok, failed, retrans) = sipp_counts(&stats)
            .ok_or_else(|| BenchError::Sipp(format!("no statistics in {}", stats.display())))?;
        rows.push(BenchRow {
            rate,
            calls,
            completed: ok,
            failed: failed + calls.saturating_sub(ok + failed),
            retransmissions: retrans,
            cpu_percent: (tree_cpu_seconds(kam_pid) - cpu0) / wall * 100.0,
        });
    }
    // SIGTERM lets Kamailio's main process take its workers down (a SIGKILL from
    // kill_on_drop would orphan them).
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &kam_pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(5), kam.wait()).await;
    Ok(rows)
}

/// The highest step with no failed call and no retransmission.
pub fn sustained(rows: &[BenchRow]) -> Option<&BenchRow> {
    rows.iter()
        .filter(|r| r.failed == 0 && r.retransmissions == 0)
        .max_by_key(|r| r.rate)
}

/// The suite's figures from one `compare` run: the B2BUA against Kamailio's proxy rate
/// (the issue's goal: at least equal), and the appliance-originated rate.
pub fn figures(
    b2bua: &[BenchRow],
    kamailio: &[BenchRow],
    originate: &[BenchRow],
) -> Vec<callgate_common::bench::BenchFigure> {
    use callgate_common::bench::{BenchFigure, Goal};
    let rate = |rows: &[BenchRow]| sustained(rows).map_or(0.0, |r| f64::from(r.rate));
    let cpu = |rows: &[BenchRow]| {
        sustained(rows).map_or_else(
            || "no clean step".to_string(),
            |r| format!("CPU {:.0} %", r.cpu_percent),
        )
    };
    let steps = |rows: &[BenchRow]| {
        rows.iter()
            .map(|r| r.rate.to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    vec![
        BenchFigure {
            benchmark: "signalling".into(),
            measure: "B2BUA calls/s sustained (0 failed, 0 retransmissions)".into(),
            ours: rate(b2bua),
            peer: Some(rate(kamailio)),
            peer_name: Some("Kamailio tm proxy".into()),
            goal: Goal::AtLeastPeer,
            note: format!(
                "steps {}; ours {}, Kamailio {}",
                steps(b2bua),
                cpu(b2bua),
                cpu(kamailio)
            ),
            condition_failed: false,
        },
        BenchFigure {
            benchmark: "signalling".into(),
            measure: "appliance-originated calls/s sustained".into(),
            ours: rate(originate),
            peer: None,
            peer_name: None,
            goal: Goal::None,
            note: format!("steps {}; {}", steps(originate), cpu(originate)),
            condition_failed: false,
        },
    ]
}

/// The table, and the sustained rate line.
pub fn render(mode: &str, rows: &[BenchRow]) -> String {
    let mut out = format!(
        "mode {mode}\n{:>8} {:>8} {:>10} {:>8} {:>8} {:>8}\n",
        "rate/s", "calls", "completed", "failed", "retrans", "cpu %"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>8} {:>8} {:>10} {:>8} {:>8} {:>8.1}\n",
            r.rate, r.calls, r.completed, r.failed, r.retransmissions, r.cpu_percent
        ));
    }
    match sustained(rows).map(|r| r.rate) {
        Some(s) => out.push_str(&format!(
            "sustained: {s} calls/s (0 failed, 0 retransmissions)\n"
        )),
        None => out.push_str("sustained: none of the steps ran clean\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rate: u32, failed: u64, retransmissions: u64) -> BenchRow {
        BenchRow {
            rate,
            calls: u64::from(rate),
            completed: u64::from(rate) - failed,
            failed,
            retransmissions,
            cpu_percent: 1.0,
        }
    }

    #[test]
    fn the_sustained_rate_is_the_highest_clean_step() {
        let t = render(
            "originate",
            &[
                row(100, 0, 0),
                row(200, 0, 0),
                row(400, 3, 10),
                row(800, 0, 2),
            ],
        );
        assert!(
            t.ends_with("sustained: 200 calls/s (0 failed, 0 retransmissions)\n"),
            "{t}"
        );
        let t = render("b2bua", &[row(100, 1, 0)]);
        assert!(
            t.ends_with("sustained: none of the steps ran clean\n"),
            "{t}"
        );
    }

    #[test]
    fn sipp_statistics_are_read_by_column_name_and_a_missing_column_is_no_figure() {
        let dir = Scratch::new("unit").unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(
            &p,
            "A;SuccessfulCall(C);FailedCall(C);Retransmissions(C);\nx;1;0;0;\ny;98;2;7;\n",
        )
        .unwrap();
        assert_eq!(sipp_counts(&p), Some((98, 2, 7)));
        std::fs::write(&p, "A;SuccessfulCall(C);FailedCall(C);\ny;98;2;\n").unwrap();
        assert_eq!(sipp_counts(&p), None);
    }
}
