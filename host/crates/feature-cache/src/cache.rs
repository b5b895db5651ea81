//! [`Cache`]: the cache folder, atomic stores, verified loads and housekeeping.

use std::{
    ffi::OsString,
    fmt,
    fs::{self, File, OpenOptions},
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use serde_json::Value;

use crate::{
    format::{self, ReadFailure},
    Array, ArrayRef, CacheError, CacheKey,
};

/// Extension of complete cache files.
const EXTENSION: &str = ".vfc";
/// Extension of a chunked, memory-mapped feature file (see [`crate::chunked`]).
const CHUNKED_EXTENSION: &str = ".vfp";

/// What [`Cache::open_chunked`] found.
pub enum ChunkedOutcome {
    /// No file for the key.
    Missing,
    /// A verified, mapped file.
    Loaded(crate::ChunkedFile),
    /// A file that failed a check; it has been removed.
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Prefix of the temporary files that stores write before renaming them into place:
/// `.tmp-<pid>-<sequence>-<digest>`.
const TEMP_PREFIX: &str = ".tmp-";

/// Name and content of the Cache Directory Tagging Specification file
/// (<https://bford.info/cachedir/>), which tells backup tools to skip the folder.
const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
const CACHEDIR_TAG_CONTENT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by virb (feature cache).\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// Distinguishes temporary files of concurrent stores within one process.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A folder of verified feature cache files, one `<digest>.vfc` per [`CacheKey`].
///
/// Several processes may use the same folder at once: stores write a private temporary file
/// and rename it into place, loads verify everything they read.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// What [`Cache::load`] found.
#[derive(Debug)]
pub enum LoadOutcome {
    /// A complete, verified file: the arrays in the order they were stored.
    Loaded(Vec<Array>),
    /// No file for this key.
    Missing,
    /// A file was there but is unusable (truncated, corrupt, foreign or stale); it has been
    /// removed, so that the next [`Cache::store`] rewrites it and a second load reports
    /// [`Missing`](Self::Missing).
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why it is unusable, for a log line (also says if removing it failed).
        reason: String,
    },
}

impl LoadOutcome {
    /// The arrays if [`Loaded`](Self::Loaded).
    pub fn into_arrays(self) -> Option<Vec<Array>> {
        match self {
            LoadOutcome::Loaded(arrays) => Some(arrays),
            LoadOutcome::Missing | LoadOutcome::Invalid { .. } => None,
        }
    }
}

/// What [`Cache::store`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// The cache file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of its payload, as recorded in its header.
    pub payload_sha256: String,
}

/// A number of files and their total size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of files.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

impl fmt::Display for Usage {
    /// `1 file, 512 B` or `3 files, 12.4 MiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.files == 1 { "" } else { "s" };
        write!(f, "{} file{s}, {}", self.files, human_bytes(self.bytes))
    }
}

/// A size with a binary unit and one decimal: `512 B`, `12.4 MiB`, `1.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.95 would print as "1024.0"; move to the next unit instead.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Cache {
    /// Opens (creating if needed) the cache folder `dir` and its `CACHEDIR.TAG`.
    pub fn open(dir: PathBuf) -> Result<Cache, CacheError> {
        fs::create_dir_all(&dir).map_err(|source| CacheError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let tag = dir.join(CACHEDIR_TAG);
        if !tag.exists() {
            match write_new(&tag, CACHEDIR_TAG_CONTENT.as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(CacheError::CreateDir { path: tag, source }),
            }
        }
        Ok(Cache { dir })
    }

    /// The default cache folder: `$VIRB_FEATURE_CACHE` if set and not empty, else
    /// `$XDG_CACHE_HOME/virb/features` if that is an absolute path, else
    /// `$HOME/.cache/virb/features`.
    pub fn default_dir() -> Result<PathBuf, CacheError> {
        default_dir_from(
            std::env::var_os("VIRB_FEATURE_CACHE"),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )
        .ok_or(CacheError::NoCacheDir)
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) the features for `key`: `<dir>/<digest>.vfc`.
    pub fn path_for(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}{EXTENSION}", key.digest()))
    }

    /// Whether a file for `key` is there (whole or chunked; not verified: a load verifies).
    pub fn has(&self, key: &CacheKey) -> bool {
        let digest = key.digest();
        [EXTENSION, CHUNKED_EXTENSION]
            .iter()
            .any(|ext| self.dir.join(format!("{digest}{ext}")).is_file())
    }

    /// Removes the file(s) for `key`, if any (a shard joined into its whole split).
    pub fn remove(&self, key: &CacheKey) {
        let digest = key.digest();
        for ext in [EXTENSION, CHUNKED_EXTENSION] {
            let _ = fs::remove_file(self.dir.join(format!("{digest}{ext}")));
        }
    }

    /// Stores `arrays` as the features for `key`, replacing any previous file.
    ///
    /// Each array must hold exactly `product(shape) * dtype.size()` bytes and have a unique,
    /// non-empty name ([`CacheError::InvalidArray`] otherwise). The file is written to a
    /// temporary file `.tmp-<pid>-<n>-<digest>` in the cache folder, flushed to disk and renamed
    /// into place, so a crash at any point leaves either the previous state or a complete file,
    /// and concurrent stores of one key (threads or processes) each rename a complete file.
    pub fn store(&self, key: &CacheKey, arrays: &[ArrayRef<'_>]) -> Result<StoreInfo, CacheError> {
        let digest = key.digest();
        let path = self.dir.join(format!("{digest}{EXTENSION}"));
        let encoded = format::encode(&key.canonical_value(), arrays)?;
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Write { path, source }
        };
        let (file, mut temp) = create_temp(&self.dir, &digest).map_err(write_err(&path))?;
        encoded
            .write_to(&mut &file)
            .and_then(|()| file.sync_all())
            .map_err(write_err(&temp.path))?;
        drop(file);
        fs::rename(&temp.path, &path).map_err(write_err(&path))?;
        temp.armed = false;
        sync_dir(&self.dir);
        Ok(StoreInfo {
            path,
            bytes: encoded.total_len(),
            payload_sha256: encoded.payload_sha256().to_string(),
        })
    }

    /// Starts writing the chunked file for `key`: `samples` samples of each of `arrays`
    /// (see [`crate::chunked`]); it becomes visible only when [`crate::ChunkedWriter::finish`]
    /// renames it into place.
    pub fn create_chunked(
        &self,
        key: &CacheKey,
        arrays: &[crate::ArraySpec],
        samples: u64,
    ) -> Result<crate::ChunkedWriter, CacheError> {
        let digest = key.digest();
        let path = self.dir.join(format!("{digest}{CHUNKED_EXTENSION}"));
        crate::ChunkedWriter::create(
            &self.dir,
            path,
            &digest,
            &expected_header_key(key),
            arrays,
            samples,
        )
    }

    /// Maps and verifies the chunked file for `key` (each chunk's checksum, reading the file
    /// once without keeping it resident); a file failing a check is removed.
    pub fn open_chunked(&self, key: &CacheKey) -> Result<ChunkedOutcome, CacheError> {
        let path = self
            .dir
            .join(format!("{}{CHUNKED_EXTENSION}", key.digest()));
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ChunkedOutcome::Missing),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        match crate::ChunkedFile::open(&path, &expected_header_key(key)) {
            Ok(file) => Ok(ChunkedOutcome::Loaded(file)),
            Err(crate::chunked::Refused::Io(source)) => Err(CacheError::Read { path, source }),
            Err(crate::chunked::Refused::Invalid(mut reason)) => {
                if let Err(e) = remove_if_same(&path, &meta) {
                    reason.push_str(&format!("; removing it failed too: {e}"));
                }
                Ok(ChunkedOutcome::Invalid { path, reason })
            }
        }
    }

    /// Loads and verifies the features for `key`.
    ///
    /// Returns [`LoadOutcome::Missing`] when there is no file, [`LoadOutcome::Loaded`] when the
    /// file passes every check (magic, header, exact key, file length, array table, payload
    /// SHA-256), and otherwise removes the file and returns [`LoadOutcome::Invalid`] with the
    /// reason. Errors are reserved for I/O failures such as a file that cannot be opened.
    pub fn load(&self, key: &CacheKey) -> Result<LoadOutcome, CacheError> {
        let path = self.path_for(key);
        let read_err = |source| CacheError::Read {
            path: path.clone(),
            source,
        };
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoadOutcome::Missing),
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        let result = if meta.is_file() {
            format::read_verified(&mut file, meta.len(), &expected_header_key(key))
        } else {
            Err(ReadFailure::Invalid("it is not a regular file".to_string()))
        };
        drop(file);
        match result {
            Ok(arrays) => Ok(LoadOutcome::Loaded(arrays)),
            Err(ReadFailure::Io(e)) => Err(read_err(e)),
            Err(ReadFailure::Invalid(mut reason)) => {
                if let Err(e) = remove_if_same(&path, &meta) {
                    reason.push_str(&format!("; removing it failed too: {e}"));
                }
                Ok(LoadOutcome::Invalid { path, reason })
            }
        }
    }

    /// Number and total size of the complete cache files (temporary files are not counted).
    pub fn usage(&self) -> Result<Usage, CacheError> {
        let mut usage = Usage::default();
        for (_, len) in self.list(is_cache_name)? {
            usage.add(len);
        }
        Ok(usage)
    }

    /// Removes temporary files left by crashed stores that were last modified more than
    /// `older_than` ago; younger ones may belong to a store in progress in another process
    /// (a store keeps its file's modification time fresh while writing, so an hour is safe).
    /// Returns what was removed.
    pub fn clean_stale_temps(&self, older_than: Duration) -> Result<Usage, CacheError> {
        let now = SystemTime::now();
        let mut removed = Usage::default();
        for (path, len) in self.list(is_temp_name)? {
            let age = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok());
            if age.is_some_and(|age| age > older_than) && remove(&path)? {
                removed.add(len);
            }
        }
        Ok(removed)
    }

    /// Removes every cache file and every temporary file (also those of stores in progress,
    /// which then fail), leaving the folder, its `CACHEDIR.TAG` and any foreign file.
    /// Returns what was removed.
    pub fn clear(&self) -> Result<Usage, CacheError> {
        let mut removed = Usage::default();
        for (path, len) in self.list(|name| is_cache_name(name) || is_temp_name(name))? {
            if remove(&path)? {
                removed.add(len);
            }
        }
        Ok(removed)
    }

    /// The regular files in the folder whose names pass `keep`, with their sizes. Files that
    /// vanish while listing (another process) are skipped.
    fn list(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<(PathBuf, u64)>, CacheError> {
        let list_err = |source| CacheError::ListDir {
            path: self.dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(&keep) {
                continue;
            }
            match entry.metadata() {
                Ok(meta) if meta.is_file() => files.push((entry.path(), meta.len())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(list_err(e)),
            }
        }
        Ok(files)
    }
}

/// The key as [`format::read_verified`] will find it in a header written for `key`: the
/// canonical JSON parsed back, so that both sides went through the same parser (serde_json may
/// parse some floats 1 ulp off, which must not make a file look foreign).
fn expected_header_key(key: &CacheKey) -> Value {
    serde_json::from_str(&key.canonical_json()).unwrap_or_else(|_| key.canonical_value())
}

/// `$VIRB_FEATURE_CACHE`, `$XDG_CACHE_HOME/virb/features` or `$HOME/.cache/virb/features`.
fn default_dir_from(
    virb: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let non_empty = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(virb) {
        return Some(dir);
    }
    let base = non_empty(xdg)
        .filter(|p| p.is_absolute())
        .or_else(|| non_empty(home).map(|h| h.join(".cache")))?;
    Some(base.join("virb").join("features"))
}

/// `<64 lower-case hex digits>.vfc`.
fn is_cache_name(name: &str) -> bool {
    name.strip_suffix(EXTENSION)
        .or_else(|| name.strip_suffix(CHUNKED_EXTENSION))
        .is_some_and(is_digest)
}

/// `.tmp-<pid>-<n>-<digest>`.
fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.as_slice(), [pid, n, digest] if is_number(pid) && is_number(n) && is_digest(digest))
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Removes `path`; `Ok(false)` if it was already gone.
fn remove(path: &Path) -> Result<bool, CacheError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CacheError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes the invalid file `path` unless another process has meanwhile renamed a new file
/// into its place (which must not be lost).
fn remove_if_same(path: &Path, read: &fs::Metadata) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match fs::symlink_metadata(path) {
            Ok(now) if now.dev() != read.dev() || now.ino() != read.ino() => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(unix))]
    let _ = read;
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, content: &[u8]) -> io::Result<()> {
    use io::Write;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(content)
}

/// Makes a rename in `dir` durable across power loss (best effort: not every file system
/// supports syncing a folder, and the rename itself is already atomic).
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Creates a new temporary file for `digest` in `dir`. A name can be taken by a file left by
/// a crashed process with the same pid, or by a process with the same pid in another PID
/// namespace sharing the folder: then the next sequence number is tried.
pub(crate) fn create_temp(dir: &Path, digest: &str) -> io::Result<(File, TempFile)> {
    let mut attempts = 0;
    loop {
        let path = dir.join(format!(
            "{TEMP_PREFIX}{}-{}-{digest}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, TempFile { path, armed: true })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 1000 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A temporary file removed on drop (after a failed write) unless disarmed (after its rename).
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(13_002_342), "12.4 MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(1_288_490_189), "1.2 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn usage_display() {
        let one = Usage {
            files: 1,
            bytes: 100,
        };
        assert_eq!(one.to_string(), "1 file, 100 B");
        let many = Usage {
            files: 3,
            bytes: 13_002_342,
        };
        assert_eq!(many.to_string(), "3 files, 12.4 MiB");
    }

    #[test]
    fn default_dir_precedence() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            default_dir_from(os("/v"), os("/x"), os("/h")),
            Some(PathBuf::from("/v"))
        );
        assert_eq!(
            default_dir_from(os(""), os("/x"), os("/h")),
            Some(PathBuf::from("/x/virb/features"))
        );
        assert_eq!(
            default_dir_from(None, os("relative"), os("/h")),
            Some(PathBuf::from("/h/.cache/virb/features"))
        );
        assert_eq!(
            default_dir_from(None, None, os("/h")),
            Some(PathBuf::from("/h/.cache/virb/features"))
        );
        assert_eq!(default_dir_from(None, os(""), None), None);
    }

    #[test]
    fn names() {
        let d = "0123456789abcdef".repeat(4);
        assert!(is_cache_name(&format!("{d}.vfc")));
        assert!(!is_cache_name(&format!("{}.vfc", d.to_uppercase())));
        assert!(!is_cache_name(&format!("{d}.vfc.bak")));
        assert!(!is_cache_name("CACHEDIR.TAG"));
        assert!(is_temp_name(&format!(".tmp-12-0-{d}")));
        assert!(!is_temp_name(&format!(".tmp-12-{d}")));
        assert!(!is_temp_name(&format!(".tmp-x-0-{d}")));
        assert!(!is_temp_name(".tmp-1-2-3"));
    }
}
