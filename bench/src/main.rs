//! `callgate-bench`: runs every benchmark the issues define and prints one table — our
//! figure, the peer's figure on the same machine in the same run, the ratio and the goal:
//!
//! | step | ours | peer |
//! |---|---|---|
//! | `signalling` | appliance B2BUA (SIPp → appliance → SIPp) | Kamailio tm proxy over the same SIPp pair |
//! | `media` | bridged G.711 calls with encrypted recording | rtpengine userspace relay |
//! | `sync` | exactly-once records/s, N appliances → coordinator | the broker's raw QoS 1 rate |
//! | `import` | contact import into PostgreSQL | PostgreSQL `COPY` of the same file |
//! | `pacing` | our predictive core's occupancy | VICIdial-style adaptive baseline |
//!
//! Each step is one of the benchmark commands, run as a child process with
//! `CALLGATE_BENCH_FIGURES` naming the file it writes its figures to; its output goes to
//! `<out>/<step>.log`. A step that fails is reported and the others still run. `--quick`
//! runs every step small (about two minutes in all, once built); full results go to
//! `<out>/results.json`. Run it through `scripts/bench`, which installs the peers and makes
//! the release build first.

use anyhow::{bail, Context};
use callgate_common::bench::{render_table, BenchFigure, FIGURES_ENV};
use clap::Parser;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "callgate-bench", about = "Every benchmark, one table")]
struct Args {
    /// Small runs of every step (about two minutes in all).
    #[arg(long)]
    quick: bool,
    /// Where logs, figures and results.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Only these steps (comma-separated: signalling, media, sync, import, pacing).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the built programs are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Simulated appliances in the sync step (the goal is 1,000; raise `ulimit -n` first).
    #[arg(long)]
    sync_appliances: Option<usize>,
}

/// The steps, in the order they run.
const STEPS: [&str; 5] = ["pacing", "import", "sync", "signalling", "media"];

/// One step as it ran.
#[derive(Debug, Serialize)]
struct StepResult {
    step: String,
    ok: bool,
    seconds: f64,
    /// Why it failed, when it did.
    error: Option<String>,
    log: PathBuf,
}

/// The whole run, as `results.json` holds it.
#[derive(Debug, Serialize)]
struct Results {
    quick: bool,
    steps: Vec<StepResult>,
    figures: Vec<BenchFigure>,
}

/// How one step is run.
#[derive(Debug, Clone, PartialEq)]
struct Invocation {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Builds the invocation of `step`. `bins` is the directory of built programs; `work` the
/// step's scratch directory.
fn invocation(step: &str, args: &Args, bins: &Path, work: &Path) -> anyhow::Result<Invocation> {
    let quick = args.quick;
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(match step {
        "pacing" => Invocation {
            program: bins.join("callgate-pacing-bench"),
            args: if quick {
                strings(&["--quick"])
            } else {
                Vec::new()
            },
            env: Vec::new(),
        },
        "import" => Invocation {
            program: bins.join("examples/bench_contacts"),
            args: if quick {
                strings(&["20000", "20"])
            } else {
                strings(&["1000000", "1000"])
            },
            env: Vec::new(),
        },
        "sync" => {
            let release = bins.file_name().is_some_and(|n| n == "release");
            let mut a = strings(&["test"]);
            if release {
                a.push("--release".into());
            }
            a.extend(strings(&[
                "-p",
                "callgate-system-tests",
                "--test",
                "sync_bench",
                "--",
                "--ignored",
                "--nocapture",
            ]));
            let appliances = args.sync_appliances.unwrap_or(if quick { 5 } else { 50 });
            Invocation {
                program: PathBuf::from("cargo"),
                args: a,
                env: vec![
                    ("SYNC_BENCH_APPLIANCES".into(), appliances.to_string()),
                    (
                        "SYNC_BENCH_RECORDS".into(),
                        if quick { "100" } else { "200" }.into(),
                    ),
                ],
            }
        }
        "signalling" => Invocation {
            program: bins.join("callgate-appliance"),
            args: if quick {
                strings(&[
                    "sip",
                    "bench",
                    "--mode",
                    "compare",
                    "--rates",
                    "50,100",
                    "--seconds",
                    "3",
                ])
            } else {
                strings(&[
                    "sip",
                    "bench",
                    "--mode",
                    "compare",
                    "--rates",
                    "100,200,400,800,1600",
                    "--seconds",
                    "10",
                ])
            },
            env: Vec::new(),
        },
        "media" => {
            let recipient = age_recipient(work)?;
            let mut a = strings(&["media-bench", "--recipient"]);
            a.push(recipient);
            if quick {
                a.extend(strings(&[
                    "--seconds",
                    "2",
                    "--start-calls",
                    "25",
                    "--max-calls",
                    "100",
                ]));
            }
            Invocation {
                program: bins.join("callgate-appliance"),
                args: a,
                env: Vec::new(),
            }
        }
        other => bail!("no step named `{other}` (steps: {})", STEPS.join(", ")),
    })
}

/// A fresh age identity in `work` (the benchmark's recordings are sealed to it); returns its
/// public key.
fn age_recipient(work: &Path) -> anyhow::Result<String> {
    let identity = work.join("bench-identity.txt");
    let _ = std::fs::remove_file(&identity);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .context("running age-keygen (package age, installed by scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "age-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&identity)?;
    public_key_of(&text).context("age-keygen wrote no public key")
}

/// The `age1...` public key in an identity file's comment.
fn public_key_of(identity_file: &str) -> Option<String> {
    identity_file
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .map(|k| k.trim().to_string())
}

/// Runs one step, its output to `log`; the figures it wrote, or why it failed.
fn run_step(inv: &Invocation, figures: &Path, log: &Path) -> anyhow::Result<Vec<BenchFigure>> {
    let _ = std::fs::remove_file(figures);
    let log_file = std::fs::File::create(log)?;
    let status = Command::new(&inv.program)
        .args(&inv.args)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .env(FIGURES_ENV, figures)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .with_context(|| format!("starting {}", inv.program.display()))?;
    if !status.success() {
        bail!(
            "{} exited with {status}; see {}",
            inv.program.display(),
            log.display()
        );
    }
    read_figures(figures)
}

/// The figures a step wrote.
fn read_figures(path: &Path) -> anyhow::Result<Vec<BenchFigure>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the step wrote no figures to {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("figures in {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    for s in &args.only {
        if !STEPS.contains(&s.as_str()) {
            bail!("--only: no step named `{s}` (steps: {})", STEPS.join(", "));
        }
    }
    let bins = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the program's directory")?
            .to_path_buf(),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Absolute: steps run with other working directories (`cargo test` runs in the crate's
    // own folder), and each writes its figures into this folder.
    args.out = std::path::absolute(&args.out)
        .with_context(|| format!("resolving {}", args.out.display()))?;
    let mut results = Results {
        quick: args.quick,
        steps: Vec::new(),
        figures: Vec::new(),
    };
    for step in STEPS
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == *s))
    {
        let log = args.out.join(format!("{step}.log"));
        let figures_path = args.out.join(format!("{step}.json"));
        eprintln!("running {step} …");
        let started = Instant::now();
        let outcome = invocation(step, &args, &bins, &args.out)
            .and_then(|inv| run_step(&inv, &figures_path, &log));
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(figures) => {
                eprintln!("  {step}: {} figure(s) in {seconds:.0} s", figures.len());
                results.figures.extend(figures);
                results.steps.push(StepResult {
                    step: step.to_string(),
                    ok: true,
                    seconds,
                    error: None,
                    log,
                });
            }
            Err(e) => {
                eprintln!("  {step}: FAILED after {seconds:.0} s: {e:#}");
                results.steps.push(StepResult {
                    step: step.to_string(),
                    ok: false,
                    seconds,
                    error: Some(format!("{e:#}")),
                    log,
                });
            }
        }
    }
    println!("{}", render_table(&results.figures));
    for s in results.steps.iter().filter(|s| !s.ok) {
        println!(
            "step {} FAILED: {}",
            s.step,
            s.error.as_deref().unwrap_or("?")
        );
    }
    let path = args.out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    if results.steps.iter().any(|s| !s.ok) {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_common::bench::Goal;

    fn args(quick: bool) -> Args {
        Args {
            quick,
            out: PathBuf::from("out"),
            only: Vec::new(),
            bin_dir: None,
            sync_appliances: None,
        }
    }

    #[test]
    fn quick_runs_every_step_small_and_full_runs_them_at_the_issues_sizes() {
        let bins = Path::new("/t/release");
        let work = Path::new("/tmp");
        let quick = invocation("import", &args(true), bins, work).unwrap();
        assert_eq!(quick.program, bins.join("examples/bench_contacts"));
        assert_eq!(quick.args, vec!["20000", "20"]);
        let full = invocation("import", &args(false), bins, work).unwrap();
        assert_eq!(full.args, vec!["1000000", "1000"]);
        let sync = invocation("sync", &args(true), bins, work).unwrap();
        assert!(sync.args.contains(&"--release".to_string()));
        assert!(sync
            .env
            .contains(&("SYNC_BENCH_APPLIANCES".to_string(), "5".to_string())));
        let debug_sync = invocation("sync", &args(true), Path::new("/t/debug"), work).unwrap();
        assert!(!debug_sync.args.contains(&"--release".to_string()));
        let sip = invocation("signalling", &args(true), bins, work).unwrap();
        assert_eq!(sip.args[..4], ["sip", "bench", "--mode", "compare"]);
        assert!(invocation("nonsense", &args(true), bins, work)
            .unwrap_err()
            .to_string()
            .contains("no step named `nonsense`"));
    }

    #[test]
    fn the_public_key_is_read_from_the_identity_files_comment() {
        let file = "# created: 2026-11-21T09:00:00Z\n# public key: age1qyqszqgpqyqszqgp\nAGE-SECRET-KEY-1XYZ\n";
        assert_eq!(public_key_of(file).as_deref(), Some("age1qyqszqgpqyqszqgp"));
        assert_eq!(public_key_of("AGE-SECRET-KEY-1XYZ\n"), None);
    }

    #[test]
    fn a_failing_step_is_reported_with_its_log_and_a_missing_figures_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let figures = dir.path().join("x.json");
        let failing = Invocation {
            program: PathBuf::from("sh"),
            args: vec!["-c".into(), "echo broken >&2; exit 3".into()],
            env: Vec::new(),
        };
        let err = run_step(&failing, &figures, &log).unwrap_err().to_string();
        assert!(
            err.contains("exit status: 3") && err.contains("x.log"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "broken\n");

        let silent = Invocation {
            program: PathBuf::from("true"),
            args: Vec::new(),
            env: Vec::new(),
        };
        let err = format!("{:#}", run_step(&silent, &figures, &log).unwrap_err());
        assert!(err.contains("wrote no figures"), "{err}");

        let writing = Invocation {
            program: PathBuf::from("sh"),
            args: vec![
                "-c".into(),
                format!(
                    "printf '%s' '[{{\"benchmark\":\"b\",\"measure\":\"m\",\"ours\":2.0,\"peer\":4.0,\"peer_name\":null,\"goal\":\"AtLeastPeer\",\"note\":\"\",\"condition_failed\":false}}]' > \"${FIGURES_ENV}\""
                ),
            ],
            env: Vec::new(),
        };
        let got = run_step(&writing, &figures, &log).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].goal, Goal::AtLeastPeer);
        assert_eq!(got[0].met(), Some(false));
    }
}
