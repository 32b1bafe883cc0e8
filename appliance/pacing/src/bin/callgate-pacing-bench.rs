//! `callgate-pacing-bench`: runs every scenario file through every strategy and prints the
//! comparison table. The only place in this crate that reads files.
//!
//!     cargo run --release -p callgate-pacing --bin callgate-pacing-bench
//!     cargo run --release -p callgate-pacing --bin callgate-pacing-bench -- --days 3 FILE...
//!     cargo run --release -p callgate-pacing --bin callgate-pacing-bench -- --quick --json out.json

use std::path::PathBuf;

use anyhow::Context;
use callgate_pacing::sim::{report, run, Scenario, Strategy};
use clap::Parser;

/// Pacing benchmark: progressive, fixed ratio, VICIdial adaptive modes and our predictive
/// core, in a discrete-event simulation (virtual time, seeded).
#[derive(Debug, Parser)]
#[command(name = "callgate-pacing-bench")]
struct Args {
    /// Scenario files or folders of `*.toml` (default: the crate's `scenarios/`).
    paths: Vec<PathBuf>,
    /// Override every scenario's number of days.
    #[arg(long)]
    days: Option<u32>,
    /// Override every scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Three days per scenario instead of the file's days (a few seconds in all).
    #[arg(long, conflicts_with = "days")]
    quick: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn scenario_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut here: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            here.sort();
            files.extend(here);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")]
    } else {
        args.paths.clone()
    };
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    let mut figures = Vec::new();
    for file in scenario_files(&paths)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading scenario {}", file.display()))?;
        let mut scenario =
            Scenario::parse(&text).with_context(|| format!("in scenario {}", file.display()))?;
        if let Some(d) = args.days.or(args.quick.then_some(3)) {
            scenario.days = d.max(1);
        }
        if let Some(s) = args.seed {
            scenario.seed = s;
        }
        let mut rows = Vec::new();
        for strategy in Strategy::lineup(&scenario) {
            rows.push(run(&scenario, &strategy).with_context(|| {
                format!("simulating {} under {}", file.display(), strategy.label())
            })?);
        }
        println!(
            "{}",
            report::table(&scenario.name, scenario.days, scenario.agent_count(), &rows)
        );
        figures.extend(report::figure(&scenario.name, &rows));
        results.push(report::json(
            &scenario.name,
            scenario.days,
            scenario.agent_count(),
            &rows,
        ));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = std::env::var_os(callgate_common::bench::FIGURES_ENV) {
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("writing {}", std::path::Path::new(&path).display()))?;
    }
    println!(
        "(simulated in {:.1} s of wall time)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
