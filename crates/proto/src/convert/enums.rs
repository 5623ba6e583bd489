//! The domain's enums and their proto counterparts, plus `TokenUsage` and field errors.

use turbo_core::{FieldError, ValidationErrors, agent, project, protocol, task, tool};

use crate::Error;
use crate::common::v1 as pb;

/// A domain enum that travels as a proto enum number (prost keeps enum fields as `i32`).
pub trait ProtoEnum: Sized + Copy {
    /// The proto enum number.
    fn to_proto(self) -> i32;
    /// The domain value of a proto enum number; UNSPECIFIED (0) and unknown numbers are
    /// [`Error::UnknownEnum`] naming `field`.
    fn from_proto(field: &str, value: i32) -> Result<Self, Error>;
    /// The accepted proto names, e.g. `LANGUAGE_PYTHON, LANGUAGE_JAVASCRIPT, ...`.
    fn expected() -> String;
}

/// Proto numbers of a repeated enum field.
pub(crate) fn enums_to_proto<E: ProtoEnum>(values: &[E]) -> Vec<i32> {
    values.iter().map(|v| v.to_proto()).collect()
}

/// A repeated enum field; a bad element is named `field[i]`.
pub(crate) fn enums_from_proto<E: ProtoEnum>(field: &str, values: &[i32]) -> Result<Vec<E>, Error> {
    values.iter().enumerate().map(|(i, v)| E::from_proto(&format!("{field}[{i}]"), *v)).collect()
}

/// An optional enum field.
pub(crate) fn opt_enum_from_proto<E: ProtoEnum>(field: &str, value: Option<i32>) -> Result<Option<E>, Error> {
    value.map(|v| E::from_proto(field, v)).transpose()
}

macro_rules! enum_conv {
    ($dm:ident :: $d:ident => $p:ident { $($v:ident),+ $(,)? }) => {
        impl From<$dm::$d> for pb::$p {
            fn from(d: $dm::$d) -> Self {
                match d {
                    $($dm::$d::$v => pb::$p::$v,)+
                }
            }
        }

        impl TryFrom<pb::$p> for $dm::$d {
            type Error = Error;
            fn try_from(p: pb::$p) -> Result<Self, Error> {
                match p {
                    $(pb::$p::$v => Ok($dm::$d::$v),)+
                    pb::$p::Unspecified => Err(Error::UnknownEnum {
                        field: pb::$p::Unspecified.as_str_name().trim_end_matches("_UNSPECIFIED").to_ascii_lowercase(),
                        value: 0,
                        expected: <$dm::$d as ProtoEnum>::expected(),
                    }),
                }
            }
        }

        impl ProtoEnum for $dm::$d {
            fn to_proto(self) -> i32 {
                pb::$p::from(self) as i32
            }

            fn from_proto(field: &str, value: i32) -> Result<Self, Error> {
                pb::$p::try_from(value)
                    .ok()
                    .and_then(|p| <$dm::$d>::try_from(p).ok())
                    .ok_or_else(|| Error::UnknownEnum { field: field.to_string(), value, expected: Self::expected() })
            }

            fn expected() -> String {
                [$(pb::$p::$v.as_str_name()),+].join(", ")
            }
        }
    };
}

enum_conv!(project::Language => Language {
    Python, Javascript, Typescript, Rust, Go, Java, Csharp, Cpp, Swift, Kotlin,
});
enum_conv!(project::Framework => Framework {
    Fastapi, Django, Flask, React, Vue, Angular, Nodejs, Express, Nextjs, ActixWeb, Rocket, Gin, Echo,
    SpringBoot, Quarkus,
});
enum_conv!(project::ProjectType => ProjectType {
    WebApplication, ApiService, MobileApp, DesktopApp, DataScience, MachineLearning, Blockchain,
    GameDevelopment, EmbeddedSystem, DevopsInfrastructure,
});
enum_conv!(task::TaskStatus => TaskStatus { Created, Planned, InProgress, Blocked, Completed, Failed, Cancelled });
enum_conv!(task::TaskPriority => TaskPriority { Low, Medium, High, Urgent });
enum_conv!(task::Complexity => Complexity { Low, Medium, High });
enum_conv!(agent::AgentRole => AgentRole { Planner, Coder, Tester, Reviewer });
enum_conv!(agent::AgentCapability => AgentCapability {
    CodeGeneration, CodeReview, TestGeneration, ArchitectureDesign, DatabaseDesign, DevopsAutomation,
    SecurityAnalysis, PerformanceOptimization, DocumentationGeneration, ProjectPlanning,
});
enum_conv!(tool::RiskLevel => RiskLevel { Safe, Low, Medium, High, Critical });
enum_conv!(protocol::ReviewVerdict => ReviewVerdict { Approve, ChangesRequested });
enum_conv!(protocol::Severity => Severity { Info, Warning, Error });

impl From<tool::TokenUsage> for pb::TokenUsage {
    fn from(u: tool::TokenUsage) -> Self {
        pb::TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }
    }
}

impl From<pb::TokenUsage> for tool::TokenUsage {
    fn from(u: pb::TokenUsage) -> Self {
        tool::TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }
    }
}

impl From<FieldError> for pb::FieldError {
    fn from(e: FieldError) -> Self {
        pb::FieldError { field: e.field, problem: e.problem }
    }
}

impl From<pb::FieldError> for FieldError {
    fn from(e: pb::FieldError) -> Self {
        FieldError { field: e.field, problem: e.problem }
    }
}

impl From<ValidationErrors> for pb::ValidationErrors {
    fn from(e: ValidationErrors) -> Self {
        pb::ValidationErrors { errors: e.0.into_iter().map(Into::into).collect() }
    }
}

impl From<pb::ValidationErrors> for ValidationErrors {
    fn from(e: pb::ValidationErrors) -> Self {
        ValidationErrors(e.errors.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_variant_has_a_distinct_nonzero_number() {
        fn check<E: ProtoEnum + std::fmt::Debug + PartialEq>(all: &[E]) {
            let mut seen = std::collections::BTreeSet::new();
            for v in all {
                let n = v.to_proto();
                assert_ne!(n, 0, "{v:?}");
                assert!(seen.insert(n), "{v:?}");
                assert_eq!(E::from_proto("f", n).as_ref(), Ok(v));
            }
        }
        check(project::Language::ALL);
        check(project::Framework::ALL);
        check(project::ProjectType::ALL);
        check(task::TaskStatus::ALL);
        check(task::TaskPriority::ALL);
        check(task::Complexity::ALL);
        check(agent::AgentRole::ALL);
        check(agent::AgentCapability::ALL);
        check(protocol::ReviewVerdict::ALL);
        check(protocol::Severity::ALL);
        use tool::RiskLevel::*;
        check(&[Safe, Low, Medium, High, Critical]);
    }

    #[test]
    fn unspecified_and_unknown_numbers_name_the_field_and_the_choices() {
        let e = project::Language::from_proto("languages[0]", 0).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("languages[0]") && msg.contains("LANGUAGE_PYTHON"), "{msg}");
        assert!(task::TaskStatus::from_proto("status", 999).is_err());
        let e = project::Language::try_from(pb::Language::Unspecified).unwrap_err();
        assert!(e.to_string().starts_with("language "), "{e}");
    }
}
