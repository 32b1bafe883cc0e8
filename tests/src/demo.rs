//! The all-in-one demo (`callgate-demo`) as a user runs it: started on free ports, its
//! printed lines read as they come, stopped with Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running demo, killed when dropped (a failing test leaves nothing behind).
pub struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Demo {
    /// Starts `callgate-demo` with `appliances` boxes on free ports, its stderr to `log`.
    pub fn start(data: &Path, log: &Path, appliances: usize) -> Demo {
        let mut child = Command::new(crate::binary("callgate-demo"))
            .arg("--data-dir")
            .arg(data)
            .args(["--ports", "auto", "--report-every", "2", "--appliances"])
            .arg(appliances.to_string())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting callgate-demo");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a printed line containing `needle`.
    pub fn line_with(&mut self, needle: &str, limit: Duration, log: &Path) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                Ok(l) => self.seen.push(l),
                Err(_) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "no line with {needle:?} within {limit:?}; printed:\n{}\nlog:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            }
        }
    }

    /// Ctrl-C, then the exit status (within 60 s); otherwise fails with what the demo
    /// printed and logged (the shutdown stages it was still waiting for).
    pub fn interrupt(&mut self, log: &Path) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return s;
            }
            if Instant::now() >= deadline {
                while let Ok(l) = self.lines.try_recv() {
                    self.seen.push(l);
                }
                panic!(
                    "the demo did not stop within 60 s of SIGINT; printed:\n{}\nlog:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The first `https://...` URL in a printed line.
pub fn url_in(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("https://") || w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string()
}
