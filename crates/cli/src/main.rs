//! `turbo-coder`: the one user-facing binary. `run` executes a development task end to end in
//! this process, or with `--server` on a running cluster (`remote.rs`); `serve` starts one
//! service of the cluster.

mod approvals;
mod doctor;
mod exit;
mod project;
mod remote;
mod render;
mod rewind;
mod run;
mod serve;
mod tasks;
mod token;
mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turbo_config::Config;
use turbo_store::Store;

use crate::exit::Exit;

#[derive(Parser, Debug)]
#[command(
    name = "turbo-coder",
    version,
    about = "Plan, write, test and review code changes with local and remote models"
)]
struct Cli {
    /// Config file (TOML); default: ~/.config/turbo-coder/config.toml when it exists.
    #[arg(long, global = true, env = "TURBO_CODER_CONFIG")]
    config: Option<PathBuf>,
    /// Where the embedded database lives (overrides store.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log filter for stderr, e.g. info or turbo=debug (overrides telemetry.log).
    #[arg(long, global = true)]
    log: Option<String>,
    /// Run `run` and `tasks` on a cluster: its orchestrator's gRPC address, e.g.
    /// http://127.0.0.1:50051 (other commands ignore it).
    #[arg(long, global = true, env = "TURBO_CODER_SERVER", value_name = "URL")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Plan a task and, with --apply, carry it out: code, tests, review.
    Run(run::RunArgs),
    /// Check the configuration, the model endpoints, the models and the tools.
    Doctor(doctor::DoctorArgs),
    /// Inspect stored tasks.
    Tasks {
        #[command(subcommand)]
        command: tasks::TasksCommand,
    },
    /// Show the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Start one service of the cluster.
    Serve(serve::ServeArgs),
    /// Put a task's workspace back as it was before the task, or before one of its steps.
    Rewind(rewind::RewindArgs),
    /// List, approve or deny the tool calls waiting for a person (needs --server).
    Approvals {
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// Print a bearer token for the gateway's REST API, signed with gateway.jwt_secret.
    Token(token::TokenArgs),
    /// Register the gateway's users, make and revoke their API keys.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Show,
}

fn load_config(cli: &Cli, env: &BTreeMap<String, String>) -> Result<Config, Exit> {
    let file = match &cli.config {
        Some(p) => Some(p.clone()),
        None => turbo_config::default_config_path().filter(|p| p.exists()),
    };
    let mut config = Config::load(file.as_deref(), env).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    if let Some(dir) = &cli.data_dir {
        config.store.data_dir = Some(dir.clone());
    }
    if let Some(log) = &cli.log {
        config.telemetry.log = log.clone();
    }
    Ok(config)
}

pub(crate) async fn open_store(config: &Config) -> Result<Store, Exit> {
    turbo_orchestrator::local::open_store(config).await.map_err(|e| Exit::new(exit::STORAGE, e.to_string()))
}

async fn dispatch(cli: Cli, env: BTreeMap<String, String>) -> Result<u8, Exit> {
    let mut config = load_config(&cli, &env)?;
    let service = match &cli.command {
        Command::Serve(args) => format!("turbo-{}", args.service.name()),
        _ => "turbo-coder".to_string(),
    };
    let _telemetry = turbo_telemetry::init(&turbo_telemetry::Options {
        service,
        filter: config.telemetry.log.clone(),
        json: config.telemetry.json_logs,
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
    })
    .map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    // Checked only where it is used, so an exported TURBO_CODER_SERVER does not stop `serve`.
    let server = || cli.server.as_deref().map(remote::server_url).transpose();
    match cli.command {
        Command::Run(args) => match server()? {
            Some(url) => remote::run(&url, args).await,
            None => run::run(&mut config, args).await,
        },
        Command::Doctor(args) => doctor::doctor(&config, args).await,
        Command::Tasks { command } => match server()? {
            Some(url) => remote::tasks(&url, command).await,
            None => tasks::tasks(&config, command).await,
        },
        Command::Config { command: ConfigCommand::Show } => {
            print!("{}", config.to_redacted_toml());
            Ok(exit::OK)
        }
        Command::Serve(args) => serve::serve(&config, args).await,
        Command::Rewind(args) => match server()? {
            Some(url) => Err(Exit::new(
                exit::USAGE,
                format!(
                    "rewind runs where the tools ran, not through --server {url}: run it on the tool-runner's host with its configuration"
                ),
            )),
            None => rewind::rewind(&config, args).await,
        },
        Command::Approvals { command } => approvals::approvals(server()?, command).await,
        Command::Token(args) => token::token(&config, args),
        Command::User { command } => user::user(&config, command).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    match runtime.block_on(dispatch(cli, env)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code)
        }
    }
}
