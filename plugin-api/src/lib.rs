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
//! A host accepts a plugin built against a compatible version of this crate (same major version,
//! or same minor version while the major is 0, with the plugin's minor or patch not newer than the
//! host's); see [`api_compatible`]. A change that old plugins can still be loaded with (a new
//! prefix field of a root module after the last one) bumps the minor version (the patch while
//! 0.y); anything else bumps the major (the minor while 0.y). New trait methods are breaking even
//! with default bodies: abi_stable's load-time layout check refuses a library whose vtable has
//! fewer methods than the loader's. That is why 0.2.0, which added the fine-tuning methods to
//! [`Encoder`], is not compatible with 0.1. The host also checks that a plugin was built
//! against the same libtorch major.minor ([`LIBTORCH_VERSION`]), because tensors cross the
//! boundary as raw libtorch objects.
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
mod module;
mod task;
mod tensor;

pub use abi_stable;
pub use encoder::*;
pub use error::*;
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
/// Cargo's semver rules, as abi_stable applies them: for `0.y.z`, `y` is the breaking part and `z`
/// the additive part; for `x.y.z` with `x >= 1`, `x` is breaking and `y` additive. The plugin may
/// not rely on additions the host does not have.
pub fn api_compatible(host: Version, plugin: Version) -> bool {
    if host.major == 0 && plugin.major == 0 {
        host.minor == plugin.minor && plugin.patch <= host.patch
    } else {
        host.major == plugin.major && plugin.minor <= host.minor
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("valid version")
    }

    #[test]
    fn semver_rules() {
        assert!(api_compatible(v("0.1.3"), v("0.1.0")));
        assert!(!api_compatible(v("0.1.0"), v("0.1.3")));
        assert!(!api_compatible(v("0.1.0"), v("0.2.0")));
        assert!(!api_compatible(v("0.1.0"), v("1.0.0")));
        assert!(api_compatible(v("1.4.0"), v("1.2.9")));
        assert!(!api_compatible(v("1.2.0"), v("1.4.0")));
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
