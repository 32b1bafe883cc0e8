//! `callgate-coordinator`: command-line entry point. Parses arguments, loads the config,
//! starts logging and hands over to the library.

use anyhow::Context;
use callgate_common::ids::ApplianceId;
use callgate_common::observe;
use callgate_common::time::UnixMillis;
use callgate_coordinator::broker::mosquitto;
use callgate_coordinator::config::CoordinatorConfig;
use callgate_coordinator::enroll::pki::OrgCa;
use callgate_coordinator::enroll::registry;
use callgate_coordinator::store::Store;
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
    /// Write an external MQTT broker's configuration for the appliance link.
    #[command(subcommand)]
    BrokerConfig(BrokerKind),
    /// Register, provision and revoke appliances.
    #[command(subcommand)]
    Appliance(ApplianceCommand),
    /// Create an API token and print it (shown once).
    CreateApiToken {
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// Scopes, e.g. `admin` or `campaigns:read contacts:read`.
        #[arg(long, num_args = 1.., required = true)]
        scopes: Vec<String>,
    },
    /// Create an HQ console user; the password is read from the first line of stdin.
    CreateConsoleUser {
        /// The login name.
        #[arg(long)]
        username: String,
        /// admin, supervisor, compliance or viewer.
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// Import a CSV file of contacts into a list (created if missing), with progress.
    ImportContacts {
        /// The list's name.
        #[arg(long)]
        list: String,
        /// Region for national-format numbers (ISO 3166 alpha-2), when the list is new.
        #[arg(long, default_value = "US")]
        default_region: String,
        /// The CSV file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BrokerKind {
    /// Mosquitto 2: TLS listener, client certificates required, per-appliance ACL.
    Mosquitto {
        /// Directory to write mosquitto.conf, acl, ca.pem, server.pem and server.key into.
        #[arg(long)]
        dir: PathBuf,
        /// The broker's TLS listener, e.g. `0.0.0.0:8883`.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Host names or IPs the broker's certificate should carry (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ApplianceCommand {
    /// Register an appliance and print its one-time claim code (valid 24 h).
    Register {
        name: String,
        #[arg(long, default_value = "")]
        site: String,
    },
    /// Offline enrollment: sign a CSR the box generated (`callgate-appliance csr`) and
    /// write `cert.pem` and `ca.pem` into `--out` for the technician to carry back.
    Provision {
        name: String,
        #[arg(long, default_value = "")]
        site: String,
        #[arg(long)]
        csr: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Offline enrollment of many boxes at once (a site roll-out, the sync benchmark):
    /// signs every `{dir}/{name}.csr` and writes `{dir}/{name}/cert.pem` and `ca.pem`.
    ProvisionMany {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "")]
        site: String,
    },
    /// Revoke an appliance: refused by the link, left out of the next broker ACL.
    Revoke { name: String },
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
        Command::BrokerConfig(BrokerKind::Mosquitto { dir, listen, names }) => {
            let (store, ca) = open_store_and_ca(&config.raw).await?;
            let appliances = registry::enrolled(store.pool()).await?;
            let conf = mosquitto::write(&ca, &dir, listen, &names, &appliances)?;
            print!("{conf}");
            Ok(())
        }
        Command::Appliance(cmd) => {
            let (store, ca) = open_store_and_ca(&config.raw).await?;
            let now = UnixMillis::now();
            match cmd {
                ApplianceCommand::Register { name, site } => {
                    let name = ApplianceId::new(name)?;
                    let code = registry::register(store.pool(), &name, &site, now).await?;
                    println!("{code}");
                }
                ApplianceCommand::Provision {
                    name,
                    site,
                    csr,
                    out,
                } => {
                    let name = ApplianceId::new(name)?;
                    let csr = std::fs::read_to_string(&csr)
                        .with_context(|| format!("reading {}", csr.display()))?;
                    let issued =
                        registry::provision(store.pool(), &ca, &name, &site, &csr, now).await?;
                    std::fs::create_dir_all(&out)?;
                    std::fs::write(out.join("cert.pem"), &issued.cert_pem)?;
                    std::fs::write(out.join("ca.pem"), ca.cert_pem())?;
                    println!(
                        "{name}: certificate {} written to {}",
                        issued.serial,
                        out.display()
                    );
                }
                ApplianceCommand::ProvisionMany { dir, site } => {
                    let mut csrs: Vec<PathBuf> = std::fs::read_dir(&dir)
                        .with_context(|| format!("reading {}", dir.display()))?
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "csr"))
                        .collect();
                    csrs.sort();
                    for path in &csrs {
                        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                        let name = ApplianceId::new(stem)
                            .with_context(|| format!("appliance name of {}", path.display()))?;
                        let csr = std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        let issued =
                            registry::provision(store.pool(), &ca, &name, &site, &csr, now)
                                .await
                                .with_context(|| format!("provisioning {name}"))?;
                        let out = dir.join(name.as_str());
                        std::fs::create_dir_all(&out)?;
                        std::fs::write(out.join("cert.pem"), &issued.cert_pem)?;
                        std::fs::write(out.join("ca.pem"), ca.cert_pem())?;
                    }
                    println!("{} appliances provisioned in {}", csrs.len(), dir.display());
                }
                ApplianceCommand::Revoke { name } => {
                    let name = ApplianceId::new(name)?;
                    registry::revoke(store.pool(), &name).await?;
                    println!("{name} revoked; regenerate the broker ACL");
                }
            }
            store.pool().close().await;
            Ok(())
        }
        Command::CreateApiToken { name, scopes } => {
            let store = open_store(&config).await?;
            let token =
                callgate_coordinator::api::tokens::create_token(&store, &name, &scopes).await?;
            println!("{token}");
            Ok(())
        }
        Command::CreateConsoleUser { username, role } => {
            use callgate_coordinator::console::{audit::Actor, auth};
            let role = auth::Role::parse(&role).with_context(|| {
                format!("--role {role:?}: use admin, supervisor, compliance or viewer")
            })?;
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let store = open_store(&config).await?;
            let user = auth::create_user(
                &store,
                &Actor("cli".into()),
                &username,
                role,
                password.trim_end_matches(['\r', '\n']),
            )
            .await?;
            println!("console user {} created as {}", user.username, user.role);
            store.pool().close().await;
            Ok(())
        }
        Command::ImportContacts {
            list,
            default_region,
            file,
        } => import_contacts(&config, &list, &default_region, &file).await,
        Command::AllInOne => {
            observe::init_logging(&config.raw.log)?;
            callgate_coordinator::server::run(config, observe::shutdown_signal()).await?;
            Ok(())
        }
    }
}

async fn open_store_and_ca(config: &CoordinatorConfig) -> anyhow::Result<(Store, OrgCa)> {
    let store = Store::open(&config.store.data_dir, config.store.database_url.as_deref()).await?;
    let ca = OrgCa::load_or_create(&config.store.data_dir.join("pki"))?;
    Ok((store, ca))
}

fn toml_of(config: &CoordinatorConfig) -> anyhow::Result<String> {
    toml::to_string_pretty(config).context("printing config")
}

async fn open_store(
    config: &callgate_coordinator::config::ValidConfig,
) -> anyhow::Result<callgate_coordinator::store::Store> {
    Ok(callgate_coordinator::store::Store::open(
        &config.raw.store.data_dir,
        config.raw.store.database_url.as_deref(),
    )
    .await?)
}

/// `import-contacts`: streams the file in, drawing a progress bar on stderr.
async fn import_contacts(
    config: &callgate_coordinator::config::ValidConfig,
    list: &str,
    default_region: &str,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    use callgate_coordinator::contacts::{self, import, vault::NumberVault, ContactListId};
    use std::io::Write;
    let store = open_store(config).await?;
    let vault =
        NumberVault::open_or_create(&config.raw.store.data_dir.join("contact-numbers.key"))?;
    let list = contacts::list_by_name_or_create(&store, list, default_region).await?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let total = f.metadata()?.len();
    let started = std::time::Instant::now();
    let report = import::import_csv(
        &store,
        &vault,
        ContactListId(list.id),
        std::io::BufReader::with_capacity(1 << 16, f),
        Some(total),
        |p| {
            let pct = p.bytes_read * 100 / total.max(1);
            let bar = "#".repeat((pct / 4) as usize);
            let rate = p.rows_seen as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r[{bar:<25}] {pct:>3}%  {} rows  {rate:.0} rows/s",
                p.rows_seen
            );
            let _ = std::io::stderr().flush();
        },
    )
    .await?;
    eprintln!();
    println!(
        "imported {} new, {} duplicates, {} rejected of {} rows in {:.1}s",
        report.imported,
        report.duplicates,
        report.rejected,
        report.rows_seen,
        started.elapsed().as_secs_f64()
    );
    for e in &report.errors {
        println!("line {}: {}", e.line, e.reason);
    }
    if report.rejected as usize > report.errors.len() {
        println!(
            "... {} more; all are listed at GET /api/v1/imports/{}",
            report.rejected as usize - report.errors.len(),
            report.import_id
        );
    }
    Ok(())
}
