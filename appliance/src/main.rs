//! `callgate-appliance`: command-line entry point. Parses arguments, loads the config,
//! starts logging and hands over to the library.

use anyhow::Context;
use callgate_appliance::config::ApplianceConfig;
use callgate_appliance::sync::identity::IdentityDir;
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
    /// Enroll this box with the coordinator: key pair generated here, CSR sent with the
    /// one-time claim code over HTTPS, certificate, CA and broker address stored.
    Enroll {
        /// The coordinator's enrollment URL, e.g. `https://hq.example.com:8443`.
        #[arg(long)]
        coordinator: String,
        /// The claim code HQ gave you.
        #[arg(long)]
        claim: String,
        /// PEM file of the CA to trust for the coordinator's HTTPS certificate (the
        /// system trust store when omitted).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Generate this box's key pair (kept here, mode 0600) and write a certificate signing
    /// request for offline provisioning (`callgate-coordinator appliance provision`).
    Csr {
        /// Where to write the CSR (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Install the certificate and CA a coordinator issued for this box's CSR.
    InstallIdentity {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        ca: PathBuf,
    },
    /// Run the link with synthetic call records (fault tests and benchmark): generates
    /// records up to --records (continuing after a restart) and exits once all are acked.
    SyncLoad {
        #[arg(long)]
        records: u64,
        /// Records per second; 0 for as fast as the disk commits.
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// Benchmark: runs `sync-load` for every appliance config (`*.toml`) in --dir at
    /// once, in this one process, and prints the end-to-end rate.
    SyncBench {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        records: u64,
        /// Records per second per appliance; 0 for as fast as the disk commits.
        #[arg(long, default_value_t = 0)]
        rate: u32,
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
        Command::Enroll {
            coordinator,
            claim,
            ca,
        } => {
            let enrolled = callgate_appliance::sync::enroll::enroll(
                &config.raw.appliance.data_dir,
                &coordinator,
                &claim,
                ca.as_deref(),
                config.id.as_ref(),
            )
            .await?;
            println!(
                "enrolled as {}; broker {}",
                enrolled.appliance,
                enrolled.broker.as_deref().unwrap_or("(not given)")
            );
            Ok(())
        }
        Command::Csr { out } => {
            let id = config
                .id
                .context("appliance.id must be set to make a CSR")?;
            let identity = IdentityDir::in_data_dir(&config.raw.appliance.data_dir);
            let csr = identity.generate_csr(&id)?;
            std::fs::write(&out, csr).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "key kept in {}; CSR written to {}",
                identity.key_path().display(),
                out.display()
            );
            Ok(())
        }
        Command::InstallIdentity { cert, ca } => {
            let identity = IdentityDir::in_data_dir(&config.raw.appliance.data_dir);
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            identity.install(&read(&cert)?, &read(&ca)?)?;
            identity.client_tls()?;
            println!("identity installed in {}", identity.cert_path().display());
            Ok(())
        }
        Command::SyncLoad { records, rate } => {
            observe::init_logging(&config.raw.log)?;
            let report = callgate_appliance::sync::load::run_load(&config, records, rate).await?;
            println!(
                "generated {} records this run; coordinator acked up to {}",
                report.generated, report.acked
            );
            Ok(())
        }
        Command::SyncBench { dir, records, rate } => {
            observe::init_logging(&config.raw.log)?;
            let (n, generated, secs) =
                callgate_appliance::sync::load::run_many(&dir, records, rate).await?;
            println!(
                "appliances={n} records={generated} seconds={secs:.2} records_per_second={:.0}",
                generated as f64 / secs
            );
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
