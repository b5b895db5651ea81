//! Errors of a job: each fails that job only; the run goes on.
use virb_plugin_api::PluginError;

/// Why a job (or one training config of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A plugin returned an error (its message names the file, key or shape at fault).
    #[error("{0}")]
    Plugin(#[from] PluginError),
    /// A tensor operation in the host failed.
    #[error("tensor error: {0}")]
    Tensor(String),
    /// Training diverged.
    #[error("loss became {value} at epoch {epoch}, step {step}; lower the learning rate")]
    NonFinite {
        /// The bad loss value.
        value: f64,
        /// 0-based epoch.
        epoch: u32,
        /// Global optimiser step.
        step: u64,
    },
    /// A split whose samples differ in input size cannot be encoded into one cache.
    #[error("the samples of {split} differ in input size ({}x{} and {}x{})", first.0, first.1, other.0, other.1)]
    VariableInputSize {
        /// The split.
        split: String,
        /// The first sample's height and width.
        first: (u32, u32),
        /// Another size found.
        other: (u32, u32),
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

impl From<tch::TchError> for JobError {
    fn from(e: tch::TchError) -> Self {
        let text = e.to_string();
        JobError::Tensor(text.lines().next().unwrap_or("unknown").to_string())
    }
}

/// Converts a plugin `RResult` into a host `Result`.
pub fn plugin<T>(r: abi_stable::std_types::RResult<T, PluginError>) -> Result<T, JobError> {
    r.into_result().map_err(JobError::Plugin)
}
