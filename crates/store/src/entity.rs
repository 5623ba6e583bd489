//! sea-orm entities, one per table. They stay private to the crate: callers get the plain row
//! structs of [`crate::rows`], so they never depend on sea-orm. Integers are `i64` throughout
//! because Postgres has no unsigned types and decodes each integer width strictly.

pub(crate) mod api_key;
pub(crate) mod audit_entry;
pub(crate) mod event;
pub(crate) mod phase;
pub(crate) mod plan;
pub(crate) mod project;
pub(crate) mod session;
pub(crate) mod step;
pub(crate) mod task;
pub(crate) mod token_usage;
pub(crate) mod tool_call;
pub(crate) mod user;
