//! Stores and loads 1 GiB of features and prints the throughput of each step.
//!
//! ```text
//! cargo run -p virb-feature-cache --release --example throughput [-- <folder> [<MiB>]]
//! ```
//!
//! The folder defaults to a temporary folder under the system's temp dir and is removed at
//! the end. The load is measured right after the store, so it reads from the page cache: it
//! measures read + verify overhead, not the disk.

use std::{path::PathBuf, time::Instant};

use sha2::{Digest, Sha256};
use virb_feature_cache::{human_bytes, ArrayRef, Cache, CacheKey, DType, LoadOutcome};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let parent = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let mib: usize = args.next().map_or(Ok(1024), |s| s.parse())?;
    let dir = tempfile::tempdir_in(&parent)?;
    let cache = Cache::open(dir.path().to_path_buf())?;

    // A features array (f16, 768 wide) of about `mib` MiB, plus labels.
    let dim = 768usize;
    let rows = (mib << 20) / (dim * 2);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let features: Vec<u8> = (0..rows * dim * 2)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let labels: Vec<u8> = (0..rows as i64)
        .flat_map(|i| (i % 1000).to_le_bytes())
        .collect();
    let shape_f = [rows as i64, dim as i64];
    let shape_l = [rows as i64];
    let arrays = [
        ArrayRef {
            name: "features",
            dtype: DType::F16,
            shape: &shape_f,
            bytes: &features,
        },
        ArrayRef {
            name: "labels",
            dtype: DType::I64,
            shape: &shape_l,
            bytes: &labels,
        },
    ];
    let key = CacheKey {
        encoder_plugin: "throughput".into(),
        encoder_plugin_version: "0".into(),
        encoder: "random".into(),
        encoder_options: serde_json::json!({}),
        weights_sha256: "0".repeat(64),
        task: "throughput".into(),
        task_plugin: "throughput".into(),
        task_plugin_version: "0".into(),
        split: "train".into(),
        image_size: 224,
        frames: 1,
        outputs: vec!["features".into()],
        dataset_fingerprint: format!("{rows} rows"),
    };
    let total = (features.len() + labels.len()) as f64;
    let mbps = |seconds: f64| total / seconds / 1e6;

    let t = Instant::now();
    let digest = Sha256::digest(&features);
    let hash_s = t.elapsed().as_secs_f64();
    println!(
        "sha256 alone:  {:>8.0} MB/s ({:.2} s, {:02x}{:02x}…)",
        features.len() as f64 / hash_s / 1e6,
        hash_s,
        digest[0],
        digest[1]
    );

    let t = Instant::now();
    let info = cache.store(&key, &arrays)?;
    let store_s = t.elapsed().as_secs_f64();
    println!(
        "store:         {:>8.0} MB/s ({:.2} s for {}, hash + write + fsync + rename)",
        mbps(store_s),
        store_s,
        human_bytes(info.bytes)
    );

    // Twice: the first load also pays for faulting in fresh memory for the arrays, which is
    // slow on some virtual machines.
    for attempt in ["first", "second"] {
        let t = Instant::now();
        let outcome = cache.load(&key)?;
        let load_s = t.elapsed().as_secs_f64();
        let LoadOutcome::Loaded(back) = outcome else {
            return Err(format!("load did not succeed: {outcome:?}").into());
        };
        println!(
            "load + verify: {:>8.0} MB/s ({:.2} s, {attempt} load, from the page cache)",
            mbps(load_s),
            load_s
        );
        if back[0].bytes != features || back[1].bytes != labels {
            return Err("loaded bytes differ".into());
        }
    }
    println!("cache: {} in {}", cache.usage()?, cache.dir().display());
    Ok(())
}
