//! `callgate-sim`: runs the simulated carrier (and agents, when the scenario has them)
//! from a scenario file until Ctrl-C, printing what happened every few seconds.

use anyhow::Context;
use callgate_sim::agents::SimAgents;
use callgate_sim::carrier::SimCarrier;
use callgate_sim::scenario::Scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "callgate-sim",
    version,
    about = "The site simulator: a simulated carrier and simulated agents on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenario until Ctrl-C.
    Run {
        /// The scenario file (TOML; see sim/scenarios/branch.toml).
        #[arg(long)]
        scenario: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds between progress lines (0: none).
        #[arg(long, default_value_t = 10)]
        report_every: u64,
    },
    /// Validate a scenario and print it with every default filled in.
    Check {
        /// The scenario file.
        #[arg(long)]
        scenario: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "callgate_sim=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { scenario } => {
            let s = Scenario::load(&scenario)?;
            println!("scenario OK\n\n{}", s.to_toml());
            Ok(())
        }
        Command::Run {
            scenario,
            seed,
            report_every,
        } => {
            let mut s = Scenario::load(&scenario)?;
            if let Some(seed) = seed {
                s.seed = seed;
            }
            let carrier = SimCarrier::start(&s.carrier, s.seed)
                .await
                .context("starting the simulated carrier")?;
            println!("carrier listening on sip:{} (UDP)", carrier.local_addr());
            let agents = match &s.agents {
                Some(a) => Some(SimAgents::start(a, s.seed).await?),
                None => None,
            };
            let mut tick = tokio::time::interval(Duration::from_secs(report_every.max(1)));
            tick.tick().await;
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::pin!(ctrl_c);
            loop {
                tokio::select! {
                    _ = &mut ctrl_c => break,
                    _ = tick.tick(), if report_every > 0 => {
                        let c = carrier.stats();
                        print!(
                            "calls {} (answered {}, busy {}, no answer {}, machines {}), active {}",
                            c.calls, c.answered, c.busy, c.no_answer, c.machine, c.active
                        );
                        if let Some(a) = &agents {
                            let a = a.stats();
                            print!("; agents: logins {}, calls {}, dispositions {}", a.logins, a.calls, a.dispositions);
                        }
                        println!();
                    }
                }
            }
            if let Some(a) = agents {
                a.stop().await;
            }
            let c = carrier.stop().await;
            println!(
                "stopped: {} calls, {} answered, RTP sent {} received {}",
                c.calls, c.answered, c.rtp.sent, c.rtp.received
            );
            Ok(())
        }
    }
}
