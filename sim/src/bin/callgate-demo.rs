//! `callgate-demo`: the all-in-one demo — coordinator, enrolled appliances, the simulated
//! carrier and a running sample campaign on localhost, until Ctrl-C.

use callgate_sim::demo::{DemoOptions, PortPlan};
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "callgate-demo",
    version,
    about = "Callgate all-in-one demo: coordinator, appliances and a simulated carrier on localhost"
)]
struct Cli {
    /// Where everything is kept between runs.
    #[arg(long, default_value = "callgate-demo-data")]
    data_dir: PathBuf,
    /// Delete the data directory first and start over.
    #[arg(long)]
    reset: bool,
    /// How many appliances (branches) to run, 1 to 5.
    #[arg(long, default_value_t = 1)]
    appliances: usize,
    /// `fixed` (console on 8443, API on 8080, first appliance UI on 9443, ...) or `auto`
    /// (free ports, printed at start).
    #[arg(long, default_value = "fixed", value_parser = ["fixed", "auto"])]
    ports: String,
    /// A scenario file for the simulated carrier (see sim/scenarios/branch.toml).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Seconds between progress lines (0: none).
    #[arg(long, default_value_t = 10)]
    report_every: u64,
    /// Log filter for the programs' own logs (stderr), e.g. `info`.
    #[arg(long, default_value = "warn")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Catch Ctrl-C and SIGTERM from the first moment, so a signal during setup stops the
    // demo cleanly too.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        callgate_common::observe::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    tokio::task::yield_now().await;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| cli.log.clone().into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let opts = DemoOptions {
        data_dir: cli.data_dir,
        reset: cli.reset,
        appliances: cli.appliances,
        ports: if cli.ports == "auto" {
            PortPlan::Auto
        } else {
            PortPlan::Fixed
        },
        scenario: cli.scenario,
        report_every: cli.report_every,
    };
    callgate_sim::demo::run(opts, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    })
    .await?;
    Ok(())
}
