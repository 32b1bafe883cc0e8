//! `callgate-coordinator`: command-line entry point. Parses arguments, loads the config,
//! starts logging and hands over to the library.

use anyhow::Context;
use callgate_common::observe;
use callgate_coordinator::config::CoordinatorConfig;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "callgate-coordinator",
    version,
    about = "The Callgate cloud service"
)]
struct Cli {
    /// The TOML config file; embedded defaults when omitted.
    #[arg(long, short, global = true, env = "CALLGATE_COORDINATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Use this database instead of SQLite in the data directory (`postgres://...`).
    #[arg(long, global = true, env = "CALLGATE_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process with embedded defaults (the default command).
    AllInOne,
    /// Load and validate the config, print it, and exit.
    CheckConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = CoordinatorConfig::load(cli.config.as_deref(), cli.database_url)?;
    match cli.command.unwrap_or(Command::AllInOne) {
        Command::CheckConfig => {
            println!("config OK\n\n{}", toml_of(&config.raw)?);
            Ok(())
        }
        Command::AllInOne => {
            observe::init_logging(&config.raw.log)?;
            callgate_coordinator::server::run(config, observe::shutdown_signal()).await?;
            Ok(())
        }
    }
}

fn toml_of(config: &CoordinatorConfig) -> anyhow::Result<String> {
    toml::to_string_pretty(config).context("printing config")
}
