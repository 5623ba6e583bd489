//! Constraint checks shared by every domain type (the spec's pydantic `Field` rules).

use crate::error::ValidationErrors;

/// A value whose constraints can be checked, reporting every broken one.
pub trait Validate {
    fn validate(&self) -> Result<(), ValidationErrors>;
}

pub(crate) fn len_between(errs: &mut ValidationErrors, field: &str, value: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min {
        errs.push(field, format!("must be at least {min} characters, got {n}"));
    } else if n > max {
        errs.push(field, format!("must be at most {max} characters, got {n}"));
    }
}

pub(crate) fn not_blank(errs: &mut ValidationErrors, field: &str, value: &str) {
    if value.trim().is_empty() {
        errs.push(field, "must not be empty");
    }
}

pub(crate) fn in_range(errs: &mut ValidationErrors, field: &str, value: f64, min: f64, max: f64) {
    if !(min..=max).contains(&value) {
        errs.push(field, format!("must be between {min} and {max}, got {value}"));
    }
}

pub(crate) fn opt_in_range(errs: &mut ValidationErrors, field: &str, value: Option<f64>, min: f64, max: f64) {
    if let Some(v) = value {
        in_range(errs, field, v, min, max);
    }
}

pub(crate) fn at_least<T: PartialOrd + std::fmt::Display>(errs: &mut ValidationErrors, field: &str, value: T, min: T) {
    if value < min {
        errs.push(field, format!("must be at least {min}, got {value}"));
    }
}

/// `>= 0` for optional floats, which also rejects NaN.
pub(crate) fn opt_non_negative(errs: &mut ValidationErrors, field: &str, value: Option<f64>) {
    if let Some(v) = value {
        non_negative(errs, field, v);
    }
}

/// `>= 0`, which also rejects NaN.
pub(crate) fn non_negative(errs: &mut ValidationErrors, field: &str, value: f64) {
    if value.is_nan() || value < 0.0 {
        errs.push(field, format!("must be zero or more, got {value}"));
    }
}
