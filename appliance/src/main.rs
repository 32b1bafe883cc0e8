//! `callgate-appliance`: command-line entry point. Parses arguments, loads the config,
//! starts logging and hands over to the library.

use anyhow::Context;
use callgate_appliance::config::ApplianceConfig;
use callgate_common::observe;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "callgate-appliance",
    version,
    about = "The Callgate gateway daemon"
)]
struct Cli {
    /// The TOML config file; embedded defaults when omitted.
    #[arg(long, short, global = true, env = "CALLGATE_APPLIANCE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default command).
    Run,
    /// Load and validate the config, print it, and exit.
    CheckConfig,
    /// Record a known test tone (440 Hz left, 1 kHz right) as an encrypted recording, to check
    /// recipients end to end. Prints one line per finished segment: index, file, bytes, SHA-256.
    RecordTone {
        /// An age X25519 recipient (`age1...`); repeat for several.
        #[arg(long = "recipient", required = true)]
        recipients: Vec<String>,
        /// Seconds of audio to record.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Length of each sealed segment, seconds.
        #[arg(long, default_value_t = 60)]
        segment_seconds: u32,
    },
    /// The media load benchmark: N bridged G.711 calls through the appliance with recording
    /// on, then through rtpengine (userspace) without; prints loss, delay and CPU per N.
    MediaBench {
        /// An age X25519 recipient for the benchmark's recordings (`age1...`).
        #[arg(long = "recipient", required = true)]
        recipients: Vec<String>,
        /// Seconds measured at each load level (after a one-second warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// First load level, in calls.
        #[arg(long, default_value_t = 25)]
        start_calls: usize,
        /// Highest load level tried.
        #[arg(long, default_value_t = 1_600)]
        max_calls: usize,
        /// The rtpengine binary; `none` skips the comparison.
        #[arg(long, default_value = "rtpengine")]
        rtpengine: String,
    },
    /// Play a one-second 1 kHz test tone on an ALSA device (the tech audio port).
    #[cfg(feature = "alsa")]
    AudioTest {
        /// ALSA device name, e.g. `default`, `hw:0`, `null`.
        #[arg(long, default_value = "default")]
        device: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = ApplianceConfig::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            let text = toml::to_string_pretty(&config.raw).context("printing config")?;
            println!("config OK\n\n{text}");
            Ok(())
        }
        Command::Run => {
            observe::init_logging(&config.raw.log)?;
            callgate_appliance::server::run(config, observe::shutdown_signal()).await?;
            Ok(())
        }
        Command::RecordTone {
            recipients,
            seconds,
            segment_seconds,
        } => {
            use callgate_appliance::recording::{
                record_test_tone, RecordingSettings, SqliteSegmentStore,
            };
            use std::io::Write;
            let data_dir = &config.raw.appliance.data_dir;
            let settings = RecordingSettings {
                recipients,
                segment_seconds,
                ..RecordingSettings::default()
            }
            .validate(data_dir)?;
            let store = callgate_appliance::store::Store::open(data_dir).await?;
            let segments = SqliteSegmentStore::new(store.pool().clone());
            let all = record_test_tone(&settings, segments, seconds, |r| {
                let mut out = std::io::stdout().lock();
                // A closed stdout must not stop the recording.
                let _ = writeln!(
                    out,
                    "segment {} {} {} {}",
                    r.index, r.file_name, r.ciphertext_bytes, r.sha256_hex
                );
                let _ = out.flush();
            })
            .await?;
            println!(
                "recorded {} segment(s) under {}",
                all.len(),
                settings.directory.display()
            );
            Ok(())
        }
        Command::MediaBench {
            recipients,
            seconds,
            start_calls,
            max_calls,
            rtpengine,
        } => {
            use callgate_appliance::media::bench;
            let work =
                std::env::temp_dir().join(format!("callgate-media-bench-{}", std::process::id()));
            std::fs::create_dir_all(&work).context("creating the benchmark's work directory")?;
            // The appliance side gets one worker thread of its own, like a small box.
            let box_runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("cg-box")
                .enable_all()
                .build()
                .context("starting the appliance runtime")?;
            let handle = box_runtime.handle().clone();
            println!("media-bench: {seconds} s per level, 20 ms G.711 both ways, appliance on 1 worker thread");
            let appliance =
                bench::search(start_calls, max_calls, |n| {
                    let (handle, recipients, work) =
                        (handle.clone(), recipients.clone(), work.clone());
                    async move {
                        bench::run_appliance_level(&handle, n, seconds, &recipients, &work).await
                    }
                })
                .await?;
            bench::print_table("appliance (bridge + encrypted recording)", &appliance);
            if rtpengine != "none" {
                let engine = std::sync::Arc::new(tokio::sync::Mutex::new(bench::Rtpengine::start(
                    &rtpengine,
                )?));
                let results = bench::search(start_calls, max_calls, |n| {
                    let engine = engine.clone();
                    async move {
                        bench::run_rtpengine_level(&mut *engine.lock().await, n, seconds).await
                    }
                })
                .await?;
                bench::print_table(
                    "rtpengine --table=-1 (userspace relay, no recording, 1 thread)",
                    &results,
                );
            }
            box_runtime.shutdown_background();
            let _ = std::fs::remove_dir_all(&work);
            Ok(())
        }
        #[cfg(feature = "alsa")]
        Command::AudioTest { device } => {
            let frames = callgate_appliance::tech_audio::play_test_tone(&device, 1_000)?;
            println!("played {frames} frames on ALSA device `{device}`");
            Ok(())
        }
    }
}
