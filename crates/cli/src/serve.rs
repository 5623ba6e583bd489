//! `turbo-coder serve <service>`: one service of the cluster in this process, through the same
//! `run` entry point as the service's own binary (`turbo-orchestrator`, ...).
//!
//! Every service serves gRPC health checking and server reflection (so grpcurl works without
//! proto files); the orchestrator also serves the task and project APIs, and an agent worker
//! (which needs `cluster.nats_url`) serves its role's work queue from NATS. The knowledge, tool
//! and gateway APIs are added to these same entry points service by service.

use clap::{Args, ValueEnum};
use turbo_config::Config;
use turbo_core::agent::AgentRole;
use turbo_proto::server::{bind, shutdown_on_signal};

use crate::exit::{self, Exit};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Service {
    Gateway,
    Orchestrator,
    AgentWorker,
    Knowledge,
    ToolRunner,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Orchestrator => "orchestrator",
            Service::AgentWorker => "agent-worker",
            Service::Knowledge => "knowledge",
            Service::ToolRunner => "tool-runner",
        }
    }

    fn default_addr(self, config: &Config) -> String {
        let s = &config.services;
        match self {
            Service::Gateway => s.gateway.clone(),
            Service::Orchestrator => s.orchestrator.clone(),
            Service::AgentWorker => s.agent_worker.clone(),
            Service::Knowledge => s.knowledge.clone(),
            Service::ToolRunner => s.tool_runner.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    pub service: Service,
    /// Address to listen on (default from the [services] config section; port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<String>,
    /// For agent-worker: the role it hosts.
    #[arg(long)]
    pub role: Option<AgentRole>,
}

/// What to start, with the role checked: agent-worker needs one, the others take none.
enum Target {
    Gateway,
    Orchestrator,
    AgentWorker(AgentRole),
    Knowledge,
    ToolRunner,
}

fn target(service: Service, role: Option<AgentRole>) -> Result<Target, Exit> {
    match (service, role) {
        (Service::AgentWorker, Some(role)) => Ok(Target::AgentWorker(role)),
        (Service::AgentWorker, None) => {
            Err(Exit::new(exit::USAGE, "agent-worker needs --role planner|coder|tester|reviewer"))
        }
        (other, Some(_)) => {
            Err(Exit::new(exit::USAGE, format!("--role is for agent-worker only; drop it to serve {}", other.name())))
        }
        (Service::Gateway, None) => Ok(Target::Gateway),
        (Service::Orchestrator, None) => Ok(Target::Orchestrator),
        (Service::Knowledge, None) => Ok(Target::Knowledge),
        (Service::ToolRunner, None) => Ok(Target::ToolRunner),
    }
}

pub async fn serve(config: &Config, args: ServeArgs) -> Result<u8, Exit> {
    let target = target(args.service, args.role)?;
    // Checked before anything is bound or printed: a worker without NATS has nothing to serve.
    if let Target::AgentWorker(role) = target
        && config.cluster.nats_url.is_none()
    {
        return Err(Exit::new(exit::USAGE, turbo_agent_worker::Error::NoNats { role }.to_string()));
    }
    if let Target::Gateway = target {
        turbo_gateway::check(config).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    }
    let addr = args.listen.clone().unwrap_or_else(|| args.service.default_addr(config));
    let listener = bind(&addr).await.map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let local = listener.local_addr().map_err(|e| Exit::new(exit::INTERNAL, e.to_string()))?;
    let shutdown = shutdown_on_signal()
        .map_err(|e| Exit::new(exit::INTERNAL, format!("cannot install the signal handlers: {e}")))?;
    // Printed on stdout so scripts and the test harness can find a port chosen with :0.
    println!("turbo-{} listening on {local}", args.service.name());
    let served = match target {
        // No keys to check tokens with (the identity provider's JWKS URL cannot be fetched) is
        // the configuration's or the environment's to fix: the usage code.
        Target::Gateway => {
            turbo_gateway::run(config, listener, shutdown).await.map_err(|e| match e {
                turbo_gateway::Error::NoKey(_) => Exit::new(exit::USAGE, e.to_string()),
                other => Exit::new(exit::INTERNAL, other.to_string()),
            })?;
            Ok(())
        }
        // The orchestrator opens the store and connects the models: their errors keep their codes.
        Target::Orchestrator => {
            let knowledge = match config.cluster.nats_url {
                // The cluster's agent workers reach the knowledge service themselves.
                Some(_) => None,
                None => {
                    crate::run::open_knowledge(
                        config,
                        |error| tracing::warn!(%error, "the embedded agents run without retrieved context"),
                    )
                    .await
                }
            };
            turbo_orchestrator::run_with(config, listener, shutdown, knowledge)
                .await
                .map_err(exit::for_orchestrator_error)?;
            Ok(())
        }
        Target::AgentWorker(role) => {
            turbo_agent_worker::run(config, role, listener, shutdown).await.map_err(|e| match e {
                turbo_agent_worker::Error::Model(m) => Exit::new(exit::for_model_error(&m), m.to_string()),
                e @ turbo_agent_worker::Error::Bus(turbo_bus::Error::Connect { .. }) => {
                    Exit::new(exit::USAGE, e.to_string())
                }
                other => Exit::new(exit::INTERNAL, other.to_string()),
            })?;
            Ok(())
        }
        // What keeps the knowledge service from starting (no embedding model, a dataset of
        // another model, no NATS) is the configuration's to fix: the usage code, as its binary.
        Target::Knowledge => {
            turbo_knowledge::run(config, listener, shutdown).await.map_err(|e| {
                match e.downcast_ref::<turbo_service::Misconfigured>() {
                    Some(m) => Exit::new(exit::USAGE, m.to_string()),
                    None => Exit::new(exit::INTERNAL, e.to_string()),
                }
            })?;
            Ok(())
        }
        Target::ToolRunner => turbo_tool_runner::run(config, listener, shutdown).await.map_err(|e| e.to_string()),
    };
    served.map_err(|e| Exit::new(exit::INTERNAL, e))?;
    Ok(exit::OK)
}
