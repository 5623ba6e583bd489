//! `turbo-agent-worker`: an agent worker as a process of its own, the same service as `turbo-coder serve agent-worker --role R`.
//! Thin by design: everything but the service itself is in `turbo_service`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "turbo-agent-worker", version, about = "turbo-coder agent-worker service")]
struct Args {
    #[command(flatten)]
    common: turbo_service::CommonArgs,
    /// The agent role this worker hosts: planner, coder, tester or reviewer.
    #[arg(long)]
    role: turbo_core::agent::AgentRole,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    turbo_service::finish(
        async {
            let role = args.role;
            // A worker without NATS has nothing to serve: refused before anything is bound.
            let needs_nats = |c: &turbo_config::Config| match c.cluster.nats_url {
                Some(_) => Ok(()),
                None => Err(turbo_service::Misconfigured(turbo_agent_worker::Error::NoNats { role }.to_string())),
            };
            let s = turbo_service::start_checked("turbo-agent-worker", &args.common, |c| &c.agent_worker, needs_nats)
                .await?;
            turbo_agent_worker::run(&s.config, args.role, s.listener, s.shutdown).await?;
            Ok(())
        }
        .await,
    )
}
