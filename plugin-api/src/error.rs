//! The error type every plugin entry point returns.
use abi_stable::{std_types::RString, StableAbi};
use std::fmt;

/// What kind of failure a [`PluginError`] reports; the host uses it to phrase its message.
///
/// Non-exhaustive across the boundary: it travels as [`ErrorKind_NE`], so a later plugin-api may
/// add kinds and a host that does not know one reads it as `None` from [`PluginError::kind`]
/// instead of misreading it.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [usize; 2], traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum ErrorKind {
    /// A request or configuration value the plugin cannot accept.
    InvalidInput,
    /// The data set on disk is missing, incomplete or malformed.
    Data,
    /// A weights file is missing, unreadable or does not match the architecture.
    Weights,
    /// A tensor operation failed (shape mismatch, out of memory, ...).
    Tensor,
    /// The plugin panicked; the panic was caught at the boundary.
    Panic,
    /// Anything else.
    Other,
}

/// An error crossing the plugin boundary: a kind, a lower-case message naming the file, key, task
/// or tensor shape at fault, and an optional `help` line saying what to do.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PluginError {
    /// The kind of failure; read it with [`PluginError::kind`].
    pub kind: ErrorKind_NE,
    /// What went wrong.
    pub message: RString,
    /// What the user can do about it (may be empty).
    pub help: RString,
}

impl PluginError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind_NE::new(kind),
            message: message.into().into(),
            help: RString::new(),
        }
    }

    /// The kind, or `None` for a kind added by a later plugin-api than this one.
    pub fn kind(&self) -> Option<ErrorKind> {
        self.kind.as_enum().ok().copied()
    }

    /// Adds a `help:` line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = help.into().into();
        self
    }

    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// An [`ErrorKind::Data`] error.
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }

    /// An [`ErrorKind::Weights`] error.
    pub fn weights(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Weights, message)
    }

    /// An [`ErrorKind::Tensor`] error.
    pub fn tensor(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Tensor, message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

impl std::error::Error for PluginError {}

impl From<tch::TchError> for PluginError {
    fn from(err: tch::TchError) -> Self {
        // libtorch messages carry a C++ backtrace after the first line; keep the useful part.
        let text = err.to_string();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("tensor error");
        PluginError::tensor(first.trim().to_string())
    }
}

/// Runs `body`, turning a panic into a [`PluginError`] of kind [`ErrorKind::Panic`].
///
/// Every method a plugin exports must run inside `guard`: a panic that unwinds into the host
/// aborts the whole process.
pub fn guard<T>(
    body: impl FnOnce() -> Result<T, PluginError>,
) -> abi_stable::std_types::RResult<T, PluginError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(result) => result.into(),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            let what = what.lines().next().unwrap_or_default().to_string();
            abi_stable::std_types::RResult::RErr(
                PluginError::new(ErrorKind::Panic, format!("plugin panicked: {what}"))
                    .with_help("this is a bug in the plugin; report it to its authors"),
            )
        }
    }
}
