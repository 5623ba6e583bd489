//! Domain model of turbo-coder: the spec's data models, their constraints, and the messages
//! the services exchange. No I/O lives here.
//!
//! # Layout
//! - `ids`: typed UUID identifiers.
//! - `project`, `task`, `plan`, `agent`, `knowledge`, `system`: the spec's data models and enums,
//!   each with a [`Validate`] impl enforcing the spec's field constraints.
//! - `event`: the task event stream, the one record of what happened.
//! - `protocol`: orchestrator <-> agent messages, transport-neutral.
//! - `tool`: tool specs, calls, risk levels and token usage shared by the model layer and tools.
//! - `validate`, `error`: constraint helpers and the error types.

pub mod agent;
mod enums;
pub mod error;
pub mod event;
pub mod ids;
pub mod knowledge;
pub mod plan;
pub mod project;
pub mod protocol;
pub mod serde_duration;
pub mod system;
pub mod task;
pub mod tool;
pub mod validate;

pub use error::{Error, FieldError, Result, ValidationErrors};
pub use validate::Validate;
