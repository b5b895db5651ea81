//! The `.vfp` format: features too large to hold in memory (a pixel-wise task's pyramid is
//! ~4.6 MB per 224-px image), written sample by sample while they are encoded and read back
//! through a memory map, verified chunk by chunk so that nothing is ever read whole into RAM.
//!
//! ```text
//! offset 0        8 bytes   magic "VIRBFP01"
//! offset 8        u64 LE    H = header length
//! offset 16       H bytes   header: UTF-8 JSON, padded with spaces so that 16 + H is a
//!                           multiple of 4096
//! then            arrays    array i at header.arrays[i].offset (a multiple of 4096):
//!                           `samples` rows of `row_bytes` bytes, row-major, little-endian
//! offset T        trailer   for every array, for every chunk of `chunk_samples` rows (the last
//!                           may be shorter): the 32-byte SHA-256 of that chunk's bytes
//! last 16 bytes             u64 LE T, then the magic "VIRBFPEN"
//! ```
//!
//! The header is `{"key": <canonical key>, "samples": N, "chunk_samples": C, "arrays": [{"name",
//! "dtype", "sample_shape", "offset", "row_bytes"}]}`. A file is written to a temporary name,
//! fsynced and renamed into place ([`ChunkedWriter::finish`]), so a crash leaves no file or a
//! complete one. [`ChunkedFile::open`] checks the magic, the header, the exact key and the layout,
//! then hashes every chunk from the map, releasing each chunk's pages once hashed: verifying an
//! 8 GB file reads it once and keeps a few MB resident.
use crate::{key::hex, CacheError, DType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::{
    fs::File,
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

/// The first 8 bytes of a `.vfp` file.
pub const CHUNKED_MAGIC: &[u8; 8] = b"VIRBFP01";
const END_MAGIC: &[u8; 8] = b"VIRBFPEN";
const PAGE: u64 = 4096;
/// Rows per verified chunk are chosen so that a chunk holds about this many bytes.
const CHUNK_BYTES: u64 = 8 << 20;

/// One array of a chunked file: its name, element type and per-sample shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    /// Name (`block4`, `__targets__`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape of one sample (without the sample dimension).
    pub sample_shape: Vec<i64>,
}

impl ArraySpec {
    /// Bytes of one sample.
    pub fn row_bytes(&self) -> u64 {
        self.sample_shape
            .iter()
            .map(|&d| d.max(0) as u64)
            .product::<u64>()
            * self.dtype.size() as u64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    dtype: DType,
    sample_shape: Vec<i64>,
    offset: u64,
    row_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    key: Value,
    samples: u64,
    chunk_samples: u64,
    arrays: Vec<Entry>,
}

struct Layout {
    header: Vec<u8>,
    entries: Vec<Entry>,
    chunk_samples: u64,
    trailer_offset: u64,
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

fn layout(key: &Value, arrays: &[ArraySpec], samples: u64) -> Layout {
    let widest = arrays
        .iter()
        .map(ArraySpec::row_bytes)
        .max()
        .unwrap_or(1)
        .max(1);
    let chunk_samples = (CHUNK_BYTES / widest).max(1);
    // The header's length depends on the offsets, which depend on the header's length: lay out
    // with a generous guess, then grow the guess until the header fits.
    let mut header_room = PAGE;
    loop {
        let mut offset = round_up(16 + header_room, PAGE);
        let mut entries = Vec::with_capacity(arrays.len());
        for a in arrays {
            entries.push(Entry {
                name: a.name.clone(),
                dtype: a.dtype,
                sample_shape: a.sample_shape.clone(),
                offset,
                row_bytes: a.row_bytes(),
            });
            offset = round_up(offset + a.row_bytes() * samples, PAGE);
        }
        let header = Header {
            key: key.clone(),
            samples,
            chunk_samples,
            arrays: entries.clone(),
        };
        let mut text = serde_json::to_vec(&header).unwrap_or_default();
        if 16 + text.len() as u64 <= round_up(16 + header_room, PAGE) {
            let first = round_up(16 + header_room, PAGE);
            text.resize((first - 16) as usize, b' ');
            return Layout {
                header: text,
                entries,
                chunk_samples,
                trailer_offset: offset,
            };
        }
        header_room *= 2;
    }
}

fn chunks(samples: u64, chunk_samples: u64) -> u64 {
    samples.div_ceil(chunk_samples.max(1))
}

/// Writes a chunked file sample by sample (see the module docs). Dropping it before
/// [`ChunkedWriter::finish`] removes the temporary file.
pub struct ChunkedWriter {
    file: File,
    temp: crate::cache::TempFile,
    path: PathBuf,
    dir: PathBuf,
    layout: Layout,
    samples: u64,
    written: u64,
    hashers: Vec<Sha256>,
    hashes: Vec<Vec<[u8; 32]>>,
}

impl ChunkedWriter {
    pub(crate) fn create(
        dir: &Path,
        path: PathBuf,
        digest: &str,
        key: &Value,
        arrays: &[ArraySpec],
        samples: u64,
    ) -> Result<ChunkedWriter, CacheError> {
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Write { path, source }
        };
        let layout = layout(key, arrays, samples);
        let (file, temp) = crate::cache::create_temp(dir, digest).map_err(werr(&path))?;
        let total = layout.trailer_offset
            + 32 * arrays.len() as u64 * chunks(samples, layout.chunk_samples)
            + 16;
        let mut prefix = Vec::with_capacity(16 + layout.header.len());
        prefix.extend_from_slice(CHUNKED_MAGIC);
        prefix.extend_from_slice(&(layout.header.len() as u64).to_le_bytes());
        prefix.extend_from_slice(&layout.header);
        file.set_len(total)
            .and_then(|()| file.write_all_at(&prefix, 0))
            .map_err(werr(&temp.path))?;
        Ok(ChunkedWriter {
            file,
            temp,
            path,
            dir: dir.to_path_buf(),
            hashers: arrays.iter().map(|_| Sha256::new()).collect(),
            hashes: arrays.iter().map(|_| Vec::new()).collect(),
            layout,
            samples,
            written: 0,
        })
    }

    /// Appends `rows` samples: `data[i]` holds `rows` rows of array `i`, in the order the
    /// arrays were given.
    pub fn append(&mut self, rows: u64, data: &[&[u8]]) -> Result<(), CacheError> {
        let bad = |reason: String| CacheError::InvalidArray {
            name: "(chunked file)".into(),
            reason,
        };
        if data.len() != self.layout.entries.len() {
            return Err(bad(format!(
                "{} arrays given, the file has {}",
                data.len(),
                self.layout.entries.len()
            )));
        }
        if self.written + rows > self.samples {
            return Err(bad(format!(
                "{} samples written to a file of {}",
                self.written + rows,
                self.samples
            )));
        }
        let chunk = self.layout.chunk_samples;
        for (i, (entry, bytes)) in self.layout.entries.iter().zip(data).enumerate() {
            if bytes.len() as u64 != rows * entry.row_bytes {
                return Err(bad(format!(
                    "`{}`: {} bytes for {rows} samples of {} bytes",
                    entry.name,
                    bytes.len(),
                    entry.row_bytes
                )));
            }
            let at = entry.offset + self.written * entry.row_bytes;
            self.file
                .write_all_at(bytes, at)
                .map_err(|source| CacheError::Write {
                    path: self.temp.path.clone(),
                    source,
                })?;
            // Hash row by row, closing a chunk at each boundary.
            let mut row = self.written;
            let mut rest: &[u8] = bytes;
            while !rest.is_empty() {
                let in_chunk = chunk - row % chunk;
                let take = in_chunk.min(rows - (row - self.written));
                let (now, later) = rest.split_at((take * entry.row_bytes) as usize);
                self.hashers[i].update(now);
                row += take;
                rest = later;
                if row.is_multiple_of(chunk) || row == self.samples {
                    let done = std::mem::take(&mut self.hashers[i]).finalize();
                    self.hashes[i].push(done.into());
                }
            }
        }
        self.written += rows;
        Ok(())
    }

    /// Samples written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the chunk table, fsyncs and renames the file into place. Fails unless every
    /// sample was written.
    pub fn finish(mut self) -> Result<PathBuf, CacheError> {
        if self.written != self.samples {
            return Err(CacheError::InvalidArray {
                name: "(chunked file)".into(),
                reason: format!("{} of {} samples written", self.written, self.samples),
            });
        }
        let mut trailer = Vec::new();
        for hashes in &self.hashes {
            for h in hashes {
                trailer.extend_from_slice(h);
            }
        }
        trailer.extend_from_slice(&self.layout.trailer_offset.to_le_bytes());
        trailer.extend_from_slice(END_MAGIC);
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Write { path, source }
        };
        self.file
            .write_all_at(&trailer, self.layout.trailer_offset)
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_all())
            .map_err(werr(&self.temp.path))?;
        std::fs::rename(&self.temp.path, &self.path).map_err(werr(&self.path))?;
        self.temp.armed = false;
        crate::cache::sync_dir(&self.dir);
        Ok(self.path.clone())
    }
}

/// A verified chunked file, memory-mapped.
pub struct ChunkedFile {
    map: memmap2::Mmap,
    /// The same file, for positioned reads of rows (see [`ChunkedFile::read_rows`]).
    file: File,
    entries: Vec<Entry>,
    samples: u64,
    path: PathBuf,
}

/// Why a chunked file was refused.
pub(crate) enum Refused {
    Io(io::Error),
    Invalid(String),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        Refused::Io(e)
    }
}

fn invalid<T>(reason: impl Into<String>) -> Result<T, Refused> {
    Err(Refused::Invalid(reason.into()))
}

impl ChunkedFile {
    /// Maps and verifies `path` for `key`.
    pub(crate) fn open(path: &Path, key: &Value) -> Result<ChunkedFile, Refused> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < 32 {
            return invalid(format!("{len} bytes is shorter than any feature file"));
        }
        // SAFETY: cache files are only ever created under a temporary name and renamed into
        // place complete; nothing writes to a published file (a store replaces it by rename).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        if &map[..8] != CHUNKED_MAGIC {
            return invalid("it does not start with the VIRBFP01 magic");
        }
        if &map[map.len() - 8..] != END_MAGIC {
            return invalid("it does not end with the VIRBFPEN magic (cut short?)");
        }
        let header_len = u64::from_le_bytes(map[8..16].try_into().unwrap_or_default());
        if 16 + header_len > len {
            return invalid(format!("its header length {header_len} runs past the end"));
        }
        let header: Header = match serde_json::from_slice(&map[16..(16 + header_len) as usize]) {
            Ok(h) => h,
            Err(e) => return invalid(format!("its header is not valid: {e}")),
        };
        if header.key != *key {
            return invalid("its key differs from the requested one");
        }
        let trailer_at = u64::from_le_bytes(
            map[map.len() - 16..map.len() - 8]
                .try_into()
                .unwrap_or_default(),
        );
        let n_chunks = chunks(header.samples, header.chunk_samples);
        let expected_len = trailer_at + 32 * header.arrays.len() as u64 * n_chunks + 16;
        if expected_len != len || header.chunk_samples == 0 {
            return invalid(format!("it is {len} bytes, its layout says {expected_len}"));
        }
        let mut end = 16 + header_len;
        for e in &header.arrays {
            let spec = ArraySpec {
                name: e.name.clone(),
                dtype: e.dtype,
                sample_shape: e.sample_shape.clone(),
            };
            if e.row_bytes != spec.row_bytes()
                || e.offset < end
                || !e.offset.is_multiple_of(PAGE)
                || e.offset + e.row_bytes * header.samples > trailer_at
            {
                return invalid(format!("array `{}` is out of place", e.name));
            }
            end = e.offset + e.row_bytes * header.samples;
        }
        let file = ChunkedFile {
            map,
            file,
            entries: header.arrays,
            samples: header.samples,
            path: path.to_path_buf(),
        };
        file.verify(header.chunk_samples, trailer_at)?;
        Ok(file)
    }

    fn verify(&self, chunk_samples: u64, trailer_at: u64) -> Result<(), Refused> {
        let n_chunks = chunks(self.samples, chunk_samples);
        for (i, e) in self.entries.iter().enumerate() {
            for c in 0..n_chunks {
                let first = c * chunk_samples;
                let rows = chunk_samples.min(self.samples - first);
                let start = (e.offset + first * e.row_bytes) as usize;
                let stop = start + (rows * e.row_bytes) as usize;
                let digest: [u8; 32] = Sha256::digest(&self.map[start..stop]).into();
                let at = (trailer_at + 32 * (i as u64 * n_chunks + c)) as usize;
                if self.map[at..at + 32] != digest {
                    return invalid(format!(
                        "array `{}`, samples {first}..{}: checksum mismatch (expected {}, found {})",
                        e.name,
                        first + rows,
                        hex(&self.map[at..at + 32]),
                        hex(&digest)
                    ));
                }
                self.release(start, stop);
            }
        }
        Ok(())
    }

    /// Drops the pages of `start..stop` from this process (they stay in the page cache): what
    /// keeps the resident set small while an 8 GB file is read.
    fn release(&self, start: usize, stop: usize) {
        let page = PAGE as usize;
        let start = start / page * page;
        let len = stop.saturating_sub(start);
        if len == 0 {
            return;
        }
        // SAFETY: the map is read-only and file-backed; dropping its pages only makes the next
        // read fault them back in from the file.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
        };
    }

    /// Number of samples.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The arrays, in file order.
    pub fn arrays(&self) -> Vec<ArraySpec> {
        self.entries
            .iter()
            .map(|e| ArraySpec {
                name: e.name.clone(),
                dtype: e.dtype,
                sample_shape: e.sample_shape.clone(),
            })
            .collect()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the rows `indices` of array `array` into `out` (`indices.len() * row_bytes`
    /// bytes) with positioned reads, not through the map: a page faulted in through a map
    /// brings its neighbours along (the kernel's fault-around, 64 KiB), so scattered small rows
    /// (a 4 KiB embedding) read through it left most of an 8 GB file resident however each
    /// row's own pages were released. Read this way the pages stay in the page cache only.
    pub fn read_rows(&self, array: usize, indices: &[u64], out: &mut [u8]) -> Result<(), String> {
        let e = self
            .entries
            .get(array)
            .ok_or_else(|| format!("no array {array}"))?;
        let row = e.row_bytes as usize;
        if out.len() != indices.len() * row {
            return Err(format!(
                "{} bytes for {} rows of {row}",
                out.len(),
                indices.len()
            ));
        }
        for (k, &i) in indices.iter().enumerate() {
            if i >= self.samples {
                return Err(format!("sample {i} of {}", self.samples));
            }
            let start = e.offset + i * e.row_bytes;
            self.file
                .read_exact_at(&mut out[k * row..(k + 1) * row], start)
                .map_err(|err| format!("cannot read sample {i}: {err}"))?;
        }
        Ok(())
    }
}
