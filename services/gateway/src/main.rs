//! `turbo-gateway`: the gateway as a process of its own, the same service as
//! `turbo-coder serve gateway`. Thin by design: everything but the service is in `turbo_service`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "turbo-gateway", version, about = "turbo-coder gateway service")]
struct Args {
    #[command(flatten)]
    common: turbo_service::CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    turbo_service::finish(
        async {
            // Without a token key nothing could be served: refused before anything is bound.
            let needs_secret = |c: &turbo_config::Config| {
                turbo_gateway::check(c).map(|_| ()).map_err(|e| turbo_service::Misconfigured(e.to_string()))
            };
            let s = turbo_service::start_checked("turbo-gateway", &args.common, |c| &c.gateway, needs_secret).await?;
            turbo_gateway::run(&s.config, s.listener, s.shutdown).await?;
            Ok(())
        }
        .await,
    )
}
