//! Unit tests of claims: races between threads, takeovers, heartbeat, loss, temporary files.

use super::*;
use std::{
    io::Write,
    sync::{Barrier, Mutex},
    thread,
    time::Instant,
};

/// A record as another worker would write it.
fn foreign(host: &str, node: &str, pid: u32, token: &str) -> Record {
    Record {
        worker: format!("{host}:{pid}:00000000deadbeef"),
        host: host.to_owned(),
        node: node.to_owned(),
        pid,
        what: "exp/job".to_owned(),
        acquired_unix: 1,
        token: token.to_owned(),
    }
}

/// Writes a claim file (atomically, as a rival would) whose heartbeat is `age` old.
fn put(path: &Path, record: &Record, age: Duration) {
    let (mut file, tmp) = unique_temp(path).expect("temp");
    file.write_all(&serde_json::to_vec(record).expect("json"))
        .expect("write");
    file.set_modified(SystemTime::now() - age).expect("mtime");
    fs::rename(&tmp, path).expect("rename");
}

fn token_in(path: &Path) -> String {
    parse(&fs::read(path).expect("read")).expect("parse").token
}

fn acquired(a: Attempt) -> Claim {
    match a {
        Attempt::Acquired(c) => c,
        Attempt::Held(h) => panic!("expected to acquire, held by {h:?}"),
    }
}

fn held(a: Attempt) -> Holder {
    match a {
        Attempt::Held(h) => h,
        Attempt::Acquired(c) => panic!("expected held, acquired {c:?}"),
    }
}

/// Runs `f` on 8 threads at once; returns how many acquired, and the claims.
fn race(path: &Path, opts: &LeaseOptions) -> Vec<Attempt> {
    let barrier = Barrier::new(8);
    let out = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                barrier.wait();
                let a = try_claim(path, "exp/job", opts).expect("try_claim");
                out.lock().expect("lock").push(a);
            });
        }
    });
    out.into_inner().expect("lock")
}

fn count_acquired(attempts: &[Attempt]) -> usize {
    attempts
        .iter()
        .filter(|a| matches!(a, Attempt::Acquired(_)))
        .count()
}

#[test]
fn exactly_one_of_eight_racing_threads_acquires_each_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("e/.claims/j.claim");
    let opts = LeaseOptions::default();
    for round in 0..50 {
        let attempts = race(&path, &opts);
        assert_eq!(count_acquired(&attempts), 1, "round {round}");
        for a in &attempts {
            if let Attempt::Held(h) = a {
                assert_eq!(h.worker, worker_id());
                assert_eq!(h.what, "exp/job");
            }
        }
        drop(attempts);
        assert!(!path.exists(), "release removes the claim file");
    }
    let left: Vec<_> = fs::read_dir(path.parent().expect("dir"))
        .expect("ls")
        .collect();
    assert!(left.is_empty(), "no temporary files left: {left:?}");
}

#[test]
fn a_dead_process_on_this_host_is_taken_over_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    child.wait().expect("wait");
    let dead = foreign(hostname(), node_id(), child.id(), "0123abcd");
    put(&path, &dead, Duration::ZERO);
    let h = holder(&path).expect("holder").expect("present");
    assert!(is_stale(&h, &LeaseOptions::default()));
    let c = acquired(try_claim(&path, "mine", &LeaseOptions::default()).expect("try"));
    assert_ne!(token_in(&path), "0123abcd");
    assert_eq!(holder(&path).expect("h").expect("p").worker, worker_id());
    // The same pid under another node (a container sharing the hostname) is not judged by pid.
    drop(c);
    put(
        &path,
        &foreign(hostname(), "other-boot/pid:[1]", child.id(), "aa"),
        Duration::ZERO,
    );
    held(try_claim(&path, "mine", &LeaseOptions::default()).expect("try"));
}

#[test]
fn a_live_process_on_this_host_holds_its_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn");
    put(
        &path,
        &foreign(hostname(), node_id(), child.id(), "ab"),
        Duration::ZERO,
    );
    let h = held(try_claim(&path, "mine", &LeaseOptions::default()).expect("try"));
    assert_eq!(h.pid, child.id());
    let _ = child.kill();
    let _ = child.wait();
    acquired(try_claim(&path, "mine", &LeaseOptions::default()).expect("try"));
}

#[test]
fn another_hosts_claim_is_taken_over_only_after_the_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let opts = LeaseOptions::default();
    put(
        &path,
        &foreign("elsewhere", "b/p", 1, "beef"),
        Duration::from_secs(60),
    );
    let h = held(try_claim(&path, "mine", &opts).expect("try"));
    assert_eq!((h.host.as_str(), h.pid), ("elsewhere", 1));
    assert!(h.age >= Duration::from_secs(59) && h.age < opts.lease);
    put(
        &path,
        &foreign("elsewhere", "b/p", 1, "beef"),
        Duration::from_secs(121),
    );
    let _c = acquired(try_claim(&path, "mine", &opts).expect("try"));
    assert_ne!(token_in(&path), "beef");
}

#[test]
fn exactly_one_of_eight_successors_takes_a_stale_claim_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let opts = LeaseOptions::default();
    for round in 0..20 {
        let token = format!("{round:x}f");
        put(
            &path,
            &foreign("elsewhere", "b/p", 7, &token),
            Duration::from_secs(3600),
        );
        let attempts = race(&path, &opts);
        assert_eq!(count_acquired(&attempts), 1, "round {round}");
        let winner = token_in(&path);
        for a in &attempts {
            if let Attempt::Held(h) = a {
                assert_eq!(h.worker, worker_id(), "round {round}: held by the winner");
            }
        }
        assert_ne!(winner, token);
        assert!(!lock_path_exists(&path), "takeover locks are removed");
    }
}

fn lock_path_exists(path: &Path) -> bool {
    fs::read_dir(path.parent().expect("dir"))
        .expect("ls")
        .any(|e| {
            e.expect("entry")
                .file_name()
                .to_string_lossy()
                .contains(".takeover-")
        })
}

#[test]
fn a_takeover_lock_left_by_a_crash_is_passed_after_a_while() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let opts = LeaseOptions::default();
    put(
        &path,
        &foreign("elsewhere", "b/p", 7, "c0ffee"),
        Duration::from_secs(3600),
    );
    let lock = dir.path().join(".j.claim.takeover-c0ffee-1");
    let file = File::create(&lock).expect("lock");
    // A successor is taking it over right now: wait, then report the claim as held.
    let h = held(try_claim(&path, "mine", &opts).expect("try"));
    assert_eq!(h.host, "elsewhere");
    // That successor crashed long ago: the next level of lock is used, and all are removed.
    file.set_modified(SystemTime::now() - TAKEOVER_STALE * 2)
        .expect("mtime");
    let _c = acquired(try_claim(&path, "mine", &opts).expect("try"));
    assert!(!lock_path_exists(&path));
}

#[test]
fn an_unreadable_claim_file_counts_as_held_until_the_lease_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let opts = LeaseOptions::default();
    fs::write(&path, b"{\"worker\": \"half").expect("write");
    let h = held(try_claim(&path, "mine", &opts).expect("try"));
    assert!(h.worker.is_empty() && h.what.starts_with("unreadable claim file"));
    let f = File::options().write(true).open(&path).expect("open");
    f.set_modified(SystemTime::now() - Duration::from_secs(200))
        .expect("mtime");
    let _c = acquired(try_claim(&path, "mine", &opts).expect("try"));
    assert_eq!(holder(&path).expect("h").expect("p").worker, worker_id());
}

#[test]
fn the_heartbeat_keeps_a_claim_fresh_past_its_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let opts = LeaseOptions {
        lease: Duration::from_millis(300),
        heartbeat: Duration::from_millis(50),
    };
    let c = acquired(try_claim(&path, "mine", &opts).expect("try"));
    thread::sleep(Duration::from_secs(1));
    let h = holder(&path).expect("h").expect("p");
    assert!(h.age < opts.lease, "heartbeat {:?} ago", h.age);
    assert!(!is_stale(&h, &opts));
    held(try_claim(&path, "other", &opts).expect("try"));
    assert!(c.is_held());
    c.release();
    assert!(!path.exists());
}

#[test]
fn a_claim_taken_over_is_lost_and_its_release_leaves_the_new_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.claim");
    let opts = LeaseOptions {
        lease: Duration::from_millis(400),
        heartbeat: Duration::from_millis(20),
    };
    let c = acquired(try_claim(&path, "mine", &opts).expect("try"));
    assert!(c.is_held());
    put(
        &path,
        &foreign("elsewhere", "b/p", 9, "5ca1ab1e"),
        Duration::ZERO,
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while c.is_held() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(!c.is_held(), "loss not detected");
    c.release();
    assert_eq!(token_in(&path), "5ca1ab1e");
}

#[test]
fn unique_temp_never_reuses_or_truncates_a_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.json");
    let (_a, pa) = unique_temp(&path).expect("a");
    let (_b, pb) = unique_temp(&path).expect("b");
    assert_ne!(pa, pb);
    assert!(pa.exists() && pb.exists());
    let name = pa.file_name().expect("name").to_string_lossy().into_owned();
    assert!(name.starts_with(".run.json.tmp-"), "{name}");
    // A name drawn again is skipped, and the file under it kept as it was.
    let mut draws = [7u64].into_iter();
    let (_c, pc) = unique_temp_with(&path, || draws.next().expect("draw")).expect("c");
    fs::write(&pc, b"keep").expect("write");
    let mut draws = [7u64, 9].into_iter();
    let (_d, pd) = unique_temp_with(&path, || draws.next().expect("draw")).expect("d");
    assert_ne!(pc, pd);
    assert_eq!(fs::read(&pc).expect("read"), b"keep");
    let err = unique_temp(Path::new("/")).expect_err("no file name");
    assert!(err.to_string().contains("has no file name"), "{err}");
}

#[test]
fn worker_id_names_host_pid_and_a_random_part() {
    let parts: Vec<&str> = worker_id().rsplitn(3, ':').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2], hostname());
    assert_eq!(parts[1], std::process::id().to_string());
    assert_eq!(parts[0].len(), 16);
    assert!(u64::from_str_radix(parts[0], 16).is_ok());
}
