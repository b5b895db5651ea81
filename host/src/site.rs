//! Site defaults: the settings a lab sets once per machine or cluster (data and cache folders,
//! devices, Slurm partition and account) instead of on every command line.
//!
//! They live in TOML files, read in this order of priority (the first that sets a key wins):
//! command-line flags (applied by the caller, [`Source::Flag`]), `./virb.toml`, then the user's
//! `$XDG_CONFIG_HOME/virb/config.toml` (`~/.config/virb/config.toml` when XDG_CONFIG_HOME is not
//! set). A missing file is skipped; an unreadable one is an error.
//!
//! Design choices:
//! - Keys merge one by one, not section by section: `./virb.toml` may set only `slurm.account` and
//!   the user file still supplies `slurm.partition`. A list (`paths.plugins_dir`) is one key: the
//!   file that sets it supplies the whole list.
//! - Relative paths in a file are relative to the folder of that file (so a `virb.toml` checked
//!   into a project works from any working directory); a leading `~/` is the home folder.
//! - Every table rejects unknown keys (`deny_unknown_fields`): a typo such as `data-root` is an
//!   error naming the file, the line and the key and listing the known keys, never silently ignored.
//! - Each value keeps where it came from ([`Source`]), so `virb-host config` ([`Site::describe`])
//!   shows why a value is what it is.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Every key a site file may set, as `section.key`, for error messages and [`Site::describe`].
pub const KNOWN_KEYS: &[&str] = &[
    "paths.data_root",
    "paths.cache_dir",
    "paths.plugins_dir",
    "paths.out",
    "run.devices",
    "slurm.partition",
    "slurm.account",
    "slurm.gres",
    "slurm.time",
    "slurm.cpus_per_task",
    "slurm.mem",
    "slurm.extra_args",
];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// A site file.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "from the command line"),
            Source::File(p) => write!(f, "from {}", p.display()),
        }
    }
}

/// One value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value (paths already resolved against their file's folder).
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// Picks a command-line flag's value when given, else the site's setting: "flags win".
pub fn pick<T: Clone>(flag: Option<T>, site: &Option<Setting<T>>) -> Option<Setting<T>> {
    match flag {
        Some(value) => Some(Setting {
            value,
            source: Source::Flag,
        }),
        None => site.clone(),
    }
}

/// The merged site defaults. `None`: no file sets the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    /// The files consulted, highest priority first, and whether each exists.
    pub files: Vec<(PathBuf, bool)>,
    /// `paths.data_root`: default `--data-root`.
    pub data_root: Option<Setting<PathBuf>>,
    /// `paths.cache_dir`: default `--cache-dir`.
    pub cache_dir: Option<Setting<PathBuf>>,
    /// `paths.plugins_dir`: plugin folders searched besides `--plugins-dir`.
    pub plugins_dir: Option<Setting<Vec<PathBuf>>>,
    /// `paths.out`: default `--out`.
    pub out: Option<Setting<PathBuf>>,
    /// `run.devices`: default `--devices`.
    pub devices: Option<Setting<String>>,
    /// `slurm.partition`: `sbatch --partition`.
    pub partition: Option<Setting<String>>,
    /// `slurm.account`: `sbatch --account`.
    pub account: Option<Setting<String>>,
    /// `slurm.gres`: `sbatch --gres`.
    pub gres: Option<Setting<String>>,
    /// `slurm.time`: `sbatch --time`.
    pub time: Option<Setting<String>>,
    /// `slurm.cpus_per_task`: `sbatch --cpus-per-task`.
    pub cpus_per_task: Option<Setting<u32>>,
    /// `slurm.mem`: `sbatch --mem`.
    pub mem: Option<Setting<String>>,
    /// `slurm.extra_args`: passed to sbatch verbatim.
    pub extra_args: Option<Setting<Vec<String>>>,
}

/// Why the site files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A file exists but cannot be read.
    #[error("cannot read the site config {}: {source}; fix its permissions or remove it", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{}{}: {}{message}\n  known keys: {}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default(), KNOWN_KEYS.join(", "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the fault, when known.
        line: Option<usize>,
        /// The key at fault (`section.key`), when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    paths: PathsDoc,
    #[serde(default)]
    run: RunDoc,
    #[serde(default)]
    slurm: SlurmDoc,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathsDoc {
    data_root: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    plugins_dir: Option<Vec<PathBuf>>,
    out: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunDoc {
    devices: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SlurmDoc {
    partition: Option<String>,
    account: Option<String>,
    gres: Option<String>,
    time: Option<String>,
    cpus_per_task: Option<u32>,
    mem: Option<String>,
    extra_args: Option<Vec<String>>,
}

/// The standard site files, highest priority first: `./virb.toml`, then the user's config.
pub fn standard_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("virb.toml")];
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = config_home {
        paths.push(dir.join("virb").join("config.toml"));
    }
    paths
}

/// Loads and merges the standard site files (see the module documentation).
pub fn load() -> Result<Site, SiteError> {
    load_from(&standard_paths())
}

/// Loads and merges `paths`, highest priority first; missing files are skipped.
pub fn load_from(paths: &[PathBuf]) -> Result<Site, SiteError> {
    let mut site = Site::default();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                site.files.push((path.clone(), false));
                continue;
            }
            Err(source) => {
                return Err(SiteError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        site.files.push((path.clone(), true));
        let doc: FileDoc = toml::from_str(&text).map_err(|e| invalid(path, &text, &e))?;
        merge(&mut site, doc, path)?;
    }
    Ok(site)
}

/// Turns a toml error into one naming the file, the line and the key.
fn invalid(path: &Path, text: &str, e: &toml::de::Error) -> SiteError {
    let (line, key) = match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            (Some(line), key_at(text, line))
        }
        None => (None, None),
    };
    SiteError::Invalid {
        path: path.to_path_buf(),
        line,
        key,
        message: e.message().trim().to_string(),
    }
}

/// The `section.key` written on 1-based `line`, from the nearest `[section]` header above it.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?.trim();
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if here.starts_with('[') {
        return Some(
            here.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = here.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

fn merge(site: &mut Site, doc: FileDoc, path: &Path) -> Result<(), SiteError> {
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let src = || Source::File(path.to_path_buf());
    let resolve = |p: PathBuf| resolve_path(&folder, p);
    fn set<T>(slot: &mut Option<Setting<T>>, value: Option<T>, source: impl Fn() -> Source) {
        if slot.is_none() {
            if let Some(value) = value {
                *slot = Some(Setting {
                    value,
                    source: source(),
                });
            }
        }
    }
    let p = doc.paths;
    set(&mut site.data_root, p.data_root.map(resolve), src);
    set(&mut site.cache_dir, p.cache_dir.map(resolve), src);
    set(
        &mut site.plugins_dir,
        p.plugins_dir.map(|v| v.into_iter().map(resolve).collect()),
        src,
    );
    set(&mut site.out, p.out.map(resolve), src);
    let r = doc.run;
    non_empty(path, "run.devices", &r.devices)?;
    set(&mut site.devices, r.devices, src);
    let s = doc.slurm;
    for (key, value) in [
        ("slurm.partition", &s.partition),
        ("slurm.account", &s.account),
        ("slurm.gres", &s.gres),
        ("slurm.time", &s.time),
        ("slurm.mem", &s.mem),
    ] {
        non_empty(path, key, value)?;
    }
    if s.cpus_per_task == Some(0) {
        return Err(bad_value(path, "slurm.cpus_per_task", "must be at least 1"));
    }
    set(&mut site.partition, s.partition, src);
    set(&mut site.account, s.account, src);
    set(&mut site.gres, s.gres, src);
    set(&mut site.time, s.time, src);
    set(&mut site.cpus_per_task, s.cpus_per_task, src);
    set(&mut site.mem, s.mem, src);
    set(&mut site.extra_args, s.extra_args, src);
    Ok(())
}

fn non_empty(path: &Path, key: &str, value: &Option<String>) -> Result<(), SiteError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(bad_value(
            path,
            key,
            "is empty; remove the key to leave it unset",
        )),
        _ => Ok(()),
    }
}

fn bad_value(path: &Path, key: &str, message: &str) -> SiteError {
    let line = std::fs::read_to_string(path).ok().and_then(|text| {
        let name = key.rsplit('.').next().unwrap_or(key);
        text.lines()
            .position(|l| l.trim_start().starts_with(name))
            .map(|i| i + 1)
    });
    SiteError::Invalid {
        path: path.to_path_buf(),
        line,
        key: Some(key.to_string()),
        message: message.to_string(),
    }
}

/// `~/x` is the home folder's `x`; a relative path is relative to the file's folder.
fn resolve_path(folder: &Path, p: PathBuf) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if p.is_absolute() {
        p
    } else {
        folder.join(p)
    }
}

fn show<T>(key: &str, setting: &Option<Setting<T>>, fmt: impl Fn(&T) -> String) -> String {
    match setting {
        Some(s) => format!("{key} = {}  ({})", fmt(&s.value), s.source),
        None => format!("{key} = not set"),
    }
}

fn list<T: fmt::Debug>(items: &[T]) -> String {
    format!("{items:?}")
}

impl Site {
    /// Lines for `virb-host config`: the files consulted, then `key = value  (source)` for every
    /// known key, `not set` for keys no file sets.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .files
            .iter()
            .map(|(p, found)| {
                let state = if *found { "read" } else { "not found" };
                format!("# {} ({state})", p.display())
            })
            .collect();
        let path = |p: &PathBuf| p.display().to_string();
        lines.push(show("paths.data_root", &self.data_root, path));
        lines.push(show("paths.cache_dir", &self.cache_dir, path));
        lines.push(show("paths.plugins_dir", &self.plugins_dir, |v| list(v)));
        lines.push(show("paths.out", &self.out, path));
        lines.push(show("run.devices", &self.devices, String::clone));
        lines.push(show("slurm.partition", &self.partition, String::clone));
        lines.push(show("slurm.account", &self.account, String::clone));
        lines.push(show("slurm.gres", &self.gres, String::clone));
        lines.push(show("slurm.time", &self.time, String::clone));
        lines.push(show(
            "slurm.cpus_per_task",
            &self.cpus_per_task,
            u32::to_string,
        ));
        lines.push(show("slurm.mem", &self.mem, String::clone));
        lines.push(show("slurm.extra_args", &self.extra_args, |v| list(v)));
        lines
    }
}

#[cfg(test)]
mod tests;
