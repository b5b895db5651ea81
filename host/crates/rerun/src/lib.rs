//! Rerun stamps: an identical rerun answered without loading libtorch or a plugin.
//!
//! Loading libtorch (and registering its thousands of operators) takes about 0.3 s, more than an
//! identical rerun of a finished run needs. So `virb-host` is a small launcher without libtorch:
//! when a `run` has finished with every result complete, `virb-host-core` writes a *stamp*: the
//! state (size, modification and change times, inode, device) of everything the run's outcome
//! depends on, and the table it printed. A later `virb-host` with the same arguments, working
//! folder and environment (the [`key`]) finds the stamp, checks that nothing it lists has
//! changed, and prints the table; anything changed, missing or new, and the launcher runs
//! `virb-host-core` as before.
//!
//! What a stamp lists (see `virb-host-core`'s `rerun_stamp.rs`): the experiment list and virb
//! config, the site config files (their absence too), every weights file, the plugin folders and
//! plugin files, both binaries, every file of the out/ folder but hidden ones (claims, Slurm logs,
//! shard plans), and the data root's folders and files down to a few levels (a file added to or
//! removed from any listed folder changes that folder's times).
//!
//! Stamps live in `$VIRB_RERUN_DIR`, else `$XDG_CACHE_HOME/virb/reruns`, else
//! `~/.cache/virb/reruns`. `VIRB_NO_RERUN_STAMP=1` turns them off; so do `VIRB_RUN_ID` (a worker
//! of a multi-device run) and `SLURM_JOB_ID` (a Slurm task), whose parents own the outcome.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::{
    collections::HashSet,
    ffi::OsString,
    fs, io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

/// Set (non-empty) to neither read nor write stamps.
pub const DISABLE_ENV: &str = "VIRB_NO_RERUN_STAMP";
/// The folder of the stamps, when set.
pub const DIR_ENV: &str = "VIRB_RERUN_DIR";
/// The stamp format; a stamp of another format is ignored.
pub const FORMAT: u32 = 1;

/// Whether this process may read and write stamps (see the crate's documentation).
pub fn enabled() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    !set(DISABLE_ENV) && !set("VIRB_RUN_ID") && !set("SLURM_JOB_ID")
}

/// Environment variables that may change what a run does or where it reads: part of the key.
fn keyed_env(name: &str) -> bool {
    name.starts_with("VIRB_")
        || matches!(
            name,
            "HOME"
                | "XDG_CONFIG_HOME"
                | "XDG_CACHE_HOME"
                | "CUDA_VISIBLE_DEVICES"
                | "OMP_NUM_THREADS"
                | "MKL_NUM_THREADS"
                | "LD_LIBRARY_PATH"
                | "LD_PRELOAD"
        )
}

/// The key of a command: its arguments (without the program name), its working folder and the
/// environment variables that can change what it does, hashed (SHA-256, hex).
pub fn key(args: &[OsString], cwd: &Path) -> String {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_some_and(keyed_env))
        .collect();
    env.sort();
    let mut h = Sha256::new();
    let mut put = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    put("format", &FORMAT.to_le_bytes());
    put("version", env!("CARGO_PKG_VERSION").as_bytes());
    put("cwd", cwd.as_os_str().as_bytes());
    for a in args {
        put("arg", a.as_bytes());
    }
    for (k, v) in &env {
        put("env", k.as_bytes());
        put("=", v.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The folder of the stamps (see the crate's documentation), if there is a home to put it in.
pub fn dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var(DIR_ENV) {
        return Some(PathBuf::from(d));
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("virb").join("reruns"))
}

/// What a path was when the stamp was written.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum State {
    /// Nothing there (a site config file that does not exist is an input too).
    Absent,
    /// A file (symbolic links followed).
    File {
        /// Bytes.
        size: u64,
        /// Modification time, nanoseconds since the epoch.
        mtime_ns: i64,
        /// Status change time, nanoseconds since the epoch.
        ctime_ns: i64,
        /// Inode.
        ino: u64,
        /// Device.
        dev: u64,
    },
    /// A folder: its times change when an entry is added, removed or renamed.
    Dir {
        /// Modification time, nanoseconds since the epoch.
        mtime_ns: i64,
        /// Status change time, nanoseconds since the epoch.
        ctime_ns: i64,
        /// Inode.
        ino: u64,
        /// Device.
        dev: u64,
    },
    /// Anything else, or a path that could not be read (never equal to a later reading).
    Unreadable,
}

impl State {
    /// The state of `path` now.
    pub fn of(path: &Path) -> State {
        match fs::metadata(path) {
            Ok(m) => {
                let mtime_ns = m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec();
                let ctime_ns = m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec();
                if m.is_file() {
                    State::File {
                        size: m.len(),
                        mtime_ns,
                        ctime_ns,
                        ino: m.ino(),
                        dev: m.dev(),
                    }
                } else if m.is_dir() {
                    State::Dir {
                        mtime_ns,
                        ctime_ns,
                        ino: m.ino(),
                        dev: m.dev(),
                    }
                } else {
                    State::Unreadable
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::Absent,
            Err(_) => State::Unreadable,
        }
    }
}

/// One path and its state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path.
    pub path: PathBuf,
    /// Its state when the stamp was written.
    pub state: State,
}

/// What a finished run depended on and what it printed.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Stamp {
    /// [`FORMAT`].
    pub format: u32,
    /// The command's [`key`].
    pub key: String,
    /// When the run finished, seconds since the epoch.
    pub written_unix_s: u64,
    /// The run's out/ folder (for the message of a rerun).
    pub out: PathBuf,
    /// Every input and output, with its state.
    pub entries: Vec<Entry>,
    /// What the run printed on standard output.
    pub stdout: String,
}

/// Too many entries under a folder to list them all in a stamp.
#[derive(Debug)]
pub struct TooMany;

/// The entries of a stamp being collected: each path once, absolute.
#[derive(Default)]
pub struct Inputs {
    entries: Vec<Entry>,
    seen: HashSet<PathBuf>,
}

impl Inputs {
    /// Records `path` (any kind, absent included).
    pub fn path(&mut self, path: &Path) {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if self.seen.insert(abs.clone()) {
            let state = State::of(&abs);
            self.entries.push(Entry { path: abs, state });
        }
    }

    /// Records `root` and what lies under it down to `depth` levels (1: its entries), skipping
    /// names that start with a dot when `skip_hidden`. Fails past `limit` entries (the entries
    /// recorded so far stay: the caller retries shallower or gives up).
    pub fn tree(
        &mut self,
        root: &Path,
        depth: usize,
        limit: usize,
        skip_hidden: bool,
    ) -> Result<(), TooMany> {
        self.path(root);
        let mut stack = vec![(root.to_path_buf(), 0usize)];
        let mut count = 0usize;
        while let Some((dir, level)) = stack.pop() {
            if level >= depth {
                continue;
            }
            let Ok(read) = fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
            names.sort();
            for p in names {
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.as_bytes().first() == Some(&b'.'));
                if skip_hidden && hidden {
                    continue;
                }
                count += 1;
                if count > limit {
                    return Err(TooMany);
                }
                self.path(&p);
                if p.is_dir() {
                    stack.push((p, level + 1));
                }
            }
        }
        Ok(())
    }

    /// Adds the entries of `other` (those not recorded yet).
    pub fn extend(&mut self, other: Inputs) {
        for e in other.entries {
            if self.seen.insert(e.path.clone()) {
                self.entries.push(e);
            }
        }
    }

    /// The entries, in the order recorded.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

/// The stamp of `key`, if there is one and nothing it lists has changed.
pub fn fresh(key: &str) -> Option<Stamp> {
    fresh_in(&dir()?, key)
}

/// [`fresh`], with the stamps in `dir`.
pub fn fresh_in(dir: &Path, key: &str) -> Option<Stamp> {
    let path = dir.join(format!("{key}.json"));
    let text = fs::read(&path).ok()?;
    let stamp: Stamp = serde_json::from_slice(&text).ok()?;
    (stamp.format == FORMAT
        && stamp.key == key
        && stamp.entries.iter().all(|e| State::of(&e.path) == e.state))
    .then_some(stamp)
}

/// Writes `stamp` (atomically: a unique temporary file renamed into place).
pub fn write(stamp: &Stamp) -> io::Result<PathBuf> {
    let dir = dir().ok_or_else(|| io::Error::other("no HOME or XDG_CACHE_HOME for the stamps"))?;
    write_in(&dir, stamp)
}

/// [`write`], with the stamps in `dir`.
pub fn write_in(dir: &Path, stamp: &Stamp) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", stamp.key));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.json.tmp-{}-{nanos}",
        stamp.key,
        std::process::id()
    ));
    let json = serde_json::to_vec(stamp).map_err(io::Error::other)?;
    fs::write(&tmp, json)?;
    fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// Removes the stamp of `key`, if any (a run that did not finish cleanly invalidates it).
pub fn remove(key: &str) {
    if let Some(d) = dir() {
        let _ = fs::remove_file(d.join(format!("{key}.json")));
    }
}

#[cfg(test)]
mod tests;
