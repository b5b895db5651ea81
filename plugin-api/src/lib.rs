//! The stable-ABI contract between `virb-host` and its plugins.
//!
//! A plugin is a `cdylib` built against this crate. It exports exactly one root module, either a
//! [`TaskPluginRef`] (it provides tasks: data set reader, head, loss, metrics) or an
//! [`EncoderPluginRef`] (it provides encoders: an architecture and its weight formats), with the
//! [`export_task_plugin!`] or [`export_encoder_plugin!`] macro. One library may provide several
//! tasks or several encoders; it lists them itself.
//!
//! # Versioning
//!
//! This crate has its own semantic version ([`PLUGIN_API_VERSION`]), independent of the host's.
//! A host accepts a plugin built against the same `0.y` (while the major version is 0), later
//! the same major; the patch (minor, from 1.0) may differ in **either** direction. See
//! [`api_compatible`].
//!
//! No release may add a method to a trait or a field to a struct of this crate: abi_stable's
//! load-time layout check refuses a library whose vtables or root module have fewer entries than
//! the loading host expects, default body or not. Such a change bumps `y` (the major, from 1.0),
//! and every plugin must be rebuilt. What a compatible release (`0.3.0` to `0.3.1`) may add:
//!
//! * **capabilities**, looked up by name through the `extension` method every trait object and
//!   root module has ([`crate::extension`]): an older plugin answers "not offered" and the newer
//!   host falls back; a newer plugin's capability is simply never asked for by an older host;
//! * **enum variants** of [`Split`] and [`ErrorKind`], which cross the boundary as abi_stable
//!   non-exhaustive enums ([`Split_NE`], [`ErrorKind_NE`]): a side that does not know a variant
//!   gets an error or `None`, never a misread value;
//! * free functions and helpers on the plugin's side of the boundary.
//!
//! plugin-api 0.3.0 was the one deliberate break made for pixel-wise tasks: `Dataset::get` takes a
//! [`SampleContext`] (epoch, seed, augmentation), `Head::forward` a [`ForwardContext`] (input
//! size), [`HeadRequest`] carries task options, the input size and the encoder's state, metrics
//! may report [`Metric::details`], tasks list their options, and every trait has `extension`.
//! The host also checks that a plugin was built against the same libtorch major.minor
//! ([`LIBTORCH_VERSION`]), because tensors cross the boundary as raw libtorch objects.
//!
//! # Tensors and ownership
//!
//! Tensors cross the boundary without copying, as handles around the libtorch tensor object:
//! [`Tensor`] is *moved* (the receiver owns it and frees it when dropped) and [`TensorRef`] is
//! *lent* (the receiver may look at it, or take its own shallow clone that shares the storage,
//! during the call only). This is sound because every module of the process uses the one libtorch
//! that the host loaded.
//!
//! # Errors and panics
//!
//! Every method returns `RResult<_, PluginError>`. A panic must never cross the boundary
//! (it would abort the host): wrap each method body in [`guard`], which turns a panic into a
//! [`PluginError`] of kind [`ErrorKind::Panic`].
#![deny(missing_docs)]
// abi_stable's `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

mod encoder;
mod error;
pub mod extension;
mod module;
mod task;
mod tensor;

pub use abi_stable;
pub use encoder::*;
pub use error::*;
pub use extension::*;
pub use module::*;
pub use task::*;
pub use tch;
pub use tensor::*;

/// The version of this crate, which is the version of the plugin ABI.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The libtorch version this crate was compiled against (for example `2.11.0+cu130`).
pub const LIBTORCH_VERSION: &str = env!("VIRB_LIBTORCH_VERSION");

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
}

impl Version {
    /// Parses `major.minor.patch`, ignoring any `+build` or `-pre` suffix.
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.split(['+', '-']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version {
            major,
            minor,
            patch,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Whether a host built against plugin-api `host` can load a plugin built against `plugin`.
///
/// Cargo's semver rules: for `0.y.z`, `y` is the breaking part and `z` the additive part; for
/// `x.y.z` with `x >= 1`, `x` is breaking and `y` additive. Additions are capabilities looked up by
/// name ([`crate::extension`]) and non-exhaustive enum variants, which both sides tolerate
/// missing, so a plugin may be newer than the host as well as older.
pub fn api_compatible(host: Version, plugin: Version) -> bool {
    if host.major == 0 && plugin.major == 0 {
        host.minor == plugin.minor
    } else {
        host.major == plugin.major
    }
}

/// Whether two libtorch versions can share tensors (same major and minor version).
pub fn libtorch_compatible(host: &str, plugin: &str) -> bool {
    match (Version::parse(host), Version::parse(plugin)) {
        (Some(h), Some(p)) => h.major == p.major && h.minor == p.minor,
        _ => false,
    }
}

/// Parses a device string (`cpu`, `cuda`, `cuda:N`) into a tch device.
pub fn parse_device(text: &str) -> Result<tch::Device, PluginError> {
    match text {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "unknown device `{other}`: expected `cpu`, `cuda` or `cuda:N`"
                ))
            }),
    }
}

/// Formats a tch device the way [`parse_device`] reads it.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".to_string(),
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Stands for "what a later patch adds", in the test build of these sources as plugin-api
/// 0.3.1 (`tests/fixtures/plugin-api-next`): one capability, which plugins built against 0.3.0
/// do not offer. Not part of 0.3.0.
#[cfg(feature = "next-minor-test")]
pub mod next_minor {
    /// `Task::extension` capability: takes `null`, returns a JSON string describing the task in a
    /// paragraph.
    pub const TASK_DESCRIBE: &str = "virb.task.describe/v1";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("valid version")
    }

    #[test]
    fn semver_rules() {
        assert!(api_compatible(v("0.3.1"), v("0.3.0")));
        assert!(api_compatible(v("0.3.0"), v("0.3.1")));
        assert!(!api_compatible(v("0.3.0"), v("0.2.0")));
        assert!(!api_compatible(v("0.3.0"), v("0.4.0")));
        assert!(!api_compatible(v("0.3.0"), v("1.0.0")));
        assert!(api_compatible(v("1.4.0"), v("1.2.9")));
        assert!(api_compatible(v("1.2.0"), v("1.4.0")));
        assert!(!api_compatible(v("2.0.0"), v("1.0.0")));
    }

    #[test]
    fn libtorch_rules() {
        assert!(libtorch_compatible("2.11.0+cu130", "2.11.0"));
        assert!(!libtorch_compatible("2.11.0", "2.10.1"));
        assert!(!libtorch_compatible("2.11.0", "unknown"));
    }

    #[test]
    fn devices() {
        assert_eq!(parse_device("cuda:3").ok(), Some(tch::Device::Cuda(3)));
        assert!(parse_device("tpu").is_err());
        assert_eq!(device_name(tch::Device::Cuda(1)), "cuda:1");
    }
}
