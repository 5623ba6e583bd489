use std::fmt;

/// One broken constraint: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `phases[2].depends_on`.
    pub field: String,
    pub problem: String,
}

/// Every constraint a value breaks, so a caller can fix them all at once.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), problem: problem.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds another value's errors under a field prefix.
    pub fn nest(&mut self, prefix: &str, other: ValidationErrors) {
        for e in other.0 {
            self.push(format!("{prefix}.{}", e.field), e.problem);
        }
    }

    pub fn into_result(self) -> std::result::Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid value: {0}")]
    Invalid(#[from] ValidationErrors),
    #[error("unknown {kind} '{value}': expected one of {expected}")]
    UnknownVariant { kind: &'static str, value: String, expected: String },
    #[error("task status cannot change from {from} to {to}")]
    InvalidTransition { from: crate::task::TaskStatus, to: crate::task::TaskStatus },
}

pub type Result<T> = std::result::Result<T, Error>;
