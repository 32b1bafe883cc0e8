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
        /// The p99 added-delay limit in µs (the target is 5000).
        #[arg(long, default_value_t = 5_000)]
        max_p99_us: u64,
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
            use callgate_appliance::recording::{record_tone_command, RecordingSettings};
            let data_dir = &config.raw.appliance.data_dir;
            let settings = RecordingSettings {
                recipients,
                segment_seconds,
                ..RecordingSettings::default()
            }
            .validate(data_dir)?;
            let store = callgate_appliance::store::Store::open(data_dir).await?;
            record_tone_command(&settings, &store, seconds).await?;
            Ok(())
        }
        Command::MediaBench {
            recipients,
            seconds,
            start_calls,
            max_calls,
            rtpengine,
            max_p99_us,
        } => {
            use callgate_appliance::media::bench::{run_command, BenchOptions};
            run_command(BenchOptions {
                recipients,
                seconds,
                start_calls,
                max_calls,
                rtpengine,
                max_p99_us,
            })
            .await?;
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
