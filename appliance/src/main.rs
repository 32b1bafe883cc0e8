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
    /// SIP tools for technicians.
    #[command(subcommand)]
    Sip(SipCommand),
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
        /// Fill every outbox first, print `prefilled`, wait for a line on stdin, then time
        /// only the link draining them.
        #[arg(long)]
        prefill: bool,
        /// Keep every link up this many seconds after its outbox has drained (print
        /// `drained` when all have), for counting held connections.
        #[arg(long, default_value_t = 0)]
        hold_secs: u64,
    },
    /// Benchmark of the agent desk: time to route an answered call and to run a whole call
    /// through an agent's states, for each number of agents; prints a table.
    AgentsBench {
        /// Agents logged in, one table row each.
        #[arg(long, value_delimiter = ',', default_values_t = vec![5, 100, 1000])]
        agents: Vec<usize>,
        /// Calls per row.
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
    },
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
    /// (SIPp UAC → appliance → SIPp UAS), `kamailio` (the same pair through Kamailio 5.6
    /// as a stateful proxy) or `compare` (all three, then ours against Kamailio). Prints a
    /// table; build with --release.
    Bench {
        /// `originate`, `b2bua`, `kamailio` or `compare`.
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
    if let Command::AgentsBench { agents, calls } = &command {
        callgate_appliance::agents::bench::print_table(agents, *calls);
        return Ok(());
    }
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
            "compare" => {
                let b2bua = bench::b2bua(rates, *seconds).await?;
                print!("{}", bench::render("b2bua", &b2bua));
                let kamailio = bench::kamailio(rates, *seconds).await?;
                print!("{}", bench::render("kamailio", &kamailio));
                let originate = bench::originate(rates, *seconds).await?;
                print!("{}", bench::render("originate", &originate));
                let figures = bench::figures(&b2bua, &kamailio, &originate);
                print!("{}", callgate_common::bench::render_table(&figures));
                callgate_common::bench::write_figures_if_asked(&figures)?;
                return Ok(());
            }
            other => {
                anyhow::bail!("--mode must be originate, b2bua, kamailio or compare, not `{other}`")
            }
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
            let exit = callgate_appliance::server::run(config, observe::shutdown_signal()).await?;
            if let callgate_appliance::server::RunExit::Restart(reason) = exit {
                // The same program, arguments and PID, started afresh with the new state.
                use std::os::unix::process::CommandExt;
                let program = std::env::current_exe()?;
                tracing::warn!(%reason, program = %program.display(), "re-executing");
                let error = std::process::Command::new(program)
                    .args(std::env::args_os().skip(1))
                    .exec();
                return Err(anyhow::anyhow!(
                    "re-executing the daemon after {reason}: {error}"
                ));
            }
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
        Command::AgentsBench { .. } => Ok(()),
        Command::SyncBench {
            dir,
            records,
            rate,
            prefill,
            hold_secs,
        } => {
            observe::init_logging(&config.raw.log)?;
            let hold = (hold_secs > 0).then(|| std::time::Duration::from_secs(hold_secs));
            let (n, generated, secs) =
                callgate_appliance::sync::load::run_many(&dir, records, rate, prefill, hold)
                    .await?;
            println!(
                "appliances={n} records={generated} seconds={secs:.2} records_per_second={:.0}",
                generated as f64 / secs
            );
            Ok(())
        }
        #[cfg(feature = "alsa")]
        Command::AudioTest { device } => {
            let frames = callgate_board::tech_audio::play_test_tone(&device, 1_000)?;
            println!("played {frames} frames on ALSA device `{device}`");
            Ok(())
        }
    }
}
