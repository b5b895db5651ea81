//! SHA-256 of files and of JSON values: what identifies weights, heads and settings.
use crate::error::JobError;

/// SHA-256 of a file's content, hex.
pub fn sha256_file(path: &std::path::Path) -> Result<String, JobError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let err = |e: std::io::Error| JobError::Other(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a JSON value's canonical text (object keys sorted), hex.
pub fn hash_json(value: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's default map is ordered by key, so `to_string` is canonical.
    hex(&Sha256::digest(value.to_string().as_bytes()))
}

/// Name of the file in the feature cache folder that remembers weights files' hashes.
const HASHES_FILE: &str = "weights-sha256.tsv";

/// SHA-256 of a weights file, remembered in `<cache_dir>/weights-sha256.tsv` by the file's
/// canonical path, inode, size, modification and change times: an unchanged 100 MB file is not
/// read again by the next run. Any change to the file (rewritten, replaced, touched) changes
/// one of them and the file is hashed again. Without a cache folder (`--no-cache`), the file is
/// hashed every time. The table is rewritten atomically; two processes writing it at once may
/// lose an entry, which only costs a hash later.
pub fn sha256_file_cached(
    path: &std::path::Path,
    cache_dir: Option<&std::path::Path>,
) -> Result<String, JobError> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = cache_dir else {
        return sha256_file(path);
    };
    let Ok(meta) = std::fs::metadata(path) else {
        return sha256_file(path);
    };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stamp = format!(
        "{}\t{}\t{}.{}\t{}.{}",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    );
    let key = format!("{stamp}\t{}", canonical.display());
    let table = dir.join(HASHES_FILE);
    let text = std::fs::read_to_string(&table).unwrap_or_default();
    for line in text.lines() {
        if let Some((sha, k)) = line.split_once('\t') {
            if k == key && sha.len() == 64 {
                return Ok(sha.to_string());
            }
        }
    }
    let sha = sha256_file(path)?;
    // Keep the other files' entries, drop this file's older ones.
    let suffix = format!("\t{}", canonical.display());
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.ends_with(&suffix)).collect();
    let entry = format!("{sha}\t{key}");
    lines.push(&entry);
    let body = lines.join("\n") + "\n";
    let _ = crate::outdir::write_atomic(&table, |tmp| std::fs::write(tmp, body.as_bytes()));
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_hash_follows_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weights = dir.path().join("w.bin");
        std::fs::write(&weights, b"first").expect("write");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).expect("mkdir");
        let a = sha256_file_cached(&weights, Some(&cache)).expect("hash");
        assert_eq!(a, sha256_file(&weights).expect("hash"));
        assert!(cache.join(HASHES_FILE).exists());
        // A remembered hash is used (the table says so even if we lie in it)...
        let table = std::fs::read_to_string(cache.join(HASHES_FILE)).expect("read");
        let fake = "f".repeat(64);
        std::fs::write(cache.join(HASHES_FILE), table.replace(&a, &fake)).expect("write");
        assert_eq!(
            sha256_file_cached(&weights, Some(&cache)).expect("hash"),
            fake
        );
        // ...until the file changes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&weights, b"second").expect("write");
        let b = sha256_file_cached(&weights, Some(&cache)).expect("hash");
        assert_eq!(b, sha256_file(&weights).expect("hash"));
        assert_ne!(a, b);
        let table = std::fs::read_to_string(cache.join(HASHES_FILE)).expect("read");
        assert_eq!(table.lines().count(), 1, "{table}");
    }
}
