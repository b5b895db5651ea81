//! Root modules (what a plugin library exports) and the export macros.
use crate::{EncoderFactoryBox, ExtensionCall, ExtensionResult, PluginError, TaskBox};
use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RString, RVec},
    StableAbi,
};

/// Who a plugin is and what it was built against. Carried by both root modules.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginInfo {
    /// The plugin's own name (its package name).
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// The plugin-api version it was built against ([`crate::PLUGIN_API_VERSION`]).
    pub plugin_api_version: RString,
    /// The libtorch version it was built against ([`crate::LIBTORCH_VERSION`]).
    pub libtorch_version: RString,
}

/// Root module of a library that provides tasks.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = TaskPluginRef)))]
#[sabi(missing_field(panic))]
pub struct TaskPlugin {
    /// Who the plugin is.
    pub info: extern "C" fn() -> PluginInfo,
    /// The tasks it provides.
    pub tasks: extern "C" fn() -> RResult<RVec<TaskBox>, PluginError>,
    /// A library-level capability added after plugin-api 0.3.0, by name (see
    /// [`crate::extension`]); the export macro answers "not offered".
    #[sabi(last_prefix_field)]
    pub extension: extern "C" fn(name: RStr<'_>, call: ExtensionCall) -> ExtensionResult,
}

impl RootModule for TaskPluginRef {
    declare_root_module_statics! {TaskPluginRef}
    const BASE_NAME: &'static str = "virb_task_plugin";
    const NAME: &'static str = "virb_task_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Root module of a library that provides encoders.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = EncoderPluginRef)))]
#[sabi(missing_field(panic))]
pub struct EncoderPlugin {
    /// Who the plugin is.
    pub info: extern "C" fn() -> PluginInfo,
    /// The encoders it provides.
    pub encoders: extern "C" fn() -> RResult<RVec<EncoderFactoryBox>, PluginError>,
    /// A library-level capability added after plugin-api 0.3.0, by name (see
    /// [`crate::extension`]); the export macro answers "not offered".
    #[sabi(last_prefix_field)]
    pub extension: extern "C" fn(name: RStr<'_>, call: ExtensionCall) -> ExtensionResult,
}

impl RootModule for EncoderPluginRef {
    declare_root_module_statics! {EncoderPluginRef}
    const BASE_NAME: &'static str = "virb_encoder_plugin";
    const NAME: &'static str = "virb_encoder_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Name of the plain C symbol every virb plugin exports next to its root module: a function
/// returning a NUL-terminated manifest (`key=value` pairs separated by `;`: `kind`, `name`,
/// `version`, `plugin_api`, `libtorch`). Its form never changes, so a host can say exactly what an
/// incompatible plugin was built for before touching the root module.
pub const MANIFEST_SYMBOL: &str = "virb_plugin_manifest_v1";

/// The kind of root module a plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// Exports a [`TaskPluginRef`].
    Task,
    /// Exports an [`EncoderPluginRef`].
    Encoder,
}

impl PluginKind {
    /// `task` or `encoder`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Task => "task",
            PluginKind::Encoder => "encoder",
        }
    }
}

/// Builds the manifest text for the export macros.
#[doc(hidden)]
pub fn manifest_text(kind: PluginKind, name: &str, version: &str) -> std::ffi::CString {
    let text = format!(
        "kind={};name={name};version={version};plugin_api={};libtorch={}",
        kind.as_str(),
        crate::PLUGIN_API_VERSION,
        crate::LIBTORCH_VERSION
    );
    // Package names and versions never hold NUL bytes.
    std::ffi::CString::new(text.replace('\0', "")).unwrap_or_default()
}

/// The library-level `extension` of the export macros: no capability offered.
#[doc(hidden)]
pub extern "C" fn no_library_extension(_: RStr<'_>, _: ExtensionCall) -> ExtensionResult {
    crate::no_extension()
}

/// Builds the [`PluginInfo`] for the export macros.
#[doc(hidden)]
pub fn plugin_info(name: &str, version: &str) -> PluginInfo {
    PluginInfo {
        name: name.into(),
        version: version.into(),
        plugin_api_version: crate::PLUGIN_API_VERSION.into(),
        libtorch_version: crate::LIBTORCH_VERSION.into(),
    }
}

/// Exports a task plugin. `$tasks` is an expression of type `Vec<TaskBox>`, evaluated when the
/// host asks for the list (inside [`crate::guard`], so a panic becomes an error).
///
/// ```ignore
/// virb_plugin_api::export_task_plugin!(vec![TaskBox::from_value(MyTask, TD_Opaque)]);
/// ```
#[macro_export]
macro_rules! export_task_plugin {
    ($tasks:expr) => {
        const _: () = {
            #[$crate::abi_stable::export_root_module]
            pub fn virb_task_plugin_root() -> $crate::TaskPluginRef {
                use $crate::abi_stable::prefix_type::PrefixTypeTrait;
                extern "C" fn __virb_info() -> $crate::PluginInfo {
                    $crate::plugin_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                }
                extern "C" fn __virb_tasks() -> $crate::abi_stable::std_types::RResult<
                    $crate::abi_stable::std_types::RVec<$crate::TaskBox>,
                    $crate::PluginError,
                > {
                    $crate::guard(|| {
                        let list: Vec<$crate::TaskBox> = $tasks;
                        Ok(list.into())
                    })
                }
                $crate::TaskPlugin {
                    info: __virb_info,
                    tasks: __virb_tasks,
                    extension: $crate::no_library_extension,
                }
                .leak_into_prefix()
            }
            $crate::__export_manifest!($crate::PluginKind::Task);
        };
    };
}

/// Exports an encoder plugin. `$encoders` is an expression of type `Vec<EncoderFactoryBox>`.
#[macro_export]
macro_rules! export_encoder_plugin {
    ($encoders:expr) => {
        const _: () = {
            #[$crate::abi_stable::export_root_module]
            pub fn virb_encoder_plugin_root() -> $crate::EncoderPluginRef {
                use $crate::abi_stable::prefix_type::PrefixTypeTrait;
                extern "C" fn __virb_info() -> $crate::PluginInfo {
                    $crate::plugin_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                }
                extern "C" fn __virb_encoders() -> $crate::abi_stable::std_types::RResult<
                    $crate::abi_stable::std_types::RVec<$crate::EncoderFactoryBox>,
                    $crate::PluginError,
                > {
                    $crate::guard(|| {
                        let list: Vec<$crate::EncoderFactoryBox> = $encoders;
                        Ok(list.into())
                    })
                }
                $crate::EncoderPlugin {
                    info: __virb_info,
                    encoders: __virb_encoders,
                    extension: $crate::no_library_extension,
                }
                .leak_into_prefix()
            }
            $crate::__export_manifest!($crate::PluginKind::Encoder);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_manifest {
    ($kind:expr) => {
        #[no_mangle]
        pub extern "C" fn virb_plugin_manifest_v1() -> *const ::std::ffi::c_char {
            static TEXT: ::std::sync::OnceLock<::std::ffi::CString> = ::std::sync::OnceLock::new();
            TEXT.get_or_init(|| {
                $crate::manifest_text($kind, env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            })
            .as_ptr()
        }
    };
}
