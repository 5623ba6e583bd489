//! `package_manager`: the spec's package tool over each ecosystem's own program, run in the
//! sandbox in the workspace: python (pip, in the workspace's `.venv`, made on the first
//! install), nodejs (npm), rust (cargo), go (go) and java (maven).
//!
//! Every ecosystem answers every operation or says why it cannot (pip has no search, maven
//! has no lockfile), and a program that is not installed is named with how to get it. Maven
//! has no command that adds or removes a dependency: java install, uninstall and update with
//! packages edit `pom.xml` ([`crate::maven`]), in the sandbox like the file tools.
//! Installing needs the network, which the sandbox gives only with `[sandbox] network = true`;
//! without it the command fails and the model is told why. `check_vulnerabilities` uses the
//! ecosystem's audit tool (`pip-audit`, `npm audit`, `cargo audit`, `govulncheck`, OWASP
//! dependency-check for maven).

use std::ffi::OsString;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use turbo_core::tool::{RiskLevel, ToolCategory};

use crate::confined::InSandbox;
use crate::error::{Error, Result};
use crate::maven::PomEdit;
use crate::process::{self, Run};
use crate::sandbox::SandboxMode;
use crate::schema::{self, Args};
use crate::tool::{ResourceEstimate, Tool, ToolContext, ToolOutput};

const NAME: &str = "package_manager";
const ECOSYSTEMS: &[&str] = &["python", "nodejs", "rust", "go", "java"];
const OPERATIONS: &[&str] = &[
    "install",
    "uninstall",
    "update",
    "list",
    "search",
    "analyze_dependencies",
    "check_vulnerabilities",
    "generate_lockfile",
];

/// Operations that change the workspace (its manifests, lockfiles or installed packages).
fn mutates(operation: &str) -> bool {
    matches!(operation, "install" | "uninstall" | "update" | "generate_lockfile")
}

/// A command to run: the program, its arguments, and what to say when it is missing.
struct Command {
    program: &'static str,
    args: Vec<String>,
    hint: &'static str,
}

fn command(program: &'static str, hint: &'static str, args: &[&str]) -> Command {
    Command { program, args: args.iter().map(|a| a.to_string()).collect(), hint }
}

/// Package names as the ecosystems take them, none read as an option.
fn packages(args: &Args<'_>, needed: bool) -> Result<Vec<String>> {
    let Some(values) = args.opt_array("packages")? else {
        return if needed {
            Err(Error::bad_args(NAME, "give packages: the names (with versions if wanted, e.g. requests==2.32.3)"))
        } else {
            Ok(Vec::new())
        };
    };
    if needed && values.is_empty() {
        return Err(Error::bad_args(NAME, "packages is empty: name at least one"));
    }
    values
        .iter()
        .map(|v| {
            let name = v.as_str().ok_or_else(|| Error::bad_args(NAME, "packages must be strings"))?;
            let ok = !name.is_empty()
                && !name.starts_with('-')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "@/._-=<>~^:+*".contains(c));
            if ok {
                Ok(name.to_string())
            } else {
                Err(Error::bad_args(NAME, format!("'{name}' is not a package name")))
            }
        })
        .collect()
}

/// How a call is carried out.
enum Plan {
    /// These commands, in order (a python install first makes the `.venv`).
    Run(Vec<Command>),
    /// The ecosystem cannot do it, for this reason.
    Cannot(String),
    /// An edit of `pom.xml` ([`crate::maven`]).
    EditPom,
}

/// How one call is carried out.
fn plan(ecosystem: &str, operation: &str, args: &Args<'_>, has_venv: bool) -> Result<Plan> {
    const PIP_HINT: &str = "install python3 with pip (apt-get install python3-pip python3-venv)";
    const NPM_HINT: &str = "install Node.js and npm (apt-get install npm)";
    const CARGO_HINT: &str = "install Rust's cargo where the sandbox sees it (e.g. [sandbox] read_only_paths and path)";
    const GO_HINT: &str = "install Go (apt-get install golang)";
    const MVN_HINT: &str = "install Maven (apt-get install maven)";
    let pkgs = packages(args, matches!(operation, "install" | "uninstall" | "search"))?;
    let with =
        |base: &[&str]| -> Vec<String> { base.iter().map(|s| s.to_string()).chain(pkgs.iter().cloned()).collect() };
    // pip runs in the workspace's virtual environment, never on the read-only system.
    let pip = |base: &[&str]| Command {
        program: if has_venv { ".venv/bin/python" } else { "python3" },
        args: ["-m", "pip", "--disable-pip-version-check", "--no-input"]
            .iter()
            .map(|s| s.to_string())
            .chain(with(base))
            .collect(),
        hint: PIP_HINT,
    };
    let venv = || command("python3", PIP_HINT, &["-m", "venv", ".venv"]);
    let plan = match (ecosystem, operation) {
        ("python", "install" | "update") => {
            let mut steps = if has_venv { Vec::new() } else { vec![venv()] };
            let mut base = vec!["install"];
            if operation == "update" {
                base.push("--upgrade");
            }
            steps.push(Command { program: ".venv/bin/python", ..pip(&base) });
            steps
        }
        ("python", "uninstall") => vec![pip(&["uninstall", "-y"])],
        ("python", "list") => vec![pip(&["list", "--format=freeze"])],
        ("python", "search") => {
            return Ok(Plan::Cannot(
                "PyPI has no search API that pip can use: name the package, or look it up on pypi.org".into(),
            ));
        }
        ("python", "analyze_dependencies") => vec![pip(&["list", "--format=freeze"]), pip(&["check"])],
        ("python", "check_vulnerabilities") => vec![command(
            "pip-audit",
            "install pip-audit (pip install pip-audit) where the sandbox sees it",
            &["--progress-spinner", "off"],
        )],
        ("python", "generate_lockfile") => vec![pip(&["freeze", "--exclude-editable"])],
        ("nodejs", "install") => {
            vec![Command { args: with(&["install", "--no-fund", "--no-audit"]), ..command("npm", NPM_HINT, &[]) }]
        }
        ("nodejs", "uninstall") => vec![Command { args: with(&["uninstall"]), ..command("npm", NPM_HINT, &[]) }],
        ("nodejs", "update") => vec![Command { args: with(&["update"]), ..command("npm", NPM_HINT, &[]) }],
        ("nodejs", "list") => vec![command("npm", NPM_HINT, &["ls", "--depth=0"])],
        ("nodejs", "search") => {
            vec![Command { args: with(&["search", "--no-description"]), ..command("npm", NPM_HINT, &[]) }]
        }
        ("nodejs", "analyze_dependencies") => vec![command("npm", NPM_HINT, &["ls", "--all"])],
        ("nodejs", "check_vulnerabilities") => vec![command("npm", NPM_HINT, &["audit"])],
        ("nodejs", "generate_lockfile") => {
            vec![command("npm", NPM_HINT, &["install", "--package-lock-only", "--no-fund", "--no-audit"])]
        }
        ("rust", "install") => vec![Command { args: with(&["add"]), ..command("cargo", CARGO_HINT, &[]) }],
        ("rust", "uninstall") => vec![Command { args: with(&["remove"]), ..command("cargo", CARGO_HINT, &[]) }],
        ("rust", "update") => vec![Command { args: with(&["update"]), ..command("cargo", CARGO_HINT, &[]) }],
        ("rust", "list") => vec![command("cargo", CARGO_HINT, &["tree", "--depth", "1"])],
        ("rust", "search") => {
            vec![Command { args: with(&["search", "--limit", "10"]), ..command("cargo", CARGO_HINT, &[]) }]
        }
        ("rust", "analyze_dependencies") => vec![command("cargo", CARGO_HINT, &["tree", "--duplicates"])],
        ("rust", "check_vulnerabilities") => {
            vec![command("cargo", "install cargo-audit where the sandbox sees it", &["audit"])]
        }
        ("rust", "generate_lockfile") => vec![command("cargo", CARGO_HINT, &["generate-lockfile"])],
        ("go", "install") => vec![Command { args: with(&["get"]), ..command("go", GO_HINT, &[]) }],
        ("go", "uninstall") => vec![Command {
            args: ["get".to_string()].into_iter().chain(pkgs.iter().map(|p| format!("{p}@none"))).collect(),
            ..command("go", GO_HINT, &[])
        }],
        ("go", "update") => vec![Command { args: with(&["get", "-u"]), ..command("go", GO_HINT, &[]) }],
        ("go", "list") => vec![command("go", GO_HINT, &["list", "-m", "all"])],
        ("go", "search") => {
            return Ok(Plan::Cannot("the go command cannot search modules: look them up on pkg.go.dev".into()));
        }
        ("go", "analyze_dependencies") => vec![command("go", GO_HINT, &["mod", "graph"])],
        ("go", "check_vulnerabilities") => vec![command(
            "govulncheck",
            "install govulncheck (go install golang.org/x/vuln/cmd/govulncheck@latest)",
            &["./..."],
        )],
        ("go", "generate_lockfile") => vec![command("go", GO_HINT, &["mod", "tidy"])],
        // maven has no command for these: they edit pom.xml.
        ("java", "install" | "uninstall") => return Ok(Plan::EditPom),
        ("java", "update") if !pkgs.is_empty() => return Ok(Plan::EditPom),
        ("java", "update") => {
            vec![command("mvn", MVN_HINT, &["-B", "versions:use-latest-releases", "-DgenerateBackupPoms=false"])]
        }
        ("java", "list") => vec![command("mvn", MVN_HINT, &["-q", "-B", "dependency:list"])],
        ("java", "search") => {
            return Ok(Plan::Cannot("maven cannot search: look artifacts up on search.maven.org".into()));
        }
        ("java", "analyze_dependencies") => vec![command("mvn", MVN_HINT, &["-q", "-B", "dependency:tree"])],
        ("java", "check_vulnerabilities") => {
            vec![command("mvn", MVN_HINT, &["-B", "org.owasp:dependency-check-maven:check"])]
        }
        ("java", "generate_lockfile") => {
            return Ok(Plan::Cannot("maven has no lockfile; pin versions in pom.xml".into()));
        }
        _ => unknown_plan(ecosystem, operation)?,
    };
    Ok(Plan::Run(plan))
}

fn unknown_plan(ecosystem: &str, operation: &str) -> Result<Vec<Command>> {
    if !ECOSYSTEMS.contains(&ecosystem) {
        return Err(Error::bad_args(
            NAME,
            format!("unknown ecosystem '{ecosystem}': use one of {}", ECOSYSTEMS.join(", ")),
        ));
    }
    Err(Error::UnknownOperation {
        tool: NAME.to_string(),
        operation: operation.to_string(),
        available: OPERATIONS.iter().map(|s| s.to_string()).collect(),
    })
}

/// The package tool.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackageManager;

#[async_trait]
impl Tool for PackageManager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Manage a project's packages with its ecosystem's own tool, in the workspace: python (pip in .venv), \
         nodejs (npm), rust (cargo), go, java (maven). Operations: install, uninstall, update (packages: names, \
         with versions if wanted; java: groupId:artifactId:version[:scope], written into pom.xml), list, search (packages: the query), analyze_dependencies, check_vulnerabilities \
         (the ecosystem's audit tool), generate_lockfile. Installing needs network access, which a person must \
         allow."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "ecosystem": {"type": "string", "enum": ECOSYSTEMS, "description": "python, nodejs, rust, go or java"},
                "operation": {"type": "string", "enum": OPERATIONS, "description": "what to do"},
                "parameters": {"type": "object", "description": "{\"packages\": [names]} for install, uninstall, update and search"},
            }),
            &["ecosystem", "operation"],
        )
    }

    fn risk(&self) -> RiskLevel {
        RiskLevel::Medium
    }

    fn mutating(&self) -> bool {
        true
    }

    fn category(&self) -> ToolCategory {
        ToolCategory::PackageManagement
    }

    fn risk_of(&self, args: &Value) -> RiskLevel {
        if mutates(args["operation"].as_str().unwrap_or("install")) { RiskLevel::Medium } else { RiskLevel::Safe }
    }

    fn mutating_of(&self, args: &Value) -> bool {
        mutates(args["operation"].as_str().unwrap_or("install"))
    }

    fn estimate(&self, args: &Value) -> ResourceEstimate {
        match args["operation"].as_str() {
            Some("install" | "update" | "check_vulnerabilities") => {
                ResourceEstimate { cpu_seconds: 60.0, memory_mb: 512, disk_mb: 200 }
            }
            _ => ResourceEstimate { cpu_seconds: 5.0, memory_mb: 128, disk_mb: 0 },
        }
    }

    fn validate(&self, args: &Value) -> Result<()> {
        schema::one_of(NAME, args, "ecosystem", ECOSYSTEMS)?;
        schema::one_of(NAME, args, "operation", OPERATIONS)?;
        // The schema has checked the rest (`parameters` an object).
        Ok(())
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        self.validate(args)?;
        let top = Args::new(NAME, args);
        let ecosystem = top.string("ecosystem")?;
        let operation = top.string("operation")?;
        let params = args.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return Err(Error::bad_args(NAME, "parameters must be an object, e.g. {\"packages\": [\"requests\"]}"));
        }
        let root = ctx.workspace.root();
        // Without a network the programs are told so: go and cargo then use only what is
        // local (a replaced module, a vendored registry) and fail at once for the rest,
        // instead of waiting on a name lookup that cannot answer.
        let policy = ctx.sandbox.policy();
        let offline = !(policy.network || policy.mode == SandboxMode::Unconfined || policy.proxy.applies_to(NAME));
        let has_venv = root.join(".venv/bin/python").exists();
        let steps = match plan(ecosystem, operation, &Args::new(NAME, &params), has_venv)? {
            Plan::Run(steps) => steps,
            Plan::EditPom => {
                let edit = json!({"operation": operation, "packages": params["packages"]});
                return InSandbox(Arc::new(PomEdit)).call(&edit, ctx).await;
            }
            Plan::Cannot(why) => {
                return Ok(ToolOutput {
                    content: format!("{ecosystem} cannot {operation}: {why}"),
                    ..ToolOutput::default()
                });
            }
        };
        let mut env: Vec<(&'static str, OsString)> = vec![
            ("PIP_NO_CACHE_DIR", "1".into()),
            ("npm_config_update_notifier", "false".into()),
            ("CARGO_TERM_COLOR", "never".into()),
            ("GOFLAGS", "-mod=mod".into()),
        ];
        if offline {
            env.extend([("GOPROXY", "off".into()), ("CARGO_NET_OFFLINE", "true".into())]);
        }
        let mut transcript = String::new();
        let mut last = ToolOutput::default();
        for step in steps {
            // The venv's python is named by its path in the workspace, which the sandbox
            // shows at the same place.
            let program = if step.program.starts_with(".venv/") {
                root.join(step.program).to_string_lossy().into_owned()
            } else {
                step.program.to_string()
            };
            let args = step.args.iter().map(OsString::from).collect();
            let finished =
                process::run(Run { extra_env: env.clone(), ..Run::in_workspace(ctx, NAME, &program, step.hint, args) })
                    .await?;
            last = finished.into_output(ctx.output_cap);
            transcript.push_str(&format!("$ {} {}\n{}\n", step.program, step.args.join(" "), last.content));
            if !last.success {
                break;
            }
        }
        let lower = transcript.to_lowercase();
        if !last.success
            && (lower.contains("temporary failure in name resolution")
                || lower.contains("could not resolve")
                || lower.contains("network is unreachable")
                || lower.contains("eai_again")
                || lower.contains("goproxy=off")
                || lower.contains("offline mode"))
        {
            transcript.push_str("the tool sandbox has no network: a person must allow it ([sandbox] network = true) for installs and searches\n");
        }
        Ok(ToolOutput { content: transcript, ..last })
    }
}
