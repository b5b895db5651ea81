//! Taking claims (new, or over from a stale holder) and holding them: the heartbeat thread and
//! the release. The protocol is described in the parent module.

use super::{
    ctx, is_stale, read_claim, unique_temp, Attempt, Holder, LeaseOptions, Record, Seen, BUSY_WAIT,
    MIN_HEARTBEAT, ROUNDS, TAKEOVER_LEVELS, TAKEOVER_STALE,
};
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

/// Tries to claim `path` (e.g. `<out>/<exp>/.claims/<job>.claim`; parent folders are created)
/// for `what` (free text shown to other workers). A missing claim is created atomically; a
/// stale one is taken over (see the module documentation); otherwise the answer is `Held`.
/// While another worker is taking a stale claim over, this waits up to about 0.2 s for it to
/// finish, then answers `Held` with the stale holder.
pub fn try_claim(path: &Path, what: &str, opts: &LeaseOptions) -> io::Result<Attempt> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| ctx(e, "cannot create claims folder", dir))?;
    }
    let mut waited_on = None;
    for _ in 0..ROUNDS {
        match read_claim(path)? {
            Seen::Missing => {
                let record = Record::new(what);
                if create_exclusive(path, &record)? {
                    return Claim::start(path, record, opts).map(Attempt::Acquired);
                }
            }
            Seen::Present { holder, id } => {
                if !is_stale(&holder, opts) {
                    return Ok(Attempt::Held(holder));
                }
                match take_over(path, &id, what, opts)? {
                    Takeover::Won(record) => {
                        tracing::info!(
                            "took over claim {} from {} (pid {} on {}, heartbeat {:.0?} ago)",
                            path.display(),
                            holder.worker,
                            holder.pid,
                            holder.host,
                            holder.age
                        );
                        return Claim::start(path, record, opts).map(Attempt::Acquired);
                    }
                    Takeover::Fresh(h) => return Ok(Attempt::Held(h)),
                    Takeover::Changed => {}
                    Takeover::Busy => {
                        waited_on = Some(holder);
                        thread::sleep(BUSY_WAIT);
                    }
                }
            }
        }
    }
    match (read_claim(path)?, waited_on) {
        (Seen::Present { holder, .. }, _) => Ok(Attempt::Held(holder)),
        (Seen::Missing, Some(holder)) => Ok(Attempt::Held(holder)),
        (Seen::Missing, None) => Err(io::Error::other(format!(
            "claim file {} kept appearing and vanishing over {ROUNDS} tries; try again",
            path.display()
        ))),
    }
}

/// The outcome of one takeover attempt.
enum Takeover {
    /// The claim is ours, holding this record.
    Won(Record),
    /// The claim was renewed meanwhile.
    Fresh(Holder),
    /// The claim file changed or vanished meanwhile: read it again.
    Changed,
    /// Another successor is taking the claim over.
    Busy,
}

/// The lock that serializes takeovers of the claim instance `id` at `level`.
fn lock_path(path: &Path, id: &str, level: u32) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.takeover-{id}-{level}",
        name.unwrap_or_default()
    ))
}

/// Takes over the stale claim instance `id` at `path`, under its takeover lock.
fn take_over(path: &Path, id: &str, what: &str, opts: &LeaseOptions) -> io::Result<Takeover> {
    let mut level = 1;
    loop {
        let lock = lock_path(path, id, level);
        match OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(file) => {
                // Our clock, as every heartbeat; failure only makes the lock age by the server's.
                let _ = file.set_modified(SystemTime::now());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match fs::metadata(&lock).map(|m| super::age_of(&m)) {
                    // Released by a successor that finished: the claim changed.
                    Err(_) => return Ok(Takeover::Changed),
                    Ok(age) if age > TAKEOVER_STALE && level < TAKEOVER_LEVELS => level += 1,
                    Ok(_) => return Ok(Takeover::Busy),
                }
            }
            Err(e) => return Err(ctx(e, "cannot create takeover lock", &lock)),
        }
    }
    let outcome = replace_locked(path, id, what, opts);
    let levels = match outcome {
        // Lower levels were left by successors that crashed mid-takeover of this instance.
        Ok(Takeover::Won(_)) => 1..=level,
        _ => level..=level,
    };
    for l in levels {
        if let Err(e) = fs::remove_file(lock_path(path, id, l)) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot remove takeover lock of {}: {e}", path.display());
            }
        }
    }
    outcome
}

/// Under the takeover lock: replaces the claim if it is still the stale instance `id`.
fn replace_locked(path: &Path, id: &str, what: &str, opts: &LeaseOptions) -> io::Result<Takeover> {
    let check = || -> io::Result<Option<Takeover>> {
        Ok(match read_claim(path)? {
            Seen::Present { id: now, .. } if now != id => Some(Takeover::Changed),
            Seen::Missing => Some(Takeover::Changed),
            Seen::Present { holder, .. } if !is_stale(&holder, opts) => {
                Some(Takeover::Fresh(holder))
            }
            Seen::Present { .. } => None,
        })
    };
    if let Some(t) = check()? {
        return Ok(t);
    }
    let record = Record::new(what);
    let (mut file, tmp) = unique_temp(path)?;
    // Checked again just before the rename, to keep the window for a stalled rival small.
    let outcome = write_record(&mut file, &record)
        .map_err(|e| ctx(e, "cannot write claim file", &tmp))
        .and_then(|()| check())
        .and_then(|verdict| match verdict {
            Some(t) => Ok(t),
            None => fs::rename(&tmp, path)
                .map(|()| Takeover::Won(record))
                .map_err(|e| ctx(e, "cannot replace claim file", path)),
        });
    if !matches!(outcome, Ok(Takeover::Won(_))) {
        let _ = fs::remove_file(&tmp);
    }
    outcome
}

/// Writes a claim record, with an mtime from our clock, to stable storage.
fn write_record(file: &mut File, record: &Record) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    bytes.push(b'\n');
    file.write_all(&bytes)?;
    file.set_modified(SystemTime::now())?;
    file.sync_all()
}

/// Creates the claim file if none exists; false if one does.
fn create_exclusive(path: &Path, record: &Record) -> io::Result<bool> {
    let (mut file, tmp) = unique_temp(path)?;
    let outcome = write_record(&mut file, record)
        .map_err(|e| ctx(e, "cannot write claim file", &tmp))
        .and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            // A retransmitted NFS LINK may fail although the first one succeeded.
            Err(_) if fs::metadata(&tmp).is_ok_and(|m| m.nlink() == 2) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK)
                ) =>
            {
                create_new_fallback(path, record)
            }
            Err(e) => Err(ctx(e, "cannot create claim file", path)),
        });
    let _ = fs::remove_file(&tmp);
    outcome
}

/// Creates the claim file in place where hard links are not supported.
fn create_new_fallback(path: &Path, record: &Record) -> io::Result<bool> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut file) => write_record(&mut file, record)
            .map(|()| true)
            .map_err(|e| ctx(e, "cannot write claim file", path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(ctx(e, "cannot create claim file", path)),
    }
}

/// State shared by a claim and its heartbeat thread.
struct Shared {
    lost: AtomicBool,
    start: Instant,
    /// Milliseconds after `start` of the last heartbeat that found the claim ours.
    last_ok_ms: AtomicU64,
}

/// A claim held by this process; released on drop.
pub struct Claim {
    path: PathBuf,
    token: String,
    lease: Duration,
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("path", &self.path)
            .field("held", &self.is_held())
            .finish()
    }
}

impl Claim {
    /// Starts the heartbeat of a claim just written; removes the file if that fails.
    fn start(path: &Path, record: Record, opts: &LeaseOptions) -> io::Result<Claim> {
        let shared = Arc::new(Shared {
            lost: AtomicBool::new(false),
            start: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
        });
        let (stop, stopped) = mpsc::channel();
        let (p, token, s) = (path.to_owned(), record.token.clone(), shared.clone());
        let every = opts.heartbeat.max(MIN_HEARTBEAT);
        let spawned = thread::Builder::new()
            .name("virb-claim-heartbeat".to_owned())
            .spawn(move || heartbeat(&p, &token, &s, &stopped, every));
        match spawned {
            Ok(handle) => Ok(Claim {
                path: path.to_owned(),
                token: record.token,
                lease: opts.lease,
                shared,
                stop: Some(stop),
                heartbeat: Some(handle),
            }),
            Err(e) => {
                let _ = remove_if_ours(path, &record.token);
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start the heartbeat of claim {}: {e}",
                        path.display()
                    ),
                ))
            }
        }
    }

    /// False once another worker took the claim over (a heartbeat found the file no longer
    /// holds our token, or gone), and also while no heartbeat has succeeded for a whole lease
    /// (others may then be taking it over). The owner must then not write results.
    pub fn is_held(&self) -> bool {
        let since = self.shared.start.elapsed().as_millis();
        let last = u128::from(self.shared.last_ok_ms.load(Ordering::Relaxed));
        !self.shared.lost.load(Ordering::Relaxed)
            && since.saturating_sub(last) < self.lease.as_millis()
    }

    /// Removes the claim file if it still holds our token, and stops the heartbeat. Drop does
    /// the same.
    pub fn release(self) {}

    /// The claim file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Dropping the sender wakes the heartbeat thread, which then ends.
        self.stop.take();
        if let Some(handle) = self.heartbeat.take() {
            let _ = handle.join();
        }
        if let Err(e) = remove_if_ours(&self.path, &self.token) {
            tracing::warn!("cannot release claim: {e}");
        }
    }
}

/// Removes a claim file if it holds `token`.
fn remove_if_ours(path: &Path, token: &str) -> io::Result<()> {
    let ours = match fs::read(path) {
        Ok(bytes) => super::parse(&bytes).is_ok_and(|r| r.token == token),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(ctx(e, "cannot read claim file", path)),
    };
    if !ours {
        return Ok(());
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(ctx(e, "cannot remove claim file", path))
        }
        _ => Ok(()),
    }
}

/// Renews the claim every `every` until `stopped` says stop, or the claim is lost.
fn heartbeat(
    path: &Path,
    token: &str,
    shared: &Shared,
    stopped: &mpsc::Receiver<()>,
    every: Duration,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        match beat(path, token) {
            Ok(true) => {
                let ms = u64::try_from(shared.start.elapsed().as_millis()).unwrap_or(u64::MAX);
                shared.last_ok_ms.store(ms, Ordering::Relaxed);
            }
            Ok(false) => {
                shared.lost.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "claim {} was taken over by another worker; this worker's result for it will be dropped",
                    path.display()
                );
                return;
            }
            Err(e) => tracing::warn!("cannot renew claim: {e}"),
        }
    }
}

/// One heartbeat: bumps the mtime of the claim file if it still holds `token` (checked on the
/// same open file, so a replaced file is never bumped). False when it does not.
fn beat(path: &Path, token: &str) -> io::Result<bool> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ctx(e, "cannot open claim file", path)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| ctx(e, "cannot read claim file", path))?;
    let ours = super::parse(&bytes).is_ok_and(|r| r.token == token);
    if ours {
        file.set_modified(SystemTime::now())
            .map_err(|e| ctx(e, "cannot renew the mtime of claim file", path))?;
    }
    Ok(ours)
}
