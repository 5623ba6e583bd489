//! The spec's catalogue tools: one tool per area, each call naming an operation and its
//! parameters (`{"operation": "commit", "parameters": {"message": "..."}}`), as the spec's
//! `advanced_fs` and `git_ops` schemas have it.
//!
//! Each operation is itself a [`Tool`] (the foundation's `fs_read` is `advanced_fs`'s
//! `read_file`, `git_status` is `git_ops`'s `status`: one implementation, two names), so an
//! operation's parameters are checked against its own schema, and its risk and whether it
//! mutates are its own: a call's risk (what the approval policy decides on) is its
//! operation's, not the catalogue tool's highest.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use turbo_core::tool::{RiskLevel, ToolCategory};

use crate::error::{Error, Result};
use crate::schema;
use crate::tool::{ResourceEstimate, Tool, ToolContext, ToolOutput};

/// One named operation and the tool that does it.
pub(crate) struct Operation {
    pub name: &'static str,
    pub tool: Arc<dyn Tool>,
}

/// A catalogue tool: named operations behind one name.
pub struct Catalogued {
    name: &'static str,
    description: &'static LazyLock<String>,
    category: ToolCategory,
    ops: Vec<Operation>,
}

impl Catalogued {
    pub(crate) fn new(
        name: &'static str,
        description: &'static LazyLock<String>,
        category: ToolCategory,
        ops: Vec<Operation>,
    ) -> Self {
        Self { name, description, category, ops }
    }

    /// The operations' names, in order.
    pub fn operations(&self) -> Vec<&'static str> {
        self.ops.iter().map(|o| o.name).collect()
    }

    /// The operation a call names, and its parameters (`{}` when absent).
    fn operation<'a>(&self, args: &'a Value) -> Result<(&Operation, &'a Value)> {
        static EMPTY: LazyLock<Value> = LazyLock::new(|| Value::Object(Map::new()));
        let name = args.get("operation").and_then(Value::as_str).ok_or_else(|| {
            Error::bad_args(
                self.name,
                format!("missing required argument 'operation': one of {}", self.operations().join(", ")),
            )
        })?;
        let op = self.ops.iter().find(|o| o.name == name).ok_or_else(|| Error::UnknownOperation {
            tool: self.name.to_string(),
            operation: name.to_string(),
            available: self.operations().iter().map(|s| s.to_string()).collect(),
        })?;
        let params = match args.get("parameters") {
            None | Some(Value::Null) => &EMPTY,
            Some(p) => p,
        };
        Ok((op, params))
    }
}

/// The description a model reads: the tool's purpose, then each operation with its
/// parameters and risk.
pub(crate) fn describe(intro: &str, ops: &[Operation]) -> String {
    let mut text = format!(
        "{intro} Call it as {{\"operation\": NAME, \"parameters\": {{...}}}}. Operations (parameters; * = required):"
    );
    for op in ops {
        let schema = op.tool.parameters();
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let params: Vec<String> = schema["properties"]
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .map(|(key, p)| {
                        let star = if required.contains(&key.as_str()) { "*" } else { "" };
                        format!("{key}{star}: {}", p["type"].as_str().unwrap_or("value"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let first_sentence = op.tool.description().split(". ").next().unwrap_or_default().trim_end_matches('.');
        text.push_str(&format!(
            "\n- {} ({}): {first_sentence}. {{{}}}",
            op.name,
            format!("{:?}", op.tool.risk()).to_lowercase(),
            params.join(", ")
        ));
    }
    text
}

#[async_trait]
impl Tool for Catalogued {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description.as_str()
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "operation": {"type": "string", "enum": self.operations(), "description": "the operation to run"},
                "parameters": {"type": "object", "description": "the operation's parameters, as the tool's description lists them"},
            }),
            &["operation"],
        )
    }

    /// The highest risk of its operations; a call's own is [`Tool::risk_of`].
    fn risk(&self) -> RiskLevel {
        self.ops.iter().map(|o| o.tool.risk()).max().unwrap_or(RiskLevel::Safe)
    }

    fn mutating(&self) -> bool {
        self.ops.iter().any(|o| o.tool.mutating())
    }

    fn category(&self) -> ToolCategory {
        self.category
    }

    fn risk_of(&self, args: &Value) -> RiskLevel {
        match self.operation(args) {
            Ok((op, params)) => op.tool.risk_of(params),
            Err(_) => self.risk(),
        }
    }

    fn mutating_of(&self, args: &Value) -> bool {
        match self.operation(args) {
            Ok((op, params)) => op.tool.mutating_of(params),
            Err(_) => self.mutating(),
        }
    }

    fn estimate(&self, args: &Value) -> ResourceEstimate {
        match self.operation(args) {
            Ok((op, params)) => op.tool.estimate(params),
            Err(_) => ResourceEstimate::default(),
        }
    }

    fn check_permissions(&self, args: &Value, ctx: &ToolContext) -> Result<()> {
        match self.operation(args) {
            Ok((op, params)) => op.tool.check_permissions(params, ctx),
            Err(_) => Ok(()),
        }
    }

    fn validate(&self, args: &Value) -> Result<()> {
        let (op, params) = self.operation(args)?;
        schema::validate(&format!("{}.{}", self.name, op.name), &op.tool.parameters(), params)
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        self.validate(args)?;
        let (op, params) = self.operation(args)?;
        op.tool.call(params, ctx).await
    }
}

/// What an operation may say about one call beyond its fixed risk, mutation and the default
/// estimate; every operation tool implements it (most with `{}`).
pub(crate) trait PerCall {
    /// The call's risk when it differs from the operation's (e.g. listing vs applying).
    fn call_risk(&self, _args: &Value) -> Option<RiskLevel> {
        None
    }
    fn call_mutates(&self, _args: &Value) -> Option<bool> {
        None
    }
    fn estimate_call(&self, _args: &Value) -> ResourceEstimate {
        ResourceEstimate::default()
    }
}

/// An operation tool: a unit struct whose inherent `schema()` gives its parameters and whose
/// inherent `run` does the work, either `async fn run(&self, &Args, &ToolContext)` (`async`)
/// or `fn run(&Args, &Workspace)` run off the async threads (`blocking`). It must implement
/// [`PerCall`].
macro_rules! operation_tool {
    ($ty:ident, $name:literal, $category:expr, $risk:expr, $mutating:expr, $desc:literal, $kind:ident) => {
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $ty;

        impl $ty {
            #[allow(dead_code)]
            const NAME: &'static str = $name;
        }

        #[async_trait::async_trait]
        impl $crate::tool::Tool for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn description(&self) -> &'static str {
                $desc
            }
            fn parameters(&self) -> serde_json::Value {
                Self::schema()
            }
            fn risk(&self) -> turbo_core::tool::RiskLevel {
                $risk
            }
            fn mutating(&self) -> bool {
                $mutating
            }
            fn category(&self) -> turbo_core::tool::ToolCategory {
                $category
            }
            fn risk_of(&self, args: &serde_json::Value) -> turbo_core::tool::RiskLevel {
                $crate::catalogue::PerCall::call_risk(self, args).unwrap_or($risk)
            }
            fn mutating_of(&self, args: &serde_json::Value) -> bool {
                $crate::catalogue::PerCall::call_mutates(self, args).unwrap_or($mutating)
            }
            fn estimate(&self, args: &serde_json::Value) -> $crate::tool::ResourceEstimate {
                $crate::catalogue::PerCall::estimate_call(self, args)
            }
            async fn call(
                &self,
                args: &serde_json::Value,
                ctx: &$crate::tool::ToolContext,
            ) -> $crate::error::Result<$crate::tool::ToolOutput> {
                operation_tool!(@call $kind, self, $name, args, ctx)
            }
        }
    };
    (@call async, $self:ident, $name:literal, $args:ident, $ctx:ident) => {
        $self.run(&$crate::schema::Args::new($name, $args), $ctx).await
    };
    (@call blocking, $self:ident, $name:literal, $args:ident, $ctx:ident) => {{
        let (args, ws) = ($args.clone(), $ctx.workspace.clone());
        tokio::task::spawn_blocking(move || Self::run(&$crate::schema::Args::new($name, &args), &ws))
            .await
            .map_err(|e| $crate::error::Error::io($name, std::io::Error::other(e)))?
    }};
}
pub(crate) use operation_tool;
