//! `turbo-coder doctor`: is everything a run needs in place? Config, endpoints, models,
//! context lengths, the database, the programs tools use.

use clap::Args;
use turbo_config::Config;
use turbo_core::agent::AgentRole;
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
