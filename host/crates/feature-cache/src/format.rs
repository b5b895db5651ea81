//! The `.vfc` file format: arrays, layout, writing and verified reading.

use std::{
    collections::HashSet,
    fmt,
    io::{self, Read, Write},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{key::hex, CacheError};

/// The first 8 bytes of every cache file.
pub const MAGIC: &[u8; 8] = b"VIRBFC01";

/// Alignment in bytes of the payload's start in the file and of every array inside it.
pub const ALIGN: u64 = 64;

/// Magic plus the u64 header length.
const PREFIX_LEN: u64 = 16;

/// Largest header a reader accepts; far above any real one, it only stops a corrupt length
/// from allocating gigabytes.
const MAX_HEADER_LEN: u64 = 64 << 20;

/// Size of the pieces the reader reads and hashes in turn, so that hashing reads from cache.
const CHUNK: usize = 4 << 20;

/// Element type of a cached array. Elements are stored as little-endian raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE 754 half precision (2 bytes).
    F16,
    /// IEEE 754 single precision (4 bytes).
    F32,
    /// Signed 64-bit integer (8 bytes).
    I64,
    /// Unsigned byte.
    U8,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }

    /// The name used in file headers: `f16`, `f32`, `i64` or `u8`.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A borrowed array to [`Cache::store`](crate::Cache::store): `bytes` holds
/// `product(shape) * dtype.size()` little-endian element bytes in row-major order.
#[derive(Clone, Copy)]
pub struct ArrayRef<'a> {
    /// Name, unique within one cache file, e.g. `features` or `labels`.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, each `>= 0`; empty for a scalar.
    pub shape: &'a [i64],
    /// Raw little-endian element bytes.
    pub bytes: &'a [u8],
}

impl fmt::Debug for ArrayRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayRef")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &format_args!("[{} bytes]", self.bytes.len()))
            .finish()
    }
}

/// An array read back by [`Cache::load`](crate::Cache::load); same conventions as [`ArrayRef`].
#[derive(Clone, PartialEq, Eq)]
pub struct Array {
    /// Name as stored.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Raw little-endian element bytes, `product(shape) * dtype.size()` of them.
    pub bytes: Vec<u8>,
}

impl Array {
    /// Borrows the array as an [`ArrayRef`], e.g. to store it again.
    pub fn as_array_ref(&self) -> ArrayRef<'_> {
        ArrayRef {
            name: &self.name,
            dtype: self.dtype,
            shape: &self.shape,
            bytes: &self.bytes,
        }
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &format_args!("[{} bytes]", self.bytes.len()))
            .finish()
    }
}

/// The JSON header of a cache file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    /// [`CacheKey::canonical_json`](crate::CacheKey::canonical_json) of the key.
    key: Value,
    /// The arrays, in payload order.
    arrays: Vec<Entry>,
    /// Hex SHA-256 of the compact JSON of `arrays`: protects names, shapes and offsets, which
    /// the payload hash does not cover.
    arrays_sha256: String,
    /// Bytes after the header.
    payload_length: u64,
    /// Hex SHA-256 of the payload (including the zero padding between arrays).
    payload_sha256: String,
}

/// One array in the header.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<i64>,
    /// Byte offset from the start of the payload; a multiple of [`ALIGN`].
    offset: u64,
    /// Byte length: `product(shape) * dtype size`.
    length: u64,
}

/// A file that is readable but not a valid cache file for the requested key.
pub(crate) enum ReadFailure {
    /// Corrupt, truncated, foreign or stale; the reason says which.
    Invalid(String),
    /// The file system failed (not a property of the file's content).
    Io(io::Error),
}

impl From<io::Error> for ReadFailure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadFailure::Invalid("the file ends before the payload does".to_string())
        } else {
            ReadFailure::Io(e)
        }
    }
}

fn invalid<T>(reason: impl Into<String>) -> Result<T, ReadFailure> {
    Err(ReadFailure::Invalid(reason.into()))
}

const fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// `product(shape) * size`, or why not.
fn byte_length(shape: &[i64], dtype: DType) -> Result<u64, String> {
    let mut n: u64 = 1;
    for &d in shape {
        let d =
            u64::try_from(d).map_err(|_| format!("negative dimension {d} in shape {shape:?}"))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    }
    n.checked_mul(dtype.size() as u64)
        .ok_or_else(|| format!("shape {shape:?} overflows"))
}

/// A cache file's content, ready to be written: the prefix and header, then the arrays.
pub(crate) struct Encoded<'a> {
    head: Vec<u8>,
    arrays: Vec<(u64, &'a [u8])>,
    total_len: u64,
    payload_sha256: String,
}

impl Encoded<'_> {
    /// Length of the whole file in bytes.
    pub(crate) fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Hex SHA-256 of the payload.
    pub(crate) fn payload_sha256(&self) -> &str {
        &self.payload_sha256
    }

    /// Writes the whole file to `out`.
    pub(crate) fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.head)?;
        let mut pos = 0u64;
        for &(offset, bytes) in &self.arrays {
            write_zeros(out, offset - pos)?;
            out.write_all(bytes)?;
            pos = offset + bytes.len() as u64;
        }
        Ok(())
    }
}

/// Padding source; padding is always shorter than [`ALIGN`].
const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];

fn write_zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let k = n.min(ALIGN);
        out.write_all(&ZEROS[..k as usize])?;
        n -= k;
    }
    Ok(())
}

/// Validates `arrays`, lays them out and hashes the payload.
pub(crate) fn encode<'a>(key: &Value, arrays: &[ArrayRef<'a>]) -> Result<Encoded<'a>, CacheError> {
    let bad = |name: &str, reason: String| CacheError::InvalidArray {
        name: name.to_string(),
        reason,
    };
    let mut names = HashSet::new();
    let mut entries = Vec::with_capacity(arrays.len());
    let mut placed = Vec::with_capacity(arrays.len());
    let mut hasher = Sha256::new();
    let mut pos = 0u64;
    for a in arrays {
        if a.name.is_empty() {
            return Err(bad(a.name, "the name is empty".to_string()));
        }
        if !names.insert(a.name) {
            return Err(bad(a.name, "another array has the same name".to_string()));
        }
        let length = byte_length(a.shape, a.dtype).map_err(|r| bad(a.name, r))?;
        if a.bytes.len() as u64 != length {
            return Err(bad(
                a.name,
                format!(
                    "it has {} bytes but shape {:?} of {} needs {length}",
                    a.bytes.len(),
                    a.shape,
                    a.dtype
                ),
            ));
        }
        let offset = align_up(pos);
        hasher.update(&ZEROS[..(offset - pos) as usize]);
        hasher.update(a.bytes);
        entries.push(Entry {
            name: a.name.to_string(),
            dtype: a.dtype,
            shape: a.shape.to_vec(),
            offset,
            length,
        });
        placed.push((offset, a.bytes));
        pos = offset + length;
    }
    let payload_sha256 = hex(&hasher.finalize());
    let arrays_json = serde_json::to_string(&entries).map_err(|e| bad("?", e.to_string()))?;
    let header = Header {
        key: key.clone(),
        arrays: entries,
        arrays_sha256: hex(&Sha256::digest(arrays_json.as_bytes())),
        payload_length: pos,
        payload_sha256: payload_sha256.clone(),
    };
    let json = serde_json::to_vec(&header).map_err(|e| bad("?", e.to_string()))?;
    // Pad the header with spaces (valid trailing JSON whitespace) so the payload starts aligned.
    let payload_start = align_up(PREFIX_LEN + json.len() as u64);
    let header_len = payload_start - PREFIX_LEN;
    let mut head = Vec::with_capacity(payload_start as usize);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&header_len.to_le_bytes());
    head.extend_from_slice(&json);
    head.resize(payload_start as usize, b' ');
    Ok(Encoded {
        head,
        arrays: placed,
        total_len: payload_start + pos,
        payload_sha256,
    })
}

/// Reads and verifies a whole cache file of `file_len` bytes whose header must hold
/// `expected_key`.
pub(crate) fn read_verified(
    file: &mut impl Read,
    file_len: u64,
    expected_key: &Value,
) -> Result<Vec<Array>, ReadFailure> {
    if file_len < PREFIX_LEN {
        return invalid(format!(
            "it is {file_len} bytes long, shorter than the {PREFIX_LEN}-byte prefix"
        ));
    }
    let mut prefix = [0u8; PREFIX_LEN as usize];
    file.read_exact(&mut prefix)?;
    if &prefix[..8] != MAGIC {
        return invalid(format!(
            "wrong magic {:?} instead of {:?}: not a virb feature cache file of this version",
            String::from_utf8_lossy(&prefix[..8]),
            String::from_utf8_lossy(MAGIC),
        ));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&prefix[8..]);
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > file_len - PREFIX_LEN || header_len > MAX_HEADER_LEN {
        return invalid(format!(
            "header length {header_len} does not fit in a {file_len}-byte file"
        ));
    }
    let mut header_bytes = vec![0u8; header_len as usize];
    file.read_exact(&mut header_bytes)?;
    let header: Header = match serde_json::from_slice(&header_bytes) {
        Ok(h) => h,
        Err(e) => return invalid(format!("the header is not valid: {e}")),
    };
    if header.key != *expected_key {
        return invalid("its header holds a different key (a stale or foreign file)");
    }
    let expected_len = PREFIX_LEN
        .checked_add(header_len)
        .and_then(|n| n.checked_add(header.payload_length));
    if expected_len != Some(file_len) {
        return invalid(format!(
            "it is {file_len} bytes long but its header describes {} bytes (truncated?)",
            expected_len.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
        ));
    }
    match serde_json::to_string(&header.arrays) {
        Ok(json) if hex(&Sha256::digest(json.as_bytes())) == header.arrays_sha256 => {}
        _ => return invalid("the array table does not match its checksum"),
    }
    let mut names = HashSet::new();
    let mut end = 0u64;
    for e in &header.arrays {
        if !names.insert(e.name.as_str()) {
            return invalid(format!("array `{}` appears twice", e.name));
        }
        match byte_length(&e.shape, e.dtype) {
            Ok(n) if n == e.length => {}
            Ok(n) => {
                return invalid(format!(
                    "array `{}` has length {} but shape {:?} of {} needs {n}",
                    e.name, e.length, e.shape, e.dtype
                ))
            }
            Err(r) => return invalid(format!("array `{}`: {r}", e.name)),
        }
        let fits = e
            .offset
            .checked_add(e.length)
            .is_some_and(|stop| stop <= header.payload_length);
        if e.offset < end || e.offset % ALIGN != 0 || !fits {
            return invalid(format!(
                "array `{}` at offset {} (length {}) overlaps, is misaligned or lies outside \
                 the {}-byte payload",
                e.name, e.offset, e.length, header.payload_length
            ));
        }
        end = e.offset + e.length;
    }

    let mut hasher = Sha256::new();
    let mut pos = 0u64;
    let mut arrays = Vec::with_capacity(header.arrays.len());
    for e in header.arrays {
        skip_hashing(file, e.offset - pos, &mut hasher)?;
        let Ok(length) = usize::try_from(e.length) else {
            return invalid(format!("array `{}` does not fit in memory", e.name));
        };
        let mut bytes = vec![0u8; length];
        for chunk in bytes.chunks_mut(CHUNK) {
            file.read_exact(chunk)?;
            hasher.update(&*chunk);
        }
        pos = e.offset + e.length;
        arrays.push(Array {
            name: e.name,
            dtype: e.dtype,
            shape: e.shape,
            bytes,
        });
    }
    skip_hashing(file, header.payload_length - pos, &mut hasher)?;
    let mut extra = [0u8; 1];
    if file.read(&mut extra)? != 0 {
        return invalid("it is longer than its header describes");
    }
    if hex(&hasher.finalize()) != header.payload_sha256 {
        return invalid("the payload does not match its SHA-256 (corrupt data)");
    }
    Ok(arrays)
}

/// Reads and hashes `n` bytes that belong to no array.
fn skip_hashing(file: &mut impl Read, mut n: u64, hasher: &mut Sha256) -> Result<(), ReadFailure> {
    let mut buf = [0u8; 4096];
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..k])?;
        hasher.update(&buf[..k]);
        n -= k as u64;
    }
    Ok(())
}
