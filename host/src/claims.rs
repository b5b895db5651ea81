//! Claims with leases, so that several worker processes (one per GPU, or Slurm array tasks on
//! many machines over NFS) can share one `--out` folder: each unit of work is claimed by exactly
//! one worker at a time, and a worker that dies does not block its unit for ever.
//!
//! Design:
//! - A claim is a small JSON file (worker id, host, node, pid, what, acquired time, and a random
//!   token that names this one claim). It is created complete in a unique temporary file and
//!   then hard-linked to its name: `link` fails when the name exists, on local file systems and
//!   on NFS alike, so exactly one of several racing workers wins and nobody ever reads a partly
//!   written claim. (NFS may answer a retransmitted, successful `LINK` with EEXIST: the link
//!   count of the temporary file tells.) Where hard links are not supported the claim falls
//!   back to `create_new`; a reader that sees the file half written then treats it as below.
//! - The heartbeat is the file's mtime: a thread per claim bumps it every `heartbeat` (after
//!   checking the file still holds our token, on the same open file) and never rewrites the
//!   content, so a crash cannot leave a torn claim behind. Files are read by opening them and
//!   taking the metadata of the open file, which makes NFS revalidate its cached attributes.
//!   Clocks across machines are assumed NTP-synced: the default lease (120 s) is far above
//!   normal skew, and every mtime is set explicitly from the writer's clock.
//! - A holder is stale when its heartbeat is older than the lease, or at once when it ran on
//!   this node (same hostname, boot id and pid namespace, so that containers sharing a hostname
//!   are never confused) and its pid is gone. A live pid that is not virb counts as alive.
//! - Takeover of a stale claim is serialized by a lock file named after the stale claim's token
//!   (`.<name>.takeover-<token>-<level>`), made with `create_new`: only successors that saw the
//!   same stale claim compete for it, so a lock never needs to be removed for the next takeover.
//!   The winner re-reads the claim under the lock (same token, still stale), writes the new
//!   claim into a unique temporary file, checks once more, and renames it over the old one. A
//!   lock older than [`TAKEOVER_STALE`] was left by a successor that crashed mid-takeover; the
//!   next level of lock is then tried. Only a successor stalled for that long inside the
//!   takeover could race another; the loser's heartbeat then sees the foreign token and
//!   [`Claim::is_held`] turns false.
//! - An unreadable claim file (not JSON, or a token that is not hex) is held by nobody known:
//!   it counts as held while its mtime is within the lease (it may be a claim being written by
//!   the `create_new` fallback) and as stale after, like any other claim.

use serde::{Deserialize, Serialize};
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Age after which a takeover lock is presumed left by a successor that crashed mid-takeover
/// (the takeover itself takes milliseconds).
pub const TAKEOVER_STALE: Duration = Duration::from_secs(10);
/// Levels of takeover lock tried before a claim is reported as held.
const TAKEOVER_LEVELS: u32 = 4;
/// Rounds of [`try_claim`]'s read-and-decide loop; with [`BUSY_WAIT`], how long it waits for
/// another successor's takeover to finish before answering `Held`.
const ROUNDS: u32 = 40;
/// Pause between rounds while another successor takes a claim over.
const BUSY_WAIT: Duration = Duration::from_millis(5);
/// Shortest heartbeat period (a zero period would spin).
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// Lease settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// A claim whose heartbeat is older than this may be taken over by another worker.
    pub lease: Duration,
    /// How often a held claim's heartbeat is renewed (well below `lease`).
    pub heartbeat: Duration,
}

impl LeaseOptions {
    /// A lease with the heartbeat at a quarter of it.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            heartbeat: lease / 4,
        }
    }
}

impl Default for LeaseOptions {
    /// A 120 s lease, renewed every 30 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(120))
    }
}

/// The content of a claim file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Record {
    worker: String,
    host: String,
    node: String,
    pid: u32,
    what: String,
    acquired_unix: u64,
    token: String,
}

impl Record {
    fn new(what: &str) -> Self {
        Self {
            worker: worker_id().to_owned(),
            host: hostname().to_owned(),
            node: node_id().to_owned(),
            pid: std::process::id(),
            what: what.to_owned(),
            acquired_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            token: format!("{:016x}{:016x}", random_u64(), random_u64()),
        }
    }
}

/// Who holds a claim, as read from its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's [`worker_id`]; empty when the claim file is unreadable.
    pub worker: String,
    /// The holder's hostname.
    pub host: String,
    /// The holder's boot id and pid namespace; its pid is only checked when this matches ours.
    pub node: String,
    /// The holder's process id (0 when the file is unreadable).
    pub pid: u32,
    /// What the holder works on (free text, e.g. "exp/job"), or why the file is unreadable.
    pub what: String,
    /// When the claim was acquired (unix seconds; for display).
    pub acquired_unix: u64,
    /// Time since the last heartbeat (the file's mtime).
    pub age: Duration,
}

/// The outcome of [`try_claim`].
#[derive(Debug)]
pub enum Attempt {
    /// This worker now holds the claim.
    Acquired(Claim),
    /// Another live worker holds it.
    Held(Holder),
}

/// A claim file as found.
enum Seen {
    Missing,
    /// `id` names this claim instance: its token, or the inode and mtime of an unreadable file.
    Present {
        holder: Holder,
        id: String,
    },
}

/// This machine's hostname (`gethostname`, else `/proc/sys/kernel/hostname`).
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the pointer and length describe `buf`, which outlives the call.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
        if rc == 0 && !name.is_empty() {
            return name;
        }
        fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned())
    })
}

/// `<boot id>/<pid namespace>`, or empty where /proc does not tell: two processes on the same
/// node can see each other's pids.
fn node_id() -> &'static str {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| {
        let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id");
        let pidns = fs::read_link("/proc/self/ns/pid");
        match (boot, pidns) {
            (Ok(boot), Ok(ns)) => format!("{}/{}", boot.trim(), ns.display()),
            _ => String::new(),
        }
    })
}

/// This process's identity: `<hostname>:<pid>:<random 64-bit hex>`, made once.
pub fn worker_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        format!(
            "{}:{}:{:016x}",
            hostname(),
            std::process::id(),
            random_u64()
        )
    })
}

/// 64 unpredictable bits: SipHash keyed by the standard library's per-thread OS randomness, over
/// a process counter and the time.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// An I/O error that names the file and what was being done.
fn ctx(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// Time since a file's mtime (zero when the mtime is in the future or unknown).
fn age_of(meta: &fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

/// A unique temporary file beside `path` (`.{name}.tmp-{hostname}-{pid}-{random}`), created with
/// `create_new` (retrying on the unlikely collision), so an existing file is never truncated and
/// workers on different machines never share one. Returns the open file and its path. The
/// folder must exist.
pub fn unique_temp(path: &Path) -> io::Result<(File, PathBuf)> {
    unique_temp_with(path, random_u64)
}

/// [`unique_temp`] with the random suffixes drawn from `next`.
fn unique_temp_with(path: &Path, mut next: impl FnMut() -> u64) -> io::Result<(File, PathBuf)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} has no file name: cannot make a temporary file beside it",
                path.display()
            ),
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let host: String = hostname()
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' => c,
            _ => '_',
        })
        .collect();
    let name = name.to_string_lossy();
    let pid = std::process::id();
    for _ in 0..16 {
        let tmp = dir.join(format!(".{name}.tmp-{host}-{pid}-{:016x}", next()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ctx(e, "cannot create temporary file", &tmp)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free temporary file name beside {} after 16 tries; remove stale `.{name}.tmp-*` files",
            path.display()
        ),
    ))
}

/// Reads a claim file: opened first, so that NFS revalidates the attributes of the open file.
fn read_claim(path: &Path) -> io::Result<Seen> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Seen::Missing),
        Err(e) => return Err(ctx(e, "cannot open claim file", path)),
    };
    let meta = file
        .metadata()
        .map_err(|e| ctx(e, "cannot stat claim file", path))?;
    let age = age_of(&meta);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| ctx(e, "cannot read claim file", path))?;
    match parse(&bytes) {
        Ok(r) => Ok(Seen::Present {
            id: r.token,
            holder: Holder {
                worker: r.worker,
                host: r.host,
                node: r.node,
                pid: r.pid,
                what: r.what,
                acquired_unix: r.acquired_unix,
                age,
            },
        }),
        Err(reason) => Ok(Seen::Present {
            id: format!("i{}m{}n{}", meta.ino(), meta.mtime(), meta.mtime_nsec()),
            holder: Holder {
                worker: String::new(),
                host: String::new(),
                node: String::new(),
                pid: 0,
                what: format!("unreadable claim file ({reason})"),
                acquired_unix: 0,
                age,
            },
        }),
    }
}

/// A claim record, with a token fit for a file name.
fn parse(bytes: &[u8]) -> Result<Record, String> {
    let r: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let hex = r.token.bytes().all(|b| b.is_ascii_hexdigit());
    if r.token.is_empty() || r.token.len() > 64 || !hex {
        return Err(format!("token {:?} is not 1 to 64 hex digits", r.token));
    }
    Ok(r)
}

/// Reads the holder of a claim file without claiming (`None`: no claim file). An unreadable
/// file gives a holder with an empty `worker` and the reason in `what`.
pub fn holder(path: &Path) -> io::Result<Option<Holder>> {
    Ok(match read_claim(path)? {
        Seen::Missing => None,
        Seen::Present { holder, .. } => Some(holder),
    })
}

/// Whether a holder is stale under `opts`, as [`try_claim`] judges it: its heartbeat is older
/// than the lease, or it ran on this node and its process is gone.
pub fn is_stale(h: &Holder, opts: &LeaseOptions) -> bool {
    let this_node = !h.node.is_empty() && h.host == hostname() && h.node == node_id();
    h.age > opts.lease || (this_node && !pid_alive(h))
}

/// Whether a holder on this node is alive. Our own pid is alive only under our own worker id
/// (another id means an earlier process whose pid we reuse); `kill(pid, 0)` answers for others.
fn pid_alive(h: &Holder) -> bool {
    if h.pid == std::process::id() {
        return h.worker == worker_id();
    }
    let Ok(pid) = libc::pid_t::try_from(h.pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; the call only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

mod take;
#[cfg(test)]
mod tests;

pub use take::{try_claim, Claim};
