//! Serves a JSON scenario (see `Script::from_json`) until interrupted:
//! `scripted-model-server --scenario FILE [--port N]`.

use std::net::SocketAddr;
use std::process::ExitCode;

use turbo_testkit::{Error, Script, ScriptedModelServer};

const USAGE: &str = "usage: scripted-model-server --scenario FILE [--port N]";

struct Args {
    scenario: String,
    port: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut scenario = None;
    let mut port = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scenario" => scenario = args.next(),
            "--port" => {
                let value = args.next().unwrap_or_default();
                port = value.parse().map_err(|_| format!("--port {value:?} is not a port number"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let scenario = scenario.ok_or_else(|| "--scenario FILE is required".to_owned())?;
    Ok(Args { scenario, port })
}

fn load(path: &str) -> Result<Script, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadScenario { path: path.to_owned(), source })?;
    let scenario =
        serde_json::from_str(&text).map_err(|e| Error::Scenario { reason: format!("{path} is not json: {e}") })?;
    Script::from_json(&scenario)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let script = match load(&args.scenario) {
        Ok(script) => script,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = match ScriptedModelServer::start_on(script, addr).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("cannot listen on {addr}: {error}; pick another --port");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for ctrl-c: {error}");
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}
