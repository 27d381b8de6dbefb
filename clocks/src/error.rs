//! Errors shared by several clocks: configuration and decoding.

use core::fmt;

/// A configuration value was out of range. Returned by constructors that validate their
/// configuration once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        ConfigError { field, reason }
    }

    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it, for example "must be greater than zero".
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid clock configuration: `{}` {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// Bytes could not be decoded as a timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input had the wrong length for the fixed-width encoding.
    Length {
        /// The length the encoding has.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Length { expected, actual } => {
                write!(
                    f,
                    "encoded timestamp is {actual} bytes, expected {expected}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}
