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
