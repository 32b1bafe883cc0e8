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
    /// SIP tools for technicians.
    #[command(subcommand)]
    Sip(SipCommand),
    /// Play a one-second 1 kHz test tone on an ALSA device (the tech audio port).
    #[cfg(feature = "alsa")]
    AudioTest {
        /// ALSA device name, e.g. `default`, `hw:0`, `null`.
        #[arg(long, default_value = "default")]
        device: String,
    },
}

#[derive(Subcommand)]
enum SipCommand {
    /// Parse one SIP message from a file and print its fields, or the error and the answer
    /// the box would send. Exits 0 for a valid message, 1 for an invalid one.
    Parse {
        /// The file holding the message, byte for byte.
        file: PathBuf,
    },
    /// Place one test call through a trunk and print the SIP ladder. Exits 0 when the
    /// call was answered, 1 when it failed.
    Call {
        /// A TOML file with the `[sip]` section (trunks, timers).
        #[arg(long)]
        sip_config: PathBuf,
        /// The trunk to use, by name.
        #[arg(long)]
        trunk: String,
        /// The number to call.
        #[arg(long)]
        to: String,
        /// Cancel if not answered within this many seconds.
        #[arg(long, default_value_t = 30)]
        ring_timeout: u64,
        /// Hold an answered call this many seconds before hanging up.
        #[arg(long, default_value_t = 2)]
        hold: u64,
        /// Print every message in full, not just its first line.
        #[arg(long)]
        trace: bool,
    },
    /// Benchmark on loopback with SIPp: `originate` (appliance → SIPp UAS), `b2bua`
    /// (SIPp UAC → appliance → SIPp UAS) or `kamailio` (the same pair through Kamailio 5.6
    /// as a stateful proxy). Prints a table; build with --release.
    Bench {
        /// `originate`, `b2bua` or `kamailio`.
        #[arg(long, default_value = "originate")]
        mode: String,
        /// Call rates to step through, calls per second.
        #[arg(long, value_delimiter = ',', default_values_t = vec![50, 100, 200, 400])]
        rates: Vec<u32>,
        /// Seconds per step.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    // The SIP tools inspect files: they need no config, so a broken one cannot stop them.
    if let Command::Sip(SipCommand::Parse { file }) = &command {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let verdict = callgate_appliance::sip::inspect::inspect(&bytes);
        print!("{}", verdict.report);
        std::process::exit(if verdict.valid { 0 } else { 1 });
    }
    if let Command::Sip(SipCommand::Call {
        sip_config,
        trunk,
        to,
        ring_timeout,
        hold,
        trace,
    }) = &command
    {
        let settings = callgate_appliance::sip::config::SipConfig::load(sip_config)?;
        let call = callgate_appliance::sip::call::TestCall {
            trunk: trunk.clone(),
            to: to.clone(),
            ring_timeout: std::time::Duration::from_secs(*ring_timeout),
            hold: std::time::Duration::from_secs(*hold),
            trace: *trace,
        };
        let outcome =
            callgate_appliance::sip::call::run(&settings, &call, |l| print!("{l}")).await?;
        use callgate_appliance::sip::call::TestCallOutcome;
        match outcome {
            TestCallOutcome::Completed => {
                println!("call completed");
                std::process::exit(0);
            }
            TestCallOutcome::Failed(status, reason) => {
                println!("call failed: {status} {reason}");
                std::process::exit(1);
            }
        }
    }
    if let Command::Sip(SipCommand::Bench {
        mode,
        rates,
        seconds,
    }) = &command
    {
        use callgate_appliance::sip::bench;
        let rows = match mode.as_str() {
            "originate" => bench::originate(rates, *seconds).await?,
            "b2bua" => bench::b2bua(rates, *seconds).await?,
            "kamailio" => bench::kamailio(rates, *seconds).await?,
            other => anyhow::bail!("--mode must be originate, b2bua or kamailio, not `{other}`"),
        };
        print!("{}", bench::render(mode, &rows));
        return Ok(());
    }
    let config = ApplianceConfig::load(cli.config.as_deref())?;
    match command {
        Command::Sip(_) => Ok(()),
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
        #[cfg(feature = "alsa")]
        Command::AudioTest { device } => {
            let frames = callgate_appliance::tech_audio::play_test_tone(&device, 1_000)?;
            println!("played {frames} frames on ALSA device `{device}`");
            Ok(())
        }
    }
}
