//! Finding and loading plugins: every `.so` in the plugin folders is checked (manifest, plugin-api
//! and libtorch versions, then abi_stable's layout check) and either loaded or rejected with a
//! short reason and what to do. One bad file never stops the others from loading.
use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::{RResult, RVec};
use std::{
    ffi::{c_char, CStr},
    path::{Path, PathBuf},
    sync::Arc,
};
use virb_plugin_api::{
    api_compatible, libtorch_compatible, EncoderFactoryBox, EncoderInfo, EncoderPluginRef,
    PluginError, PluginKind, TaskBox, TaskInfo, TaskPluginRef, Version, LIBTORCH_VERSION,
    MANIFEST_SYMBOL, PLUGIN_API_VERSION,
};

/// Environment variable holding plugin folders (separated by `:`).
pub const PLUGINS_ENV: &str = "VIRB_PLUGINS_DIR";

/// A plugin folder and why it is searched.
#[derive(Debug, Clone)]
pub struct PluginDir {
    /// The folder.
    pub path: PathBuf,
    /// `--plugins-dir`, `VIRB_PLUGINS_DIR` or `default`.
    pub origin: &'static str,
}

/// The folders to search: `--plugins-dir` if given, else `$VIRB_PLUGINS_DIR` if set, else the
/// defaults: `<folder of virb-host>/plugins` and `$XDG_DATA_HOME/virb/plugins` (or
/// `~/.local/share/virb/plugins`).
pub fn plugin_dirs(cli: &[PathBuf]) -> Vec<PluginDir> {
    if !cli.is_empty() {
        return cli
            .iter()
            .map(|p| PluginDir {
                path: p.clone(),
                origin: "--plugins-dir",
            })
            .collect();
    }
    if let Ok(env) = std::env::var(PLUGINS_ENV) {
        let dirs: Vec<PluginDir> = env
            .split(':')
            .filter(|s| !s.is_empty())
            .map(|s| PluginDir {
                path: PathBuf::from(s),
                origin: PLUGINS_ENV,
            })
            .collect();
        if !dirs.is_empty() {
            return dirs;
        }
    }
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(PluginDir {
            path: exe_dir.join("plugins"),
            origin: "default",
        });
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(data_home) = data_home {
        dirs.push(PluginDir {
            path: data_home.join("virb/plugins"),
            origin: "default",
        });
    }
    dirs
}

/// A plugin that loaded.
#[derive(Debug, Clone)]
pub struct PluginMeta {
    /// The library file.
    pub path: PathBuf,
    /// Task or encoder plugin.
    pub kind: PluginKind,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The plugin-api version it was built against.
    pub api_version: String,
    /// The libtorch version it was built against.
    pub libtorch_version: String,
    /// Names of the tasks or encoders it provides.
    pub provides: Vec<String>,
}

/// A file that was not loaded, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// Why, in one line.
    pub reason: String,
    /// What to do.
    pub help: String,
}

/// A task with the plugin that provides it.
#[derive(Clone)]
pub struct TaskEntry {
    /// The task's description.
    pub info: TaskInfo,
    /// The task object.
    pub task: Arc<TaskBox>,
    /// Its plugin.
    pub plugin: Arc<PluginMeta>,
}

/// An encoder factory with the plugin that provides it.
#[derive(Clone)]
pub struct EncoderEntry {
    /// The encoder's description.
    pub info: EncoderInfo,
    /// The factory.
    pub factory: Arc<EncoderFactoryBox>,
    /// Its plugin.
    pub plugin: Arc<PluginMeta>,
}

/// Everything found in the plugin folders.
#[derive(Default)]
pub struct Registry {
    /// Folders searched.
    pub dirs: Vec<PluginDir>,
    /// Plugins loaded.
    pub plugins: Vec<Arc<PluginMeta>>,
    /// Files rejected.
    pub rejected: Vec<Rejected>,
    /// Tasks, in load order; the first provider of a name wins.
    pub tasks: Vec<TaskEntry>,
    /// Encoders, in load order; the first provider of a name wins.
    pub encoders: Vec<EncoderEntry>,
    /// Names provided twice: `(name, ignored plugin file)`.
    pub shadowed: Vec<(String, PathBuf)>,
}

impl Registry {
    /// Searches `dirs` and loads every plugin found.
    pub fn load(dirs: Vec<PluginDir>) -> Registry {
        let mut reg = Registry {
            dirs,
            ..Default::default()
        };
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        for dir in &reg.dirs {
            let Ok(entries) = std::fs::read_dir(&dir.path) else {
                continue;
            };
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("so" | "dylib"))
                })
                .collect();
            found.sort();
            for f in found {
                let key = f.canonicalize().unwrap_or_else(|_| f.clone());
                if seen.insert(key) {
                    files.push(f);
                }
            }
        }
        for file in files {
            match load_file(&file) {
                Ok(loaded) => reg.add(loaded),
                Err(rejected) => {
                    tracing::debug!("rejected {}: {}", rejected.path.display(), rejected.reason);
                    reg.rejected.push(rejected)
                }
            }
        }
        reg
    }

    fn add(&mut self, loaded: Loaded) {
        let meta = Arc::new(loaded.meta);
        for (info, task) in loaded.tasks {
            let name = info.name.to_string();
            if self.tasks.iter().any(|t| t.info.name == info.name) {
                self.shadowed.push((name, meta.path.clone()));
                continue;
            }
            self.tasks.push(TaskEntry {
                info,
                task: Arc::new(task),
                plugin: meta.clone(),
            });
        }
        for (info, factory) in loaded.encoders {
            let name = info.name.to_string();
            if self.encoders.iter().any(|e| e.info.name == info.name) {
                self.shadowed.push((name, meta.path.clone()));
                continue;
            }
            self.encoders.push(EncoderEntry {
                info,
                factory: Arc::new(factory),
                plugin: meta.clone(),
            });
        }
        self.plugins.push(meta);
    }

    /// The task called `name`, or an error listing the known tasks.
    pub fn task(&self, name: &str) -> Result<&TaskEntry, String> {
        self.tasks
            .iter()
            .find(|t| t.info.name.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown task `{name}`; known tasks: {}{}",
                    list_or_none(self.tasks.iter().map(|t| t.info.name.to_string())),
                    self.hint()
                )
            })
    }

    /// The encoder called `name`, or an error listing the known encoders.
    pub fn encoder(&self, name: &str) -> Result<&EncoderEntry, String> {
        self.encoders
            .iter()
            .find(|e| e.info.name.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown encoder `{name}`; known encoders: {}{}",
                    list_or_none(self.encoders.iter().map(|e| e.info.name.to_string())),
                    self.hint()
                )
            })
    }

    fn hint(&self) -> String {
        let searched = self
            .dirs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut hint = format!(" (plugins searched in: {searched}");
        // A refused plugin may be the one that provides the name: say why it was refused.
        if !self.rejected.is_empty() && self.rejected.len() <= 3 {
            for r in &self.rejected {
                let file = r.path.file_name().unwrap_or(r.path.as_os_str());
                hint.push_str(&format!(
                    "; rejected {}: {}",
                    Path::new(file).display(),
                    r.reason
                ));
            }
            hint.push_str("; see `virb-host plugins`");
        } else if !self.rejected.is_empty() {
            hint.push_str(&format!(
                "; {} file(s) rejected, see `virb-host plugins`",
                self.rejected.len()
            ));
        }
        hint.push(')');
        hint
    }
}

fn list_or_none(names: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = names.collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

struct Loaded {
    meta: PluginMeta,
    tasks: Vec<(TaskInfo, TaskBox)>,
    encoders: Vec<(EncoderInfo, EncoderFactoryBox)>,
}

fn reject(path: &Path, reason: impl Into<String>, help: impl Into<String>) -> Rejected {
    Rejected {
        path: path.to_path_buf(),
        reason: reason.into(),
        help: help.into(),
    }
}

/// What versions of plugin-api this host accepts, in words (any patch of its `0.y`, any minor of
/// its major from 1.0: see `virb_plugin_api::api_compatible`).
pub fn accepted_api_range() -> String {
    match Version::parse(PLUGIN_API_VERSION) {
        Some(v) if v.major == 0 => format!("0.{}.x", v.minor),
        Some(v) => format!("{}.x", v.major),
        None => PLUGIN_API_VERSION.to_string(),
    }
}

fn load_file(path: &Path) -> Result<Loaded, Rejected> {
    // A truncated library would be mapped anyway and kill the process with SIGBUS on first use.
    crate::elf::check_file(path).map_err(|why| {
        reject(
            path,
            why,
            "replace the file with a complete build of the plugin, or remove it from the plugin folder",
        )
    })?;
    // SAFETY: loading a library runs its initialisers; plugins are trusted code by design.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        let text = first_line(&e.to_string());
        if crate::libtorch::missing_symbol(&text) {
            // Plugins bind every symbol at load time: a libtorch symbol this process's libtorch
            // lacks means the plugin was built against another libtorch, before its manifest
            // can say which.
            return reject(
                path,
                format!("cannot be loaded: {text} (a libtorch symbol: it was built against another libtorch than this virb-host's {LIBTORCH_VERSION})"),
                format!(
                    "rebuild it with LIBTORCH set to a libtorch {}{}",
                    crate::libtorch::host_minor(),
                    crate::libtorch::host_location()
                ),
            );
        }
        reject(
            path,
            format!("cannot be loaded: {text}"),
            "check that it was built for this platform and finds libtorch (`ldd` on the file)",
        )
    })?;
    let manifest = {
        // SAFETY: the symbol, when present, has this signature (plugin-api's export macros).
        let symbol = unsafe {
            lib.get::<extern "C" fn() -> *const c_char>(MANIFEST_SYMBOL.as_bytes())
        }
        .map_err(|_| {
            reject(
                path,
                format!("not a virb plugin (it exports no `{MANIFEST_SYMBOL}`)"),
                "virb plugins are built with virb-plugin-api's export_task_plugin! or export_encoder_plugin!; remove other files from the plugin folder",
            )
        })?;
        let ptr = symbol();
        if ptr.is_null() {
            return Err(reject(path, "its manifest is empty", "rebuild the plugin"));
        }
        // SAFETY: the manifest is a NUL-terminated static string.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    };
    let field = |key: &str| {
        manifest
            .split(';')
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    let (kind, name, version, api, libtorch) = (
        field("kind"),
        field("name"),
        field("version"),
        field("plugin_api"),
        field("libtorch"),
    );
    let kind = match kind.as_str() {
        "task" => PluginKind::Task,
        "encoder" => PluginKind::Encoder,
        other => {
            return Err(reject(
                path,
                format!("unknown plugin kind `{other}` in its manifest"),
                "rebuild the plugin against a released virb-plugin-api",
            ))
        }
    };
    let host_api = Version::parse(PLUGIN_API_VERSION);
    let plugin_api = Version::parse(&api);
    let compatible = matches!((host_api, plugin_api), (Some(h), Some(p)) if api_compatible(h, p));
    if !compatible {
        return Err(reject(
            path,
            format!(
                "{name} {version} was built for plugin-api {api}; this virb-host accepts plugin-api {}",
                accepted_api_range()
            ),
            format!(
                "rebuild {name} against virb-plugin-api {PLUGIN_API_VERSION}, or use a virb-host built for plugin-api {api}"
            ),
        ));
    }
    if !libtorch_compatible(LIBTORCH_VERSION, &libtorch) {
        return Err(libtorch_mismatch(path, &name, &version, &libtorch));
    }
    // Plugins are never unloaded: their code and vtables back the objects the host keeps.
    std::mem::forget(lib);
    let header = lib_header_from_path(path).map_err(|e| library_error(path, &name, e))?;
    let meta = |info: virb_plugin_api::PluginInfo, provides: Vec<String>| PluginMeta {
        path: path.to_path_buf(),
        kind,
        name: info.name.to_string(),
        version: info.version.to_string(),
        api_version: info.plugin_api_version.to_string(),
        libtorch_version: info.libtorch_version.to_string(),
        provides,
    };
    match kind {
        PluginKind::Task => {
            let module = header
                .init_root_module::<TaskPluginRef>()
                .map_err(|e| library_error(path, &name, e))?;
            let tasks = describe(path, &name, "task", (module.tasks())(), |t| t.info())?;
            let provides = tasks.iter().map(|(i, _)| i.name.to_string()).collect();
            Ok(Loaded {
                meta: meta((module.info())(), provides),
                tasks,
                encoders: Vec::new(),
            })
        }
        PluginKind::Encoder => {
            let module = header
                .init_root_module::<EncoderPluginRef>()
                .map_err(|e| library_error(path, &name, e))?;
            let encoders = describe(path, &name, "encoder", (module.encoders())(), |f| f.info())?;
            let provides = encoders.iter().map(|(i, _)| i.name.to_string()).collect();
            Ok(Loaded {
                meta: meta((module.info())(), provides),
                tasks: Vec::new(),
                encoders,
            })
        }
    }
}

/// Pairs each item a plugin lists with its description; any error rejects the plugin.
fn describe<T, I>(
    path: &Path,
    name: &str,
    what: &str,
    listed: RResult<RVec<T>, PluginError>,
    info: impl Fn(&T) -> RResult<I, PluginError>,
) -> Result<Vec<(I, T)>, Rejected> {
    let fail = |doing: &str, e: PluginError| {
        reject(
            path,
            format!("{name} failed to {doing}: {}", e.message),
            e.help.to_string(),
        )
    };
    listed
        .into_result()
        .map_err(|e| fail(&format!("list its {what}s"), e))?
        .into_iter()
        .map(|item| {
            info(&item)
                .into_result()
                .map(|i| (i, item))
                .map_err(|e| fail(&format!("describe a {what}"), e))
        })
        .collect()
}

/// A plugin built for another libtorch: tensors cross the boundary as libtorch objects, so it
/// must use the host's major.minor. Says which libtorch each side has and how to rebuild.
fn libtorch_mismatch(path: &Path, name: &str, version: &str, libtorch: &str) -> Rejected {
    let built_for = if libtorch.is_empty() || libtorch == "unknown" {
        "an unknown libtorch (its build found no torch/version.py beside the libtorch it linked)"
            .to_string()
    } else {
        format!("libtorch {libtorch}")
    };
    reject(
        path,
        format!("{name} {version} was built for {built_for}; this virb-host uses libtorch {LIBTORCH_VERSION}"),
        format!(
            "rebuild {name} with LIBTORCH set to a libtorch {}{}, or load it into a virb-host built for its libtorch",
            crate::libtorch::host_minor(),
            crate::libtorch::host_location()
        ),
    )
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() > 240 {
        format!("{}...", line.chars().take(240).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Turns abi_stable's errors (some run to thousands of lines) into one short line.
fn library_error(path: &Path, name: &str, err: LibraryError) -> Rejected {
    let rebuild = format!("rebuild {name} against virb-plugin-api {PLUGIN_API_VERSION}");
    match err {
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => reject(
            path,
            format!(
                "{name} was built for plugin-api {actual_version}; this virb-host accepts plugin-api {} (abi_stable expected {expected_version})",
                accepted_api_range()
            ),
            rebuild,
        ),
        LibraryError::AbiInstability(_) => reject(
            path,
            format!(
                "{name}'s plugin-api types differ from this virb-host's although both claim plugin-api {PLUGIN_API_VERSION} (built from a modified plugin-api?)"
            ),
            rebuild,
        ),
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => reject(
            path,
            format!("{name} was built with an incompatible abi_stable or Rust C ABI"),
            rebuild,
        ),
        LibraryError::GetSymbolError { .. } => reject(
            path,
            format!("{name} exports a virb manifest but no abi_stable root module"),
            rebuild,
        ),
        LibraryError::RootModule { err, .. } => reject(
            path,
            format!("{name}'s root module failed to initialise: {}", first_line(&err.to_string())),
            "this is a bug in the plugin; report it to its authors",
        ),
        other => reject(path, first_line(&other.to_string()), rebuild),
    }
}
