//! [`CacheError`]: failures the caller has to act on.

use std::{io, path::PathBuf};

/// A failure of the cache itself (I/O, bad input), as opposed to a corrupt cache file, which
/// [`Cache::load`](crate::Cache::load) reports as [`LoadOutcome::Invalid`](crate::LoadOutcome)
/// and repairs by removing the file.
///
/// Every message names the file or folder and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Neither `VIRB_FEATURE_CACHE`, `XDG_CACHE_HOME` nor `HOME` is set.
    #[error(
        "cannot find a folder for the feature cache: none of VIRB_FEATURE_CACHE, XDG_CACHE_HOME \
         and HOME is set; set VIRB_FEATURE_CACHE to a writable folder or pass --no-cache"
    )]
    NoCacheDir,

    /// The cache folder (or its `CACHEDIR.TAG`) cannot be created.
    #[error(
        "cannot create the feature cache folder {path}: {source}; set VIRB_FEATURE_CACHE to a \
         writable folder or pass --no-cache"
    )]
    CreateDir {
        /// The folder or tag file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The cache folder cannot be listed.
    #[error(
        "cannot list the feature cache folder {path}: {source}; check its permissions or pass \
         --no-cache"
    )]
    ListDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A cache file (or its temporary file) cannot be written or renamed into place.
    #[error("cannot write {path}: {source}; check free space and permissions or pass --no-cache")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A cache file exists but cannot be read (permissions, I/O error). A file that reads
    /// fine but is corrupt is not an error: see [`LoadOutcome::Invalid`](crate::LoadOutcome).
    #[error("cannot read {path}: {source}; check its permissions, delete it, or pass --no-cache")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A file cannot be removed by [`Cache::clear`](crate::Cache::clear) or
    /// [`Cache::clean_stale_temps`](crate::Cache::clean_stale_temps).
    #[error("cannot remove {path}: {source}; check its permissions or delete it by hand")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// An array given to [`Cache::store`](crate::Cache::store) is inconsistent (a bug in the
    /// caller).
    #[error("cannot cache array `{name}`: {reason}")]
    InvalidArray {
        /// The array's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}
