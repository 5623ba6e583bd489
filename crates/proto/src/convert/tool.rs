//! `ToolSpec`.

use turbo_core::tool::ToolSpec;

use super::{json_value_from_proto, json_value_to_proto};
use crate::Error;
use crate::tools::v1 as pb;

impl From<ToolSpec> for pb::ToolSpec {
    fn from(t: ToolSpec) -> Self {
        pb::ToolSpec { name: t.name, description: t.description, parameters_json: json_value_to_proto(&t.parameters) }
    }
}

impl TryFrom<pb::ToolSpec> for ToolSpec {
    type Error = Error;

    fn try_from(t: pb::ToolSpec) -> Result<Self, Error> {
        Ok(ToolSpec {
            name: t.name,
            description: t.description,
            parameters: json_value_from_proto("parameters_json", &t.parameters_json)?,
        })
    }
}
