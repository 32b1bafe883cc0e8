//! `callgate-appliance media-bench`: the media load benchmark. Runs N bridged G.711 calls
//! through the appliance's own bridge with encrypted recording on, then (when rtpengine is
//! installed) the same streams through rtpengine in userspace mode without recording, and
//! prints a table: loss, added one-way delay p50/p99 and CPU for each N, and the largest N
//! with loss under 0.1 % and p99 under 5 ms for each system.
//!
//! The load side (two simulated phones per call) runs on its own runtime threads; the
//! appliance side on threads named `cg-box`, whose CPU time alone is counted for it. Every
//! packet carries its send time in its payload, so delay is measured end to end through the
//! relay (the loopback path itself adds a few microseconds).

use super::{run_bridge, BridgeCommand, RtpLeg, RtpPortRange};
use crate::recording::{CallRecorder, RecordingSettings, SqliteSegmentStore};
use crate::store::Store;
use callgate_common::ids::CallId;
use callgate_media::g711::Codec;
use callgate_media::rtp::{RtpPacket, RtpSender};
use callgate_media::sdp::{Direction, NegotiatedAudio};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Loss a load level must stay under.
const MAX_LOSS: f64 = 0.001;
/// The p99 added-delay target, µs.
pub const DEFAULT_MAX_P99_US: u64 = 5_000;

/// What the phones of all calls measured at one load level.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub calls: usize,
    pub sent: u64,
    pub received: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU of the system under test as a share of one core, percent.
    pub cpu_percent: f64,
    /// The p99 limit this level is judged against, µs.
    pub max_p99_us: u64,
}

impl LoadResult {
    /// Packets lost, as a fraction.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - self.received as f64 / self.sent as f64
    }

    /// Whether this load level meets the targets.
    pub fn passes(&self) -> bool {
        self.loss() < MAX_LOSS && self.p99_us < self.max_p99_us
    }
}

#[derive(Debug, Default)]
struct PhoneStats {
    sent: u64,
    received: u64,
    delays_us: Vec<u32>,
}

/// One simulated phone: sends a 20 ms PCMU packet every 20 ms from `start` until `stop`
/// (counting those after `measure_from`), and records the delay of what comes back.
async fn phone(
    socket: UdpSocket,
    target: SocketAddr,
    epoch: Instant,
    measure_from: Instant,
    stop: Instant,
) -> PhoneStats {
    let mut stats = PhoneStats::default();
    let mut tx = RtpSender::new(rand_u32(), 0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut buf = [0u8; 1_500];
    let drain_until = stop + Duration::from_millis(300);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= stop {
                    continue;
                }
                let mut payload = vec![0xFF; 160];
                let stamp = now.duration_since(epoch).as_micros() as u64;
                payload[..8].copy_from_slice(&stamp.to_be_bytes());
                let bytes = match tx.audio(0, payload).to_bytes() {
                    Ok(b) => b,
                    Err(_) => continue,
                };
                if socket.send_to(&bytes, target).await.is_ok() && now >= measure_from {
                    stats.sent += 1;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, _)) = received else { continue };
                let now = Instant::now();
                let Ok(p) = RtpPacket::parse(&buf[..len]) else { continue };
                if p.payload.len() < 8 {
                    continue;
                }
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&p.payload[..8]);
                let sent_at = epoch + Duration::from_micros(u64::from_be_bytes(stamp));
                if sent_at >= measure_from && sent_at < stop {
                    stats.received += 1;
                    stats.delays_us.push(now.saturating_duration_since(sent_at).as_micros() as u32);
                }
            }
            _ = tokio::time::sleep_until(drain_until.into()) => break,
        }
    }
    stats
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // Randomness only spreads SSRCs; a failure leaves zeros, which is still valid.
    let _ = getrandom::getrandom(&mut b);
    u32::from_be_bytes(b)
}

fn audio(remote: Option<SocketAddr>) -> NegotiatedAudio {
    NegotiatedAudio {
        remote,
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: None,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    }
}

/// CPU seconds used by this process's threads whose name starts with `prefix`.
fn thread_cpu_seconds(prefix: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            if !stat[open + 1..close].starts_with(prefix) {
                return None;
            }
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks)
        })
        .sum()
}

/// CPU seconds used so far by process `pid`.
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(11) + get(12)) / 100.0
}

fn summarise(
    calls: usize,
    phones: Vec<PhoneStats>,
    cpu_seconds: f64,
    wall: Duration,
) -> LoadResult {
    let mut delays: Vec<u32> = Vec::new();
    let (mut sent, mut received) = (0, 0);
    for p in phones {
        sent += p.sent;
        received += p.received;
        delays.extend(p.delays_us);
    }
    delays.sort_unstable();
    let pct = |q: f64| {
        if delays.is_empty() {
            return u64::MAX;
        }
        u64::from(delays[((delays.len() as f64 - 1.0) * q) as usize])
    };
    LoadResult {
        calls,
        sent,
        received,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_percent: cpu_seconds * 100.0 / wall.as_secs_f64(),
        max_p99_us: DEFAULT_MAX_P99_US,
    }
}

/// Runs `calls` bridged, recorded calls through the appliance's bridge for `seconds`.
pub async fn run_appliance_level(
    box_runtime: &tokio::runtime::Handle,
    calls: usize,
    seconds: u64,
    recipients: &[String],
    work_dir: &Path,
) -> BenchResult<LoadResult> {
    let data = work_dir.join(format!("appliance-{calls}"));
    let settings = RecordingSettings {
        recipients: recipients.to_vec(),
        segment_seconds: 5,
        ..RecordingSettings::default()
    }
    .validate(&data)
    .map_err(|e| e.to_string())?;
    let store = Store::open(&data).await.map_err(|e| e.to_string())?;
    let range = RtpPortRange::new(30_000, 39_998).map_err(|e| e.to_string())?;
    let ip = "127.0.0.1".parse().map_err(|_| "loopback".to_owned())?;
    let mut phones = Vec::new();
    let mut bridges = Vec::new();
    for _ in 0..calls {
        let customer_box = range.bind_pair(ip).await.map_err(|e| e.to_string())?;
        let agent_box = range.bind_pair(ip).await.map_err(|e| e.to_string())?;
        let c_phone = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let a_phone = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let box_c = customer_box.0.local_addr().map_err(|e| e.to_string())?;
        let box_a = agent_box.0.local_addr().map_err(|e| e.to_string())?;
        let c_addr = c_phone.local_addr().map_err(|e| e.to_string())?;
        let a_addr = a_phone.local_addr().map_err(|e| e.to_string())?;
        // Sockets move to the box runtime as std sockets and are registered there.
        let customer_std = (
            customer_box.0.into_std().map_err(|e| e.to_string())?,
            customer_box.1.into_std().map_err(|e| e.to_string())?,
        );
        let agent_std = (
            agent_box.0.into_std().map_err(|e| e.to_string())?,
            agent_box.1.into_std().map_err(|e| e.to_string())?,
        );
        let recorder = CallRecorder::start(
            CallId::new_v7(),
            &settings,
            SqliteSegmentStore::new(store.pool().clone()),
        )
        .map_err(|e| e.to_string())?;
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(1);
        let bridge = box_runtime.spawn(async move {
            let reg = |(a, b): (std::net::UdpSocket, std::net::UdpSocket)| -> std::io::Result<(UdpSocket, UdpSocket)> {
                Ok((UdpSocket::from_std(a)?, UdpSocket::from_std(b)?))
            };
            let customer = RtpLeg::new(reg(customer_std).map_err(|e| e.to_string())?, &audio(Some(c_addr))).map_err(|e| e.to_string())?;
            let agent = RtpLeg::new(reg(agent_std).map_err(|e| e.to_string())?, &audio(Some(a_addr))).map_err(|e| e.to_string())?;
            run_bridge(customer, agent, Some(recorder), None, cmd_rx).await.map_err(|e| e.to_string())
        });
        bridges.push((bridge, cmd_tx));
        phones.push((c_phone, box_c));
        phones.push((a_phone, box_a));
    }
    let result = drive_phones(calls, phones, seconds, || thread_cpu_seconds("cg-box")).await?;
    for (bridge, cmd) in bridges {
        let _ = cmd.send(BridgeCommand::Hangup).await;
        let report = bridge
            .await
            .map_err(|e| e.to_string())?
            .map_err(BenchError)?;
        if let Some(Err(e)) = report.recording {
            return Err(format!("recording failed under load: {e}").into());
        }
        if report.recording_frames_dropped > 0 {
            return Err(format!(
                "{} recording frames dropped under load",
                report.recording_frames_dropped
            )
            .into());
        }
    }
    Ok(result)
}

/// Starts every phone, measures for `seconds` after a one-second warm-up, and collects.
async fn drive_phones(
    calls: usize,
    phones: Vec<(std::net::UdpSocket, SocketAddr)>,
    seconds: u64,
    cpu: impl Fn() -> f64,
) -> BenchResult<LoadResult> {
    let epoch = Instant::now();
    let measure_from = epoch + Duration::from_secs(1);
    let stop = measure_from + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (socket, target) in phones {
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        let socket = UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(phone(
            socket,
            target,
            epoch,
            measure_from,
            stop,
        )));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = cpu();
    let wall = Instant::now();
    tokio::time::sleep_until(stop.into()).await;
    let cpu_used = cpu() - cpu_before;
    let elapsed = wall.elapsed();
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await.map_err(|e| e.to_string())?);
    }
    Ok(summarise(calls, stats, cpu_used, elapsed))
}

/// A tiny bencode for rtpengine's NG control protocol: dictionaries of byte strings out,
/// and the `result`/`sdp`/`error-reason` strings back.
mod ng {
    pub(super) fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut sorted = pairs.to_vec();
        sorted.sort_by_key(|(k, _)| *k);
        let mut out = b"d".to_vec();
        for (k, v) in sorted {
            out.extend_from_slice(format!("{}:{k}{}:", k.len(), v.len()).as_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'e');
        out
    }

    /// The value of string key `key` at the top level of a bencoded dictionary.
    pub(super) fn string_value(dict: &[u8], key: &str) -> Option<String> {
        let mut at = 1;
        while at < dict.len() && dict[at] != b'e' {
            let (k, next) = read_string(dict, at)?;
            at = next;
            if dict.get(at).is_some_and(|c| c.is_ascii_digit()) {
                let (v, next) = read_string(dict, at)?;
                if k == key.as_bytes() {
                    return Some(String::from_utf8_lossy(v).into_owned());
                }
                at = next;
            } else {
                at = skip(dict, at)?;
            }
        }
        None
    }

    fn read_string(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let colon = at + b[at..].iter().position(|&c| c == b':')?;
        let len: usize = std::str::from_utf8(&b[at..colon]).ok()?.parse().ok()?;
        let start = colon + 1;
        Some((b.get(start..start + len)?, start + len))
    }

    fn skip(b: &[u8], at: usize) -> Option<usize> {
        match *b.get(at)? {
            b'i' => Some(at + b[at..].iter().position(|&c| c == b'e')? + 1),
            b'l' | b'd' => {
                let mut i = at + 1;
                while *b.get(i)? != b'e' {
                    i = skip(b, i)?;
                }
                Some(i + 1)
            }
            c if c.is_ascii_digit() => read_string(b, at).map(|(_, n)| n),
            _ => None,
        }
    }
}

/// The SDP port of the first `m=audio` line.
fn sdp_audio_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

fn phone_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

/// A running rtpengine in userspace mode, killed on drop.
pub struct Rtpengine {
    child: std::process::Child,
    ng: std::net::UdpSocket,
    ng_addr: SocketAddr,
    cookie: u64,
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rtpengine {
    /// Starts `rtpengine --table=-1` on loopback with its NG control port.
    pub fn start(binary: &str) -> BenchResult<Rtpengine> {
        let ng_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let ng_addr: SocketAddr = ([127, 0, 0, 1], ng_port).into();
        let child = std::process::Command::new(binary)
            .args([
                "--table=-1",
                "--interface=127.0.0.1",
                "--foreground",
                "--log-stderr",
            ])
            .arg(format!("--listen-ng={ng_addr}"))
            .args([
                "--port-min=40000",
                "--port-max=49999",
                "--log-level=3",
                "--num-threads=1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let ng = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        ng.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        let mut engine = Rtpengine {
            child,
            ng,
            ng_addr,
            cookie: 0,
        };
        // Wait for the control port to answer.
        for _ in 0..40 {
            if engine.command(&[("command", "ping")]).is_ok() {
                return Ok(engine);
            }
        }
        Err("rtpengine did not answer ping on its NG port".into())
    }

    fn command(&mut self, pairs: &[(&str, &str)]) -> BenchResult<Vec<u8>> {
        self.cookie += 1;
        let mut msg = format!("{} ", self.cookie).into_bytes();
        msg.extend(ng::encode(pairs));
        self.ng
            .send_to(&msg, self.ng_addr)
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65_535];
        let (n, _) = self.ng.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let reply = &buf[..n];
        let space = reply
            .iter()
            .position(|&c| c == b' ')
            .ok_or("NG reply without cookie")?;
        let dict = reply[space + 1..].to_vec();
        match ng::string_value(&dict, "result").as_deref() {
            Some("ok") | Some("pong") => Ok(dict),
            other => Err(format!(
                "rtpengine said {other:?}: {:?}",
                ng::string_value(&dict, "error-reason")
            )
            .into()),
        }
    }

    /// CPU seconds rtpengine has used.
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.child.id())
    }

    /// Sets up one call between two phone ports; returns where each phone must send.
    fn call(
        &mut self,
        call_id: &str,
        caller_port: u16,
        callee_port: u16,
    ) -> BenchResult<(u16, u16)> {
        let offer = self.command(&[
            ("command", "offer"),
            ("call-id", call_id),
            ("from-tag", "caller"),
            ("sdp", &phone_sdp(caller_port)),
        ])?;
        let to_callee = ng::string_value(&offer, "sdp")
            .and_then(|s| sdp_audio_port(&s))
            .ok_or("offer without SDP port")?;
        let answer = self.command(&[
            ("command", "answer"),
            ("call-id", call_id),
            ("from-tag", "caller"),
            ("to-tag", "callee"),
            ("sdp", &phone_sdp(callee_port)),
        ])?;
        let to_caller = ng::string_value(&answer, "sdp")
            .and_then(|s| sdp_audio_port(&s))
            .ok_or("answer without SDP port")?;
        // The caller sends to the port in the answer, the callee to the one in the offer.
        Ok((to_caller, to_callee))
    }

    fn delete(&mut self, call_id: &str) {
        let _ = self.command(&[
            ("command", "delete"),
            ("call-id", call_id),
            ("from-tag", "caller"),
        ]);
    }
}

/// Runs `calls` relayed calls through rtpengine (no recording) for `seconds`.
pub async fn run_rtpengine_level(
    engine: &mut Rtpengine,
    calls: usize,
    seconds: u64,
) -> BenchResult<LoadResult> {
    let mut phones = Vec::new();
    let mut ids = Vec::new();
    for i in 0..calls {
        let caller = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let callee = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let id = format!("bench-{calls}-{i}");
        let (to_caller, to_callee) = engine.call(
            &id,
            caller.local_addr().map_err(|e| e.to_string())?.port(),
            callee.local_addr().map_err(|e| e.to_string())?.port(),
        )?;
        phones.push((caller, SocketAddr::from(([127, 0, 0, 1], to_caller))));
        phones.push((callee, SocketAddr::from(([127, 0, 0, 1], to_callee))));
        ids.push(id);
    }
    let pid_cpu = {
        let pid = engine.child.id();
        move || process_cpu_seconds(pid)
    };
    let result = drive_phones(calls, phones, seconds, pid_cpu).await;
    for id in ids {
        engine.delete(&id);
    }
    result
}

/// Finds the largest passing load by doubling from `start` and then bisecting once between
/// the last pass and the first failure. Returns every level measured.
pub async fn search<F, Fut>(start: usize, max: usize, mut level: F) -> BenchResult<Vec<LoadResult>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = BenchResult<LoadResult>>,
{
    let mut results = Vec::new();
    let mut n = start;
    let mut last_pass = 0;
    loop {
        let r = level(n).await?;
        let passed = r.passes();
        results.push(r);
        if !passed {
            break;
        }
        last_pass = n;
        if n >= max {
            return Ok(results);
        }
        n = (n * 2).min(max);
    }
    let mut lo = last_pass;
    let mut hi = n;
    while hi - lo > (hi / 8).max(1) {
        let mid = (lo + hi) / 2;
        let r = level(mid).await?;
        if r.passes() {
            lo = mid;
        } else {
            hi = mid;
        }
        results.push(r);
    }
    Ok(results)
}

/// Prints one system's levels and its best passing N.
pub fn print_table(system: &str, results: &[LoadResult]) {
    println!("\n{system}");
    println!("| calls | packets sent | loss % | p50 added delay µs | p99 added delay µs | CPU % of a core | pass |");
    println!("|------:|-------------:|-------:|-------------------:|-------------------:|----------------:|:----:|");
    let mut sorted: Vec<&LoadResult> = results.iter().collect();
    sorted.sort_by_key(|r| r.calls);
    for r in &sorted {
        println!(
            "| {} | {} | {:.3} | {} | {} | {:.0} | {} |",
            r.calls,
            r.sent,
            r.loss() * 100.0,
            r.p50_us,
            r.p99_us,
            r.cpu_percent,
            if r.passes() { "yes" } else { "no" }
        );
    }
    let best = sorted
        .iter()
        .filter(|r| r.passes())
        .map(|r| r.calls)
        .max()
        .unwrap_or(0);
    let limit_ms = sorted.first().map_or(DEFAULT_MAX_P99_US, |r| r.max_p99_us) as f64 / 1_000.0;
    println!("largest N with loss < 0.1 % and p99 < {limit_ms} ms: {best}");
}

/// The `media-bench` command's options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// age recipients for the appliance's recordings.
    pub recipients: Vec<String>,
    /// Seconds measured per load level.
    pub seconds: u64,
    pub start_calls: usize,
    pub max_calls: usize,
    /// The rtpengine binary, or `none`.
    pub rtpengine: String,
    /// The p99 added-delay limit, µs (the target is 5 000; a busy shared machine may
    /// need a looser one to find where loss, not scheduling noise, sets the limit).
    pub max_p99_us: u64,
}

/// The `media-bench` command: both systems, one table each.
pub async fn run_command(options: BenchOptions) -> BenchResult<()> {
    let BenchOptions {
        recipients,
        seconds,
        start_calls,
        max_calls,
        rtpengine,
        max_p99_us,
    } = options;
    let work = std::env::temp_dir().join(format!("callgate-media-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    // The appliance side gets one worker thread of its own, like a small box.
    let box_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cg-box")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the appliance runtime: {e}"))?;
    let handle = box_runtime.handle().clone();
    println!(
        "media-bench: {seconds} s per level, 20 ms G.711 both ways, appliance on 1 worker thread"
    );
    let appliance = search(start_calls, max_calls, |n| {
        let (handle, recipients, work) = (handle.clone(), recipients.clone(), work.clone());
        async move {
            let mut r = run_appliance_level(&handle, n, seconds, &recipients, &work).await?;
            r.max_p99_us = max_p99_us;
            Ok(r)
        }
    })
    .await;
    box_runtime.shutdown_background();
    let appliance = appliance?;
    print_table("appliance (bridge + encrypted recording)", &appliance);
    let mut relay: Option<Vec<LoadResult>> = None;
    if rtpengine != "none" {
        let engine = std::sync::Arc::new(tokio::sync::Mutex::new(Rtpengine::start(&rtpengine)?));
        let results = search(start_calls, max_calls, |n| {
            let engine = engine.clone();
            async move {
                let mut r = run_rtpengine_level(&mut *engine.lock().await, n, seconds).await?;
                r.max_p99_us = max_p99_us;
                Ok(r)
            }
        })
        .await?;
        print_table(
            "rtpengine --table=-1 (userspace relay, no recording, 1 thread)",
            &results,
        );
        relay = Some(results);
    }
    let _ = std::fs::remove_dir_all(&work);
    let figures = vec![figure(&appliance, relay.as_deref())];
    println!("\n{}", callgate_common::bench::render_table(&figures));
    callgate_common::bench::write_figures_if_asked(&figures)
        .map_err(|e| format!("writing the figures: {e}"))?;
    Ok(())
}

/// The largest passing level of a search.
fn best(results: &[LoadResult]) -> Option<&LoadResult> {
    results
        .iter()
        .filter(|r| r.passes())
        .max_by_key(|r| r.calls)
}

/// The suite's figure: calls carried by the appliance with recording against rtpengine's
/// relay without (the goal: at least as many).
pub fn figure(
    appliance: &[LoadResult],
    rtpengine: Option<&[LoadResult]>,
) -> callgate_common::bench::BenchFigure {
    use callgate_common::bench::{BenchFigure, Goal};
    let calls = |r: Option<&LoadResult>| r.map_or(0.0, |r| r.calls as f64);
    let at = |r: Option<&LoadResult>| {
        r.map_or_else(
            || "none passed".to_string(),
            |r| format!("p99 {} µs, CPU {:.0} %", r.p99_us, r.cpu_percent),
        )
    };
    let ours = best(appliance);
    let peer = rtpengine.map(best);
    BenchFigure {
        benchmark: "media".into(),
        measure: "bridged G.711 calls, loss < 0.1 % and p99 added delay within the limit".into(),
        ours: calls(ours),
        peer: peer.map(calls),
        peer_name: Some("rtpengine userspace, no recording".into()),
        goal: Goal::AtLeastPeer,
        note: format!(
            "ours records encrypted: {}; rtpengine: {}",
            at(ours),
            peer.map_or_else(|| "not run".to_string(), at)
        ),
        condition_failed: false,
    }
}

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
#[error("media benchmark: {0}")]
pub struct BenchError(String);

impl From<String> for BenchError {
    fn from(s: String) -> BenchError {
        BenchError(s)
    }
}

impl From<&str> for BenchError {
    fn from(s: &str) -> BenchError {
        BenchError(s.to_owned())
    }
}

/// A benchmark step's result.
pub type BenchResult<T> = std::result::Result<T, BenchError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ng_messages_are_bencoded_with_sorted_keys_and_replies_are_read() {
        assert_eq!(
            ng::encode(&[("sdp", "v=0"), ("command", "offer")]),
            b"d7:command5:offer3:sdp3:v=0e".to_vec()
        );
        let reply =
            b"d7:createdi1700000000e4:listl2:ab2:cde3:sdp5:m=a 14:metad1:xi1ee6:result2:oke";
        assert_eq!(ng::string_value(reply, "sdp").as_deref(), Some("m=a 1"));
        assert_eq!(ng::string_value(reply, "result").as_deref(), Some("ok"));
        assert_eq!(ng::string_value(reply, "missing"), None);
        assert_eq!(
            ng::string_value(b"d3:sdp99:short", "sdp"),
            None,
            "truncated reply"
        );
        assert_eq!(sdp_audio_port(&phone_sdp(40_002)), Some(40_002));
    }

    fn level(calls: usize, capacity: usize) -> LoadResult {
        LoadResult {
            calls,
            sent: 1_000,
            received: if calls <= capacity { 1_000 } else { 990 },
            p50_us: 100,
            p99_us: 1_000,
            cpu_percent: 1.0,
            max_p99_us: DEFAULT_MAX_P99_US,
        }
    }

    #[tokio::test]
    async fn the_search_doubles_then_narrows_to_the_capacity() {
        let results = search(25, 1_600, |n| async move { Ok(level(n, 300)) })
            .await
            .unwrap();
        let best = results
            .iter()
            .filter(|r| r.passes())
            .map(|r| r.calls)
            .max()
            .unwrap();
        assert!((263..=300).contains(&best), "found {best}");
        assert!(results.iter().any(|r| r.calls == 400 && !r.passes()));
        let all_pass = search(25, 100, |n| async move { Ok(level(n, 10_000)) })
            .await
            .unwrap();
        assert_eq!(all_pass.last().unwrap().calls, 100, "stops at the maximum");
    }
}
