//! The process entry every service binary shares, so each `main.rs` stays thin: the common
//! arguments, config loading from the process environment, telemetry, the listener and the
//! shutdown signal. `turbo-coder serve` reaches the same `run` functions through its own CLI.
//!
//! # Layout
//! - this file: [`CommonArgs`], [`start`] (and [`start_checked`]), [`Misconfigured`] and
//!   [`finish`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use turbo_config::{Config, ServicesConfig};

/// Arguments every service binary takes.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Config file (TOML); TURBO_CODER__SECTION__KEY variables override it. Default: built-in
    /// defaults and the environment only.
    #[arg(long, env = "TURBO_CODER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default: this service's entry in [services]; port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<String>,
}

/// A service process ready to serve.
pub struct Started {
    pub config: Config,
    pub listener: TcpListener,
    /// Cancelled on SIGTERM or Ctrl-C.
    pub shutdown: CancellationToken,
    _telemetry: turbo_telemetry::Guard,
}

/// Exit code of a service that cannot start with its configuration or arguments (a bad config
/// value, a missing setting, an address it cannot bind), as `turbo-coder`'s usage errors.
pub const EXIT_USAGE: u8 = 2;

/// What keeps a service from starting that a change of its configuration fixes; the process
/// exits with [`EXIT_USAGE`].
#[derive(Debug)]
pub struct Misconfigured(pub String);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misconfigured {}

/// Loads the config, starts telemetry, binds, installs the signal handlers and prints
/// `<service> listening on <addr>` on stdout (scripts find a port chosen with :0 there).
pub async fn start(
    service: &'static str,
    args: &CommonArgs,
    default_addr: fn(&ServicesConfig) -> &String,
) -> anyhow::Result<Started> {
    start_checked(service, args, default_addr, |_| Ok(())).await
}

/// [`start`], refusing a config that `check` finds the service cannot run with, before
/// anything is bound or printed.
pub async fn start_checked(
    service: &'static str,
    args: &CommonArgs,
    default_addr: fn(&ServicesConfig) -> &String,
    check: impl FnOnce(&Config) -> Result<(), Misconfigured>,
) -> anyhow::Result<Started> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let config = Config::load(args.config.as_deref(), &env).map_err(|e| Misconfigured(e.to_string()))?;
    check(&config)?;
    let telemetry = turbo_telemetry::init(&turbo_telemetry::Options {
        service: service.into(),
        filter: config.telemetry.log.clone(),
        json: config.telemetry.json_logs,
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
    })
    .map_err(|e| Misconfigured(e.to_string()))?;
    let addr = args.listen.clone().unwrap_or_else(|| default_addr(&config.services).clone());
    let listener = turbo_proto::server::bind(&addr).await.map_err(|e| Misconfigured(e.to_string()))?;
    let shutdown = turbo_proto::server::shutdown_on_signal()?;
    println!("{service} listening on {}", listener.local_addr()?);
    Ok(Started { config, listener, shutdown, _telemetry: telemetry })
}

/// The exit code of a service process ([`EXIT_USAGE`] for [`Misconfigured`], else 1); errors
/// are printed to stderr.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<Misconfigured>() { ExitCode::from(EXIT_USAGE) } else { ExitCode::FAILURE }
        }
    }
}

/// The whole `main` of a service binary whose only arguments are [`CommonArgs`]:
/// `turbo_service::main!("turbo-gateway", gateway, |s| turbo_gateway::run(&s.config, s.listener, s.shutdown));`
#[macro_export]
macro_rules! main {
    ($name:literal, $addr:ident, |$s:ident| $run:expr) => {
        #[derive(::clap::Parser, Debug)]
        #[command(name = $name, version, about = concat!("turbo-coder service ", $name))]
        struct Args {
            #[command(flatten)]
            common: $crate::CommonArgs,
        }

        #[::tokio::main]
        async fn main() -> ::std::process::ExitCode {
            let args = <Args as ::clap::Parser>::parse();
            $crate::finish(
                async {
                    let $s = $crate::start($name, &args.common, |c| &c.$addr).await?;
                    $run.await?;
                    Ok(())
                }
                .await,
            )
        }
    };
}
