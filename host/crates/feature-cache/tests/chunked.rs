//! The chunked, memory-mapped format: written sample by sample, read back exactly, and every
//! kind of damage (a flipped byte in any chunk, a cut-short file, another key) refused and
//! removed.
#![allow(clippy::unwrap_used, missing_docs)]
use virb_feature_cache::{ArraySpec, Cache, CacheKey, ChunkedOutcome, DType};

fn key(split: &str) -> CacheKey {
    CacheKey {
        encoder_plugin: "virb-encoder-resnet".into(),
        encoder_plugin_version: "0.1.0".into(),
        encoder: "resnet50".into(),
        encoder_options: serde_json::json!({}),
        weights_sha256: "00".repeat(32),
        task: "THORDepth".into(),
        task_plugin: "virb-task-depth".into(),
        task_plugin_version: "0.1.0".into(),
        split: split.into(),
        image_size: 64,
        frames: 1,
        outputs: vec!["block1".into(), "block4".into()],
        dataset_fingerprint: "fixture".into(),
    }
}

fn arrays() -> Vec<ArraySpec> {
    vec![
        // Rows of ~1 MB, so that the 8 MiB chunks hold several rows and several chunks exist.
        ArraySpec {
            name: "block1".into(),
            dtype: DType::F16,
            sample_shape: vec![256, 32, 64],
        },
        ArraySpec {
            name: "block4".into(),
            dtype: DType::F16,
            sample_shape: vec![2048, 2, 2],
        },
        ArraySpec {
            name: "__targets__".into(),
            dtype: DType::F32,
            sample_shape: vec![1, 64, 64],
        },
    ]
}

/// Sample `i`'s bytes of array `a`: a pattern that differs per sample and array.
fn row(a: usize, spec: &ArraySpec, i: u64) -> Vec<u8> {
    (0..spec.row_bytes())
        .map(|k| (k.wrapping_mul(31) ^ (i * 7 + a as u64 * 101)) as u8)
        .collect()
}

fn write(cache: &Cache, key: &CacheKey, samples: u64, batch: u64) {
    let specs = arrays();
    let mut w = cache.create_chunked(key, &specs, samples).unwrap();
    let mut first = 0;
    while first < samples {
        let n = batch.min(samples - first);
        let data: Vec<Vec<u8>> = specs
            .iter()
            .enumerate()
            .map(|(a, s)| (first..first + n).flat_map(|i| row(a, s, i)).collect())
            .collect();
        let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        w.append(n, &slices).unwrap();
        first += n;
    }
    assert_eq!(w.written(), samples);
    w.finish().unwrap();
}

fn loaded(cache: &Cache, key: &CacheKey) -> virb_feature_cache::ChunkedFile {
    match cache.open_chunked(key).unwrap() {
        ChunkedOutcome::Loaded(f) => f,
        ChunkedOutcome::Missing => panic!("missing"),
        ChunkedOutcome::Invalid { reason, .. } => panic!("invalid: {reason}"),
    }
}

#[test]
fn rows_come_back_exactly_in_any_order_whatever_the_batches_written() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().to_path_buf()).unwrap();
    let k = key("train");
    // 23 samples in uneven batches: chunk boundaries fall inside batches.
    write(&cache, &k, 23, 5);
    let f = loaded(&cache, &k);
    assert_eq!(f.samples(), 23);
    assert_eq!(f.arrays(), arrays());
    for (a, spec) in arrays().iter().enumerate() {
        let idx = [22u64, 0, 7, 7, 13];
        let mut out = vec![0u8; idx.len() * spec.row_bytes() as usize];
        f.read_rows(a, &idx, &mut out).unwrap();
        for (k, &i) in idx.iter().enumerate() {
            let r = spec.row_bytes() as usize;
            assert!(
                out[k * r..(k + 1) * r] == row(a, spec, i)[..],
                "array {a} row {i}"
            );
        }
    }
    let mut out = vec![0u8; arrays()[0].row_bytes() as usize];
    assert!(f.read_rows(0, &[23], &mut out).is_err(), "past the end");
    assert_eq!(cache.usage().unwrap().files, 1);
}

#[test]
fn a_flipped_byte_in_any_chunk_a_cut_short_file_or_another_key_is_refused_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().to_path_buf()).unwrap();
    let k = key("train");
    let path = |c: &Cache| {
        std::fs::read_dir(c.dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "vfp"))
            .unwrap()
    };
    write(&cache, &k, 23, 4);
    let len = std::fs::metadata(path(&cache)).unwrap().len();
    // A byte in the last chunk of the first array, in the targets, and in the chunk table.
    for at in [len / 3, len - 5000, len - 40] {
        write(&cache, &k, 23, 4);
        let p = path(&cache);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[at as usize] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        match cache.open_chunked(&k).unwrap() {
            ChunkedOutcome::Invalid { reason, .. } => {
                assert!(
                    reason.contains("checksum mismatch") || reason.contains("magic"),
                    "byte {at}: {reason}"
                );
            }
            _ => panic!("byte {at}: a damaged file was accepted"),
        }
        assert!(!p.exists(), "the damaged file is removed");
    }
    write(&cache, &k, 23, 4);
    let p = path(&cache);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        cache.open_chunked(&k).unwrap(),
        ChunkedOutcome::Invalid { .. }
    ));
    // Another key's file copied under this key's name: refused by the key check.
    write(&cache, &key("test"), 3, 3);
    let other = path(&cache);
    std::fs::rename(&other, dir.path().join(format!("{}.vfp", k.digest()))).unwrap();
    match cache.open_chunked(&k).unwrap() {
        ChunkedOutcome::Invalid { reason, .. } => assert!(reason.contains("key"), "{reason}"),
        _ => panic!("another key's file was accepted"),
    }
    assert!(matches!(
        cache.open_chunked(&k).unwrap(),
        ChunkedOutcome::Missing
    ));
}

#[test]
fn an_unfinished_writer_leaves_nothing_and_a_short_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().to_path_buf()).unwrap();
    let k = key("train");
    {
        let mut w = cache.create_chunked(&k, &arrays(), 10).unwrap();
        let data: Vec<Vec<u8>> = arrays()
            .iter()
            .enumerate()
            .map(|(a, s)| row(a, s, 0))
            .collect();
        let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        w.append(1, &slices).unwrap();
        // Wrong lengths are refused, not written.
        assert!(w.append(2, &slices).is_err());
        assert!(w.finish().is_err(), "1 of 10 samples");
    }
    assert!(matches!(
        cache.open_chunked(&k).unwrap(),
        ChunkedOutcome::Missing
    ));
    assert_eq!(
        std::fs::read_dir(cache.dir()).unwrap().count(),
        1,
        "only CACHEDIR.TAG"
    );
}
