//! A verified on-disk cache of encoded features, independent of any tensor library.
//!
//! virb encodes each data set split once with a frozen encoder and trains small heads on the
//! cached features. This crate stores those features as raw little-endian arrays: the host
//! converts its tensors to [`ArrayRef`]s, calls [`Cache::store`], and later gets [`Array`]s
//! back from [`Cache::load`] — after every byte has been verified.
//!
//! ```no_run
//! # use virb_feature_cache::*;
//! # fn main() -> Result<(), CacheError> {
//! # let key = CacheKey {
//! #     encoder_plugin: "virb-encoder-resnet".into(), encoder_plugin_version: "0.1.0".into(),
//! #     encoder: "resnet50".into(), encoder_options: serde_json::json!({}),
//! #     weights_sha256: "00".repeat(32), task: "CalTech-101".into(),
//! #     task_plugin: "virb-task-classification".into(), task_plugin_version: "0.1.0".into(),
//! #     split: "train".into(), image_size: 224, frames: 1, outputs: vec!["embedding".into()],
//! #     dataset_fingerprint: "example".into(),
//! # };
//! let cache = Cache::open(Cache::default_dir()?)?;
//! match cache.load(&key)? {
//!     LoadOutcome::Loaded(arrays) => { /* use them */ }
//!     outcome => {
//!         if let LoadOutcome::Invalid { path, reason } = outcome {
//!             eprintln!("feature cache: {} is corrupt ({reason}); re-encoding", path.display());
//!         }
//!         let features: Vec<u8> = vec![0; 10 * 768 * 2]; // 10 encoded samples, float16
//!         cache.store(&key, &[ArrayRef {
//!             name: "features",
//!             dtype: DType::F16,
//!             shape: &[10, 768],
//!             bytes: &features,
//!         }])?;
//!     }
//! }
//! println!("feature cache: {} in {}", cache.usage()?, cache.dir().display());
//! # Ok(())
//! # }
//! ```
//!
//! # Keys and files
//!
//! A [`CacheKey`] holds everything that determines the features (encoder plugin, encoder,
//! options, weights hash, task, split, preprocessing, a data set fingerprint) and, implicitly,
//! [`FORMAT_VERSION`]. Its [`digest`](CacheKey::digest) is the hex SHA-256 of its
//! [canonical JSON](CacheKey::canonical_json) (compact, object keys sorted), and its file is
//! `<cache dir>/<digest>.vfc` (no sharding). The folder also holds a `CACHEDIR.TAG` so that
//! backup tools skip it, and, while stores are running or after they crashed, temporary files
//! `.tmp-<pid>-<n>-<digest>`.
//!
//! # File format (`.vfc`)
//!
//! ```text
//! offset 0        8 bytes   magic "VIRBFC01"
//! offset 8        u64 LE    H = header length in bytes
//! offset 16       H bytes   header: UTF-8 JSON, padded with spaces so that 16 + H is a
//!                           multiple of 64
//! offset 16 + H   P bytes   payload: the arrays in header order, each starting at a multiple
//!                           of 64 bytes from the payload's start, zero bytes in between;
//!                           elements are raw little-endian, row-major
//! file length = 16 + H + P exactly
//! ```
//!
//! The header is one JSON object (unknown members are rejected):
//!
//! ```text
//! {
//!   "key": { ...CacheKey::canonical_json(), including "format_version"... },
//!   "arrays": [ { "name": "features", "dtype": "f16", "shape": [10, 768],
//!                 "offset": 0, "length": 15360 }, ... ],
//!   "arrays_sha256": "<hex SHA-256 of the compact JSON of the arrays member>",
//!   "payload_length": P,
//!   "payload_sha256": "<hex SHA-256 of the P payload bytes, padding included>"
//! }
//! ```
//!
//! `dtype` is one of `f16`, `f32`, `i64`, `u8` ([`DType`]); `offset` is relative to the
//! payload's start and `length` is `product(shape) * dtype size`.
//!
//! # Guarantees
//!
//! * **Atomic stores.** A store writes a fresh temporary file in the cache folder, fsyncs it
//!   and renames it over `<digest>.vfc` (then fsyncs the folder, best effort). A crash, even
//!   SIGKILL, leaves no `.vfc` file or a complete one; concurrent stores of one key each rename
//!   a complete file, the last one wins. Leftover temporary files are ignored by
//!   [`Cache::load`] and [`Cache::usage`] and removed by [`Cache::clean_stale_temps`].
//! * **Verified loads.** [`Cache::load`] checks the magic, that the header parses, that its key
//!   equals the requested key exactly (digest collisions, stale formats), the file length, the
//!   array table's checksum, that every array's offset and length are aligned, in range,
//!   non-overlapping and match its shape and dtype, and the payload's SHA-256. A file failing
//!   any check is removed and reported as [`LoadOutcome::Invalid`] with the reason.
//! * **Cost.** A load reads the file sequentially in 4 MiB pieces straight into the returned
//!   arrays, hashing each piece while it is in cache; a store hashes the arrays, then writes
//!   them. Memory: the arrays once, plus the header.

mod cache;
pub mod chunked;
mod error;
mod format;
mod key;

pub use cache::{human_bytes, Cache, ChunkedOutcome, LoadOutcome, StoreInfo, Usage};
pub use chunked::{ArraySpec, ChunkedFile, ChunkedWriter};
pub use error::CacheError;
pub use format::{Array, ArrayRef, DType, ALIGN, MAGIC};
pub use key::CacheKey;

/// Version of the cache file format and of the key's canonical form; part of every key, so
/// that changing it makes every existing file a miss. Bump it when the meaning of stored
/// features changes without any key field changing.
pub const FORMAT_VERSION: u32 = 1;
