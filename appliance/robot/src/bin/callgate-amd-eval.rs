//! `callgate-amd-eval`: generates a labelled set of call openings with espeak-ng and prints
//! how the answering-machine detector does on it (accuracy, confusion matrix, mean decision
//! time). The same `--count` and `--seed` give the same set and the same table.
//!
//!     cargo run -p callgate-robot --bin callgate-amd-eval -- --count 200 --seed 1

use anyhow::Context;
use callgate_robot::amd::corpus::CorpusGenerator;
use callgate_robot::amd::eval::Evaluation;
use callgate_robot::amd::{AmdVerdict, CadenceDetector, CadenceSettings, MachineDetector};
use callgate_robot::EspeakNg;
use clap::Parser;

/// Measure answering-machine detection on a generated, labelled set.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Calls to generate (half human, half machine).
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The espeak-ng program.
    #[arg(long, default_value = "espeak-ng")]
    espeak: String,
    /// Also print every misclassified call.
    #[arg(long)]
    verbose: bool,
    /// Override the detector's longest human greeting, ms.
    #[arg(long)]
    max_greeting_ms: Option<u32>,
    /// Override the silence after a greeting that makes it a person's, ms.
    #[arg(long)]
    after_greeting_silence_ms: Option<u32>,
    /// Override the decision deadline, ms.
    #[arg(long)]
    deadline_ms: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tts = EspeakNg::new(&args.espeak);
    let calls = CorpusGenerator::new(&tts)
        .generate(args.count, args.seed)
        .context("generating the labelled set")?;
    let mut settings = CadenceSettings::default();
    let defaults = settings;
    if let Some(ms) = args.max_greeting_ms {
        settings.max_greeting_ms = ms;
    }
    if let Some(ms) = args.after_greeting_silence_ms {
        settings.after_greeting_silence_ms = ms;
    }
    if let Some(ms) = args.deadline_ms {
        settings.deadline_ms = ms;
    }
    let started = std::time::Instant::now();
    let evaluation = Evaluation::run(&calls, || {
        Box::new(CadenceDetector::new(settings)) as Box<dyn MachineDetector>
    });
    let detector_time = started.elapsed();
    println!(
        "callgate-amd-eval: CadenceDetector ({} settings) on {} espeak-ng calls, seed {}",
        if settings == defaults {
            "default"
        } else {
            "custom"
        },
        args.count,
        args.seed
    );
    println!(
        "settings: max greeting {} ms, after-greeting silence {} ms, deadline {} ms",
        settings.max_greeting_ms, settings.after_greeting_silence_ms, settings.deadline_ms
    );
    println!();
    print!("{}", evaluation.table());
    if args.verbose {
        println!();
        println!("misclassified:");
        for (call, d) in calls.iter().zip(&evaluation.decisions) {
            let right = matches!(
                (call.truth, d.verdict),
                (callgate_robot::amd::corpus::Truth::Human, AmdVerdict::Human)
                    | (
                        callgate_robot::amd::corpus::Truth::Machine,
                        AmdVerdict::Machine
                    )
            );
            if !right {
                println!(
                    "  {:?} -> {:?} ({:?}, {} ms) {:.0} dBFS, SNR {:.0} dB, voice {} {} wpm: {:?}",
                    call.truth,
                    d.verdict,
                    d.reason,
                    d.after_ms,
                    call.level_dbfs,
                    call.snr_db,
                    call.style.voice.as_deref().unwrap_or("-"),
                    call.style.words_per_minute.unwrap_or(0),
                    call.text
                );
            }
        }
    }
    // Wall-clock cost goes to stderr so that stdout stays the same for the same seed.
    let frames: u64 = evaluation
        .decisions
        .iter()
        .map(|d| u64::from(d.after_ms / 20).max(1))
        .sum();
    eprintln!(
        "detector cost: {:.1} µs per 20 ms frame ({} frames, {} build)",
        detector_time.as_secs_f64() * 1e6 / frames.max(1) as f64,
        frames,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    Ok(())
}
