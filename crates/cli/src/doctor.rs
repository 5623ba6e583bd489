//! `turbo-coder doctor`: is everything a run needs in place? Config, endpoints, models,
//! context lengths, the database, the knowledge base, the programs tools use.

use clap::Args;
use turbo_config::Config;
use turbo_core::agent::AgentRole;
use turbo_core::knowledge::Knowledge;
use turbo_orchestrator::local::Models;

use crate::exit::{self, Exit};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// One JSON object with every check.
    #[arg(long)]
    pub json: bool,
}

struct Check {
    name: String,
    ok: bool,
    detail: String,
    /// A failed essential check makes doctor exit non-zero.
    essential: bool,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Where agents get retrieved context from, or why they run without it. Not essential: a run
/// without retrieved context still works.
async fn knowledge(config: &Config) -> Check {
    let name = "knowledge".to_string();
    let k = &config.knowledge;
    if !k.enabled {
        let detail = "off (knowledge.enabled = false): agents run without retrieved context".to_string();
        return Check { name, ok: true, detail, essential: false };
    }
    let uri = k.dataset_uri(&config.store);
    match turbo_knowledge::KnowledgeBase::open(config).await {
        Ok(base) => {
            let dataset = base.dataset();
            let mut detail =
                format!("embedding model {} ({} dimensions), dataset {uri}", dataset.model_id(), dataset.dimension());
            match base.stats(None).await {
                Ok(stats) => detail.push_str(&format!(
                    "; {} chunks of {} files in {} projects",
                    stats.chunks, stats.files, stats.projects
                )),
                Err(error) => detail.push_str(&format!("; cannot read its statistics: {error}")),
            }
            Check { name, ok: true, detail, essential: false }
        }
        Err(error) => Check {
            name,
            ok: false,
            detail: format!("off, agents run without retrieved context: {error}"),
            essential: false,
        },
    }
}

pub async fn doctor(config: &Config, args: DoctorArgs) -> Result<u8, Exit> {
    let mut checks = Vec::new();
    let models = Models::connect(config).map_err(exit::for_orchestrator_error)?;
    let mut seen: Vec<(String, String)> = Vec::new();
    for role in AgentRole::ALL {
        let model = models.get(*role);
        let s = model.settings();
        let name = format!("{role} model {} at {} ({})", s.model, s.base_url, s.provider);
        if seen.contains(&(s.base_url.clone(), s.model.clone())) {
            continue;
        }
        seen.push((s.base_url.clone(), s.model.clone()));
        match model.check_model().await {
            Ok(()) => {
                let window = model.context_window().await;
                let detected = model.model_info().await.ok().and_then(|i| i.context_length);
                let detail = match detected {
                    Some(n) => format!("installed; context {n} tokens, using {window} (tool mode {:?})", s.tool_mode),
                    None => {
                        format!("installed; context length not reported, using {window} (tool mode {:?})", s.tool_mode)
                    }
                };
                checks.push(Check { name, ok: true, detail, essential: true });
            }
            Err(e) => checks.push(Check { name, ok: false, detail: e.to_string(), essential: true }),
        }
    }
    match crate::open_store(config).await {
        Ok(store) => checks.push(Check {
            name: "database".into(),
            ok: true,
            detail: format!("{} ({})", config.store.database_url(), store.backend()),
            essential: true,
        }),
        Err(e) => checks.push(Check { name: "database".into(), ok: false, detail: e.message, essential: true }),
    }
    checks.push(knowledge(config).await);
    // Tools that run processes are refused when the sandbox cannot run: essential.
    let sandbox = turbo_tool_runner::RunnerLimits::from_config(config).sandbox;
    checks.push(match sandbox.check().await {
        Ok(detail) => Check { name: "tool sandbox".into(), ok: true, detail, essential: true },
        Err(e) => Check { name: "tool sandbox".into(), ok: false, detail: e.to_string(), essential: true },
    });
    for (program, why) in
        [("python3", "python_run and python tests"), ("git", "git_status and git_diff"), ("sh", "shell_run")]
    {
        let ok = on_path(program);
        checks.push(Check {
            name: format!("program {program}"),
            ok,
            detail: if ok { format!("found (for {why})") } else { format!("not found: {why} will fail") },
            essential: program == "sh",
        });
    }
    let failed = checks.iter().any(|c| c.essential && !c.ok);
    if args.json {
        let v: Vec<_> = checks
            .iter()
            .map(|c| serde_json::json!({"check": c.name, "ok": c.ok, "detail": c.detail, "essential": c.essential}))
            .collect();
        println!("{}", serde_json::json!({"ok": !failed, "checks": v}));
    } else {
        for c in &checks {
            println!(
                "{} {}: {}",
                if c.ok {
                    "✓"
                } else if c.essential {
                    "✗"
                } else {
                    "!"
                },
                c.name,
                c.detail
            );
        }
        println!("{}", if failed { "some checks failed: fix them before `turbo-coder run`" } else { "all set" });
    }
    Ok(if failed { exit::MODEL_UNAVAILABLE } else { exit::OK })
}
