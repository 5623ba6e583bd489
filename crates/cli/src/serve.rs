//! `turbo-coder serve <service>`: one service of the cluster in this process, with gRPC
//! health checking and server reflection (so grpcurl works without proto files).
//!
//! This stage of the cluster serves health and reflection; the task, knowledge, tool and
//! gateway APIs are added to these same entry points service by service.

use clap::{Args, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use turbo_config::Config;
use turbo_core::agent::AgentRole;

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

    /// The gRPC services this process reports as serving.
    fn grpc_services(self) -> &'static [&'static str] {
        match self {
            Service::Gateway => {
                &["turbo.tasks.v1.TaskService", "turbo.projects.v1.ProjectService", "turbo.sessions.v1.SessionService"]
            }
            Service::Orchestrator => &["turbo.tasks.v1.TaskService", "turbo.projects.v1.ProjectService"],
            Service::AgentWorker => &["turbo.agents.v1.AgentService"],
            Service::Knowledge => &["turbo.knowledge.v1.KnowledgeService"],
            Service::ToolRunner => &["turbo.tools.v1.ToolService"],
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

pub async fn serve(config: &Config, args: ServeArgs) -> Result<u8, Exit> {
    if matches!(args.service, Service::AgentWorker) && args.role.is_none() {
        return Err(Exit::new(exit::USAGE, "agent-worker needs --role planner|coder|tester|reviewer"));
    }
    let addr = args.listen.clone().unwrap_or_else(|| args.service.default_addr(config));
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| Exit::new(exit::USAGE, format!("cannot listen on {addr}: {e}; pick a free --listen address")))?;
    let local = listener.local_addr().map_err(|e| Exit::new(exit::INTERNAL, e.to_string()))?;
    // Printed on stdout so scripts and the test harness can find a port chosen with :0.
    println!("turbo-{} listening on {local}", args.service.name());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    turbo_proto::server::serve_health(args.service.grpc_services(), listener, shutdown)
        .await
        .map_err(|e| Exit::new(exit::INTERNAL, e.to_string()))?;
    Ok(exit::OK)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
