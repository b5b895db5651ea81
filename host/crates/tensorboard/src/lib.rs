//! Writes TensorBoard event files holding scalar summaries, without TensorFlow and without any
//! dependency beyond `std`, so that `tensorboard --logdir <dir>` shows virb's training curves.
//!
//! An event file is a sequence of TFRecords, each holding one serialized `tensorflow.Event`
//! protobuf. The first record carries `file_version: "brain.Event:2"`, every later one a
//! `Summary` with a single `simple_value` scalar:
//!
//! ```text
//! record  = u64 LE length | u32 LE masked_crc32c(length bytes) | data | u32 LE masked_crc32c(data)
//! Event   { double wall_time = 1; int64 step = 2; oneof { string file_version = 3; Summary summary = 5; } }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mut writer = virb_tensorboard::EventWriter::create(std::path::Path::new("out/run"))?;
//! writer.add_scalar("train/loss", 1, 0.25)?;
//! writer.flush()?;
//! # Ok(())
//! # }
//! ```

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// The `file_version` TensorBoard expects in the first event of a file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`) lookup table, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The CRC-32C (Castagnoli) checksum of `data`, as TFRecord uses it
/// (`crc32c(b"123456789") == 0xE3069283`).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The masked CRC-32C TFRecord stores: `((crc >> 15) | (crc << 17)) + 0xa282ead8`, wrapping.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends `data` to `out` framed as one TFRecord.
fn frame_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Protobuf wire types used here.
const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// What an `Event` carries besides its time and step.
enum Payload<'a> {
    FileVersion(&'a str),
    Scalar { tag: &'a str, value: f32 },
}

/// Serializes a `tensorflow.Event`.
fn encode_event(wall_time: f64, step: i64, payload: &Payload<'_>) -> Vec<u8> {
    let mut event = Vec::with_capacity(32);
    put_key(&mut event, 1, WIRE_FIXED64);
    event.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        put_key(&mut event, 2, WIRE_VARINT);
        // int64 is encoded as the two's complement u64 (negative steps take 10 bytes).
        put_varint(&mut event, step as u64);
    }
    match payload {
        Payload::FileVersion(version) => put_bytes(&mut event, 3, version.as_bytes()),
        Payload::Scalar { tag, value } => {
            let mut v = Vec::with_capacity(tag.len() + 8);
            put_bytes(&mut v, 1, tag.as_bytes());
            // Always written, even for 0.0: `simple_value` is a oneof member, so its presence
            // is what makes TensorBoard treat the value as a scalar.
            put_key(&mut v, 2, WIRE_FIXED32);
            v.extend_from_slice(&value.to_le_bytes());
            let mut summary = Vec::with_capacity(v.len() + 4);
            put_bytes(&mut summary, 1, &v);
            put_bytes(&mut event, 5, &summary);
        }
    }
    event
}

/// Seconds since the Unix epoch now (negative if the clock is set before 1970).
fn now_seconds() -> f64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The host name for the file name: `/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// `localhost`; characters other than ASCII letters, digits, `-`, `_` and `.` become `_`.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    sanitize_hostname(&raw)
}

fn sanitize_hostname(raw: &str) -> String {
    let clean: String = raw
        .trim()
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        "localhost".to_owned()
    } else {
        clean
    }
}

/// Distinguishes the files one process creates within the same second.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes one TensorBoard event file of scalar summaries.
///
/// Writes are buffered; [`EventWriter::flush`] makes them durable and dropping the writer
/// flushes the buffer (best effort, errors ignored: call `flush` to see them). No input makes it
/// panic: non-finite values are written as they are (TensorBoard shows NaN and infinities).
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// Reused serialization buffer.
    record: Vec<u8>,
}

impl EventWriter {
    /// Creates `dir` (and its parents) if needed and a new event file in it named
    /// `events.out.tfevents.<unix seconds>.<hostname>.<pid>.<counter>`, whose first record is
    /// the `brain.Event:2` file version (written through to the file before this returns).
    ///
    /// Never overwrites an existing file: the counter is bumped until the name is free.
    pub fn create(dir: &Path) -> io::Result<EventWriter> {
        fs::create_dir_all(dir)?;
        let wall_time = now_seconds();
        let seconds = wall_time.max(0.0) as u64;
        let host = hostname();
        let pid = std::process::id();
        let mut attempts = 0u32;
        let (path, file) = loop {
            let counter = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "events.out.tfevents.{seconds}.{host}.{pid}.{counter}"
            ));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 1000 => {
                    attempts += 1;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", path.display()),
                    ))
                }
            }
        };
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
            record: Vec::new(),
        };
        writer.write_event(wall_time, 0, &Payload::FileVersion(FILE_VERSION))?;
        writer.out.flush()?;
        Ok(writer)
    }

    /// Appends the scalar `value` (stored as `f32`, as TensorBoard does: values beyond `f32`'s
    /// range become infinities) for `tag` at `step`, stamped with the current time.
    pub fn add_scalar(&mut self, tag: &str, step: i64, value: f64) -> io::Result<()> {
        self.add_scalar_at(tag, step, value, now_seconds())
    }

    /// Like [`EventWriter::add_scalar`] with an explicit wall time in seconds since the Unix
    /// epoch (TensorBoard's "relative" and "wall" axes use it).
    pub fn add_scalar_at(
        &mut self,
        tag: &str,
        step: i64,
        value: f64,
        wall_time: f64,
    ) -> io::Result<()> {
        self.write_event(
            wall_time,
            step,
            &Payload::Scalar {
                tag,
                value: value as f32,
            },
        )
    }

    /// Writes the buffered records to the file (TensorBoard sees them from then on).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the buffered records and syncs the file's data to the disk (slow: once at the end
    /// of a run, not after every epoch).
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, wall_time: f64, step: i64, payload: &Payload<'_>) -> io::Result<()> {
        let event = encode_event(wall_time, step, payload);
        self.record.clear();
        frame_record(&mut self.record, &event);
        self.out.write_all(&self.record)
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
