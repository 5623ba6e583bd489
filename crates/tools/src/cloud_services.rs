//! `cloud_services`: the spec's cloud tool over each provider's own CLI, run in the sandbox:
//! kubernetes (kubectl, and helm for charts), aws, gcp (gcloud) and azure (az). Every call is
//! high risk or critical (deploy, scale, configure), so the default approval policy asks a
//! person before the critical ones.
//!
//! The sandbox has no network and none of the host's credentials unless a person provides them
//! (`[sandbox] network = true`; per provider, `[sandbox.cloud.<provider>]` variables and
//! credential files, which only that provider's calls get: the files are bound into their
//! sandbox alone, so no shell or file tool call can read them); without them a call fails and
//! the model is told why. `backup`, `restore`, `migrate` and `optimize`
//! are named by the spec but not mapped onto any CLI here: they say so.

use std::ffi::OsString;

use async_trait::async_trait;
use serde_json::{Value, json};
use turbo_core::tool::{RiskLevel, ToolCategory};

use crate::error::{Error, Result};
use crate::process::{self, Run};
use crate::schema::{self, Args};
use crate::tool::{ResourceEstimate, Tool, ToolContext, ToolOutput};

const NAME: &str = "cloud_services";
const PROVIDERS: &[&str] = &["kubernetes", "aws", "gcp", "azure"];
const OPERATIONS: &[&str] = &["deploy", "scale", "monitor", "configure", "backup", "restore", "migrate", "optimize"];

fn risk_of_operation(operation: &str) -> RiskLevel {
    match operation {
        "monitor" => RiskLevel::High,
        _ => RiskLevel::Critical,
    }
}

/// A name a CLI takes as one argument that cannot be read as an option.
fn name<'a>(p: &Args<'a>, key: &str) -> Result<&'a str> {
    let value = p.string(key)?;
    let ok = !value.is_empty()
        && !value.starts_with('-')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    if ok { Ok(value) } else { Err(Error::bad_args(NAME, format!("'{value}' is not a usable {key}"))) }
}

/// `KEY=VALUE` pairs from an object of strings.
fn pairs(p: &Args<'_>, key: &str) -> Result<Vec<String>> {
    let map =
        p.opt_object(key)?.ok_or_else(|| Error::bad_args(NAME, format!("give {key}: an object of names to values")))?;
    if map.is_empty() {
        return Err(Error::bad_args(NAME, format!("{key} is empty")));
    }
    map.iter()
        .map(|(k, v)| {
            let value = v.as_str().ok_or_else(|| Error::bad_args(NAME, format!("{key}.{k} must be a string")))?;
            let ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if ok {
                Ok(format!("{k}={value}"))
            } else {
                Err(Error::bad_args(NAME, format!("'{k}' is not a variable name")))
            }
        })
        .collect()
}

/// The CLI, the hint said when it is missing, and its arguments.
type CliCall = (&'static str, &'static str, Vec<String>);

/// The CLI call of one operation, or why it is not available.
fn plan(
    ctx: &ToolContext,
    provider: &str,
    service: &str,
    operation: &str,
    p: &Args<'_>,
) -> Result<std::result::Result<CliCall, String>> {
    const KUBECTL: &str = "install kubectl and give the sandbox its config ([sandbox] read_only_paths)";
    const HELM: &str = "install helm (https://helm.sh/docs/intro/install/)";
    const AWS: &str = "install the AWS CLI (aws) and give the sandbox its credentials";
    const GCLOUD: &str = "install the Google Cloud CLI (gcloud) and give the sandbox its credentials";
    const AZ: &str = "install the Azure CLI (az) and give the sandbox its credentials";
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
    // A workspace file the CLI reads, checked for confinement.
    let file = |key: &str| -> Result<String> { Ok(ctx.workspace.relative(&ctx.workspace.resolve(p.string(key)?)?)) };
    let ns = |mut args: Vec<String>| -> Result<Vec<String>> {
        if p.opt_string("namespace")?.is_some() {
            args.extend(["--namespace".to_string(), name(p, "namespace")?.to_string()]);
        }
        Ok(args)
    };
    let count = |key: &str| -> Result<String> {
        p.opt_positive(key)?
            .map(|n| n.to_string())
            .ok_or_else(|| Error::bad_args(NAME, format!("give {key}: a count of at least 1")))
    };
    let plan = match (provider, service, operation) {
        ("kubernetes", "helm", "deploy") => {
            let mut args = s(&["upgrade", "--install", name(p, "release")?, &file("chart")?]);
            if p.opt_string("values")?.is_some() {
                args.extend(["--values".to_string(), file("values")?]);
            }
            ("helm", HELM, ns(args)?)
        }
        ("kubernetes", "helm", "monitor") => ("helm", HELM, ns(s(&["status", name(p, "release")?]))?),
        ("kubernetes", _, "deploy") => ("kubectl", KUBECTL, ns(s(&["apply", "-f", &file("manifest")?]))?),
        ("kubernetes", _, "scale") => (
            "kubectl",
            KUBECTL,
            ns(s(&[
                "scale",
                &format!("deployment/{}", name(p, "name")?),
                &format!("--replicas={}", count("replicas")?),
            ]))?,
        ),
        ("kubernetes", _, "monitor") => match p.opt_string("name")? {
            Some(_) => (
                "kubectl",
                KUBECTL,
                ns(s(&["rollout", "status", &format!("deployment/{}", name(p, "name")?), "--timeout=30s"]))?,
            ),
            None => ("kubectl", KUBECTL, ns(s(&["get", "deployments,pods", "-o", "wide"]))?),
        },
        ("kubernetes", _, "configure") => {
            let mut args = s(&["set", "env", &format!("deployment/{}", name(p, "name")?)]);
            args.extend(pairs(p, "env")?);
            ("kubectl", KUBECTL, ns(args)?)
        }
        ("aws", "lambda", "deploy") => (
            "aws",
            AWS,
            s(&[
                "lambda",
                "update-function-code",
                "--function-name",
                name(p, "function")?,
                "--zip-file",
                &format!("fileb://{}", file("zip_path")?),
            ]),
        ),
        ("aws", "lambda", "monitor") => {
            ("aws", AWS, s(&["lambda", "get-function", "--function-name", name(p, "function")?]))
        }
        ("aws", "lambda", "configure") => (
            "aws",
            AWS,
            s(&[
                "lambda",
                "update-function-configuration",
                "--function-name",
                name(p, "function")?,
                "--environment",
                &format!("Variables={{{}}}", pairs(p, "env")?.join(",")),
            ]),
        ),
        ("aws", "s3", "deploy") => {
            ("aws", AWS, s(&["s3", "sync", &file("path")?, &format!("s3://{}", name(p, "bucket")?)]))
        }
        ("aws", "cloudformation", "deploy") => (
            "aws",
            AWS,
            s(&["cloudformation", "deploy", "--stack-name", name(p, "stack")?, "--template-file", &file("template")?]),
        ),
        ("aws", "cloudformation", "monitor") => {
            ("aws", AWS, s(&["cloudformation", "describe-stacks", "--stack-name", name(p, "stack")?]))
        }
        ("aws", "ecs", "scale") => (
            "aws",
            AWS,
            s(&[
                "ecs",
                "update-service",
                "--cluster",
                name(p, "cluster")?,
                "--service",
                name(p, "service_name")?,
                "--desired-count",
                &count("count")?,
            ]),
        ),
        ("aws", "ecs", "monitor") => (
            "aws",
            AWS,
            s(&["ecs", "describe-services", "--cluster", name(p, "cluster")?, "--services", name(p, "service_name")?]),
        ),
        ("gcp", "run", "deploy") => (
            "gcloud",
            GCLOUD,
            s(&[
                "run",
                "deploy",
                name(p, "name")?,
                "--image",
                name(p, "image")?,
                "--region",
                name(p, "region")?,
                "--quiet",
            ]),
        ),
        ("gcp", "run", "scale") => (
            "gcloud",
            GCLOUD,
            s(&[
                "run",
                "services",
                "update",
                name(p, "name")?,
                "--region",
                name(p, "region")?,
                &format!("--max-instances={}", count("max_instances")?),
                "--quiet",
            ]),
        ),
        ("gcp", "run", "monitor") => {
            ("gcloud", GCLOUD, s(&["run", "services", "describe", name(p, "name")?, "--region", name(p, "region")?]))
        }
        ("gcp", "run", "configure") => (
            "gcloud",
            GCLOUD,
            s(&[
                "run",
                "services",
                "update",
                name(p, "name")?,
                "--region",
                name(p, "region")?,
                &format!("--update-env-vars={}", pairs(p, "env")?.join(",")),
                "--quiet",
            ]),
        ),
        ("azure", "webapp", "deploy") => (
            "az",
            AZ,
            s(&[
                "webapp",
                "deploy",
                "--name",
                name(p, "name")?,
                "--resource-group",
                name(p, "resource_group")?,
                "--src-path",
                &file("src_path")?,
            ]),
        ),
        ("azure", "webapp", "scale") => (
            "az",
            AZ,
            s(&[
                "appservice",
                "plan",
                "update",
                "--name",
                name(p, "plan")?,
                "--resource-group",
                name(p, "resource_group")?,
                "--number-of-workers",
                &count("instances")?,
            ]),
        ),
        ("azure", "webapp", "monitor") => (
            "az",
            AZ,
            s(&["webapp", "show", "--name", name(p, "name")?, "--resource-group", name(p, "resource_group")?]),
        ),
        ("azure", "webapp", "configure") => {
            let mut args = s(&[
                "webapp",
                "config",
                "appsettings",
                "set",
                "--name",
                name(p, "name")?,
                "--resource-group",
                name(p, "resource_group")?,
                "--settings",
            ]);
            args.extend(pairs(p, "env")?);
            ("az", AZ, args)
        }
        (_, _, "backup" | "restore" | "migrate" | "optimize") => {
            return Ok(Err(format!(
                "{operation} is not mapped onto a {provider} CLI here: do it with the provider's console or ask a person"
            )));
        }
        _ if !PROVIDERS.contains(&provider) => {
            return Err(Error::bad_args(
                NAME,
                format!("unknown provider '{provider}': use one of {}", PROVIDERS.join(", ")),
            ));
        }
        _ if !OPERATIONS.contains(&operation) => {
            return Err(Error::UnknownOperation {
                tool: NAME.into(),
                operation: operation.into(),
                available: OPERATIONS.iter().map(|s| s.to_string()).collect(),
            });
        }
        _ => {
            return Ok(Err(format!(
                "{operation} of the {provider} service '{service}' is not supported: kubernetes (any service; helm for charts), aws (lambda, s3, cloudformation, ecs), gcp (run), azure (webapp)"
            )));
        }
    };
    Ok(Ok(plan))
}

/// The cloud tool.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloudServices;

#[async_trait]
impl Tool for CloudServices {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Deploy, scale, monitor and configure cloud services through their CLIs: kubernetes (kubectl: deploy \
         {manifest}, scale {name, replicas}, monitor {name?}, configure {name, env}; service helm: deploy {release, \
         chart, values?}, monitor {release}; namespace optional), aws (lambda {function, zip_path | env}, s3 deploy \
         {path, bucket}, cloudformation {stack, template}, ecs scale/monitor {cluster, service_name, count}), gcp \
         (run {name, region, image | max_instances | env}), azure (webapp {name, resource_group, src_path | env}, \
         scale {plan, resource_group, instances}). Deploy, scale and configure are critical: a person approves them."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "provider": {"type": "string", "enum": PROVIDERS, "description": "kubernetes, aws, gcp or azure"},
                "service": {"type": "string", "description": "the provider's service, e.g. lambda, run, webapp, helm (any for kubernetes)"},
                "operation": {"type": "string", "enum": OPERATIONS, "description": "what to do"},
                "parameters": {"type": "object", "description": "the operation's parameters, as the description lists them"},
            }),
            &["provider", "service", "operation"],
        )
    }

    fn risk(&self) -> RiskLevel {
        RiskLevel::Critical
    }

    fn mutating(&self) -> bool {
        true
    }

    fn category(&self) -> ToolCategory {
        ToolCategory::CloudServices
    }

    fn risk_of(&self, args: &Value) -> RiskLevel {
        risk_of_operation(args["operation"].as_str().unwrap_or("deploy"))
    }

    fn mutating_of(&self, args: &Value) -> bool {
        args["operation"].as_str() != Some("monitor")
    }

    fn estimate(&self, _args: &Value) -> ResourceEstimate {
        ResourceEstimate { cpu_seconds: 10.0, memory_mb: 256, disk_mb: 0 }
    }

    fn validate(&self, args: &Value) -> Result<()> {
        schema::one_of(NAME, args, "provider", PROVIDERS)?;
        schema::one_of(NAME, args, "operation", OPERATIONS)?;
        // The schema has checked the rest (`parameters` an object).
        Ok(())
    }

    /// A cloud call needs a network: the host's (`[sandbox] network`, or an unconfined
    /// sandbox), or the registry proxy's when it serves this tool.
    fn check_permissions(&self, args: &Value, ctx: &ToolContext) -> Result<()> {
        let policy = ctx.sandbox.policy();
        if policy.network || policy.mode == crate::SandboxMode::Unconfined || policy.proxy.applies_to(NAME) {
            return Ok(());
        }
        let provider = args["provider"].as_str().unwrap_or("the provider");
        Err(Error::NotPermitted {
            tool: NAME.into(),
            what: format!("reach {provider}"),
            why: format!(
                "its sandbox has no network; a person allows it with [sandbox] network = true, or with \
                 \"{NAME}\" in [sandbox.proxy] tools and the provider's API hosts in [sandbox.proxy] allow, \
                 and gives it credentials in [sandbox.cloud.{provider}]"
            ),
        })
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        self.validate(args)?;
        let top = Args::new(NAME, args);
        let (provider, service, operation) =
            (top.string("provider")?, top.string("service")?, top.string("operation")?);
        let params = args.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return Err(Error::bad_args(NAME, "parameters must be an object"));
        }
        let (program, hint, cli_args) = match plan(ctx, provider, service, operation, &Args::new(NAME, &params))? {
            Ok(plan) => plan,
            Err(why) => return Ok(ToolOutput { content: why, ..ToolOutput::default() }),
        };
        let args = cli_args.iter().map(OsString::from).collect();
        let finished = process::run(Run {
            extra_env: vec![("AWS_PAGER", "".into()), ("CLOUDSDK_CORE_DISABLE_PROMPTS", "1".into())],
            // The provider's credentials, configured by a person, for this call's sandbox alone.
            access: ctx.sandbox.policy().cloud.get(provider),
            ..Run::in_workspace(ctx, NAME, program, hint, args)
        })
        .await?;
        let mut out = finished.into_output(ctx.output_cap);
        out.content = format!("$ {program} {}\n{}", cli_args.join(" "), out.content);
        if !out.success {
            out.content.push_str(
                "\nthe tool sandbox has no network and none of the host's cloud credentials unless a person provides them ([sandbox] network, [sandbox.cloud.<provider>] env and files)",
            );
        }
        Ok(out)
    }
}
