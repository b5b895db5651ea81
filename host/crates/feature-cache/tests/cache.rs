//! Behaviour of the feature cache through its public API.

#![allow(clippy::unwrap_used)]

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde_json::json;
use virb_feature_cache::{
    Array, ArrayRef, Cache, CacheError, CacheKey, DType, LoadOutcome, Usage, ALIGN, MAGIC,
};

fn key() -> CacheKey {
    CacheKey {
        encoder_plugin: "encoder-resnet".into(),
        encoder_plugin_version: "0.1.0".into(),
        encoder: "resnet50".into(),
        encoder_options: json!({"pool": "avg", "layers": [3, 4], "scale": 0.1}),
        weights_sha256: "ab".repeat(32),
        task: "cifar10".into(),
        task_plugin: "task-classification".into(),
        task_plugin_version: "0.2.0".into(),
        split: "train".into(),
        image_size: 224,
        frames: 1,
        outputs: vec!["pooled".into()],
        dataset_fingerprint: "/data/cifar10 n=50000 classes=10 mtime=1700000000".into(),
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Several arrays of every dtype, with lengths that are not multiples of the alignment.
fn sample() -> Vec<Array> {
    let labels: Vec<u8> = [3i64, -1, 7, i64::MAX, i64::MIN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    vec![
        Array {
            name: "features".into(),
            dtype: DType::F16,
            shape: vec![5, 7],
            bytes: noise(5 * 7 * 2, 1),
        },
        Array {
            name: "labels".into(),
            dtype: DType::I64,
            shape: vec![5],
            bytes: labels,
        },
        Array {
            name: "empty".into(),
            dtype: DType::U8,
            shape: vec![0, 3],
            bytes: vec![],
        },
        Array {
            name: "scale".into(),
            dtype: DType::F32,
            shape: vec![],
            bytes: 0.5f32.to_le_bytes().to_vec(),
        },
    ]
}

fn refs(arrays: &[Array]) -> Vec<ArrayRef<'_>> {
    arrays.iter().map(Array::as_array_ref).collect()
}

fn open() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("features")).unwrap();
    (dir, cache)
}

fn loaded(outcome: LoadOutcome) -> Vec<Array> {
    match outcome {
        LoadOutcome::Loaded(arrays) => arrays,
        other => panic!("expected Loaded, got {other:?}"),
    }
}

fn invalid_reason(outcome: LoadOutcome) -> String {
    match outcome {
        LoadOutcome::Invalid { reason, .. } => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn assert_missing(cache: &Cache, key: &CacheKey) {
    let outcome = cache.load(key).unwrap();
    assert!(
        matches!(outcome, LoadOutcome::Missing),
        "expected Missing, got {outcome:?}"
    );
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn temp_names(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

#[test]
fn round_trip_is_exact() {
    let (_tmp, cache) = open();
    let arrays = sample();
    let info = cache.store(&key(), &refs(&arrays)).unwrap();
    assert_eq!(info.path, cache.path_for(&key()));
    assert_eq!(
        info.path.file_name().unwrap().to_str().unwrap(),
        format!("{}.vfc", key().digest())
    );
    assert_eq!(info.bytes, fs::metadata(&info.path).unwrap().len());
    assert_eq!(info.payload_sha256.len(), 64);
    let back = loaded(cache.load(&key()).unwrap());
    assert_eq!(back, arrays);
    // Loading does not consume the file.
    assert_eq!(loaded(cache.load(&key()).unwrap()), arrays);
    assert_eq!(
        cache.usage().unwrap(),
        Usage {
            files: 1,
            bytes: info.bytes
        }
    );
    assert!(temp_names(cache.dir()).is_empty());
}

#[test]
fn layout_matches_the_documented_format() {
    let (_tmp, cache) = open();
    let arrays = sample();
    let info = cache.store(&key(), &refs(&arrays)).unwrap();
    let file = fs::read(&info.path).unwrap();
    assert_eq!(&file[..8], MAGIC);
    let header_len = u64::from_le_bytes(file[8..16].try_into().unwrap()) as usize;
    let payload_start = 16 + header_len;
    assert_eq!(payload_start as u64 % ALIGN, 0);
    let header: serde_json::Value = serde_json::from_slice(&file[16..payload_start]).unwrap();
    let canonical: serde_json::Value = serde_json::from_str(&key().canonical_json()).unwrap();
    assert_eq!(header["key"], canonical);
    assert_eq!(
        header["key"]["format_version"],
        json!(virb_feature_cache::FORMAT_VERSION)
    );
    assert_eq!(
        header["payload_length"].as_u64().unwrap() as usize,
        file.len() - payload_start
    );
    assert_eq!(header["payload_sha256"], json!(info.payload_sha256));
    let entries = header["arrays"].as_array().unwrap();
    assert_eq!(entries.len(), arrays.len());
    for (entry, array) in entries.iter().zip(&arrays) {
        assert_eq!(entry["name"], json!(array.name));
        assert_eq!(entry["dtype"], json!(array.dtype.name()));
        assert_eq!(entry["shape"], json!(array.shape));
        let offset = entry["offset"].as_u64().unwrap();
        let length = entry["length"].as_u64().unwrap() as usize;
        assert_eq!(offset % ALIGN, 0);
        let start = payload_start + offset as usize;
        assert_eq!(&file[start..start + length], &array.bytes[..]);
    }
}

#[test]
fn canonical_json_is_stable() {
    // Changing this text invalidates every cache file in the wild: do it on purpose only
    // (and then consider bumping FORMAT_VERSION instead of editing this test silently).
    let mut k = key();
    k.weights_sha256 = "AB".repeat(32);
    k.encoder_options = json!({"z": 1, "a": {"y": [true, null], "b": "x"}});
    assert_eq!(
        k.canonical_json(),
        format!(
            "{{\"dataset_fingerprint\":\"/data/cifar10 n=50000 classes=10 mtime=1700000000\",\
             \"encoder\":\"resnet50\",\"encoder_options\":{{\"a\":{{\"b\":\"x\",\"y\":[true,null]}},\"z\":1}},\
             \"encoder_plugin\":\"encoder-resnet\",\"encoder_plugin_version\":\"0.1.0\",\
             \"format_version\":1,\"frames\":1,\"image_size\":224,\"outputs\":[\"pooled\"],\
             \"split\":\"train\",\"task\":\"cifar10\",\"task_plugin\":\"task-classification\",\
             \"task_plugin_version\":\"0.2.0\",\"weights_sha256\":\"{}\"}}",
            "ab".repeat(32)
        )
    );
    assert_eq!(k.digest().len(), 64);
    assert!(k.describe().contains("resnet50"));
    assert!(k.describe().contains("cifar10/train"));
}

#[test]
fn different_keys_use_different_files() {
    let (_tmp, cache) = open();
    let train = key();
    let test = CacheKey {
        split: "test".into(),
        ..key()
    };
    assert_ne!(cache.path_for(&train), cache.path_for(&test));
    let a = sample();
    let b = vec![Array {
        name: "features".into(),
        dtype: DType::F32,
        shape: vec![2, 2],
        bytes: noise(16, 9),
    }];
    cache.store(&train, &refs(&a)).unwrap();
    cache.store(&test, &refs(&b)).unwrap();
    assert_eq!(loaded(cache.load(&train).unwrap()), a);
    assert_eq!(loaded(cache.load(&test).unwrap()), b);
    assert_eq!(cache.usage().unwrap().files, 2);
}

#[test]
fn any_field_change_misses_but_option_order_and_hash_case_do_not() {
    let (_tmp, cache) = open();
    let arrays = sample();
    cache.store(&key(), &refs(&arrays)).unwrap();
    type Change = fn(&mut CacheKey);
    let changes: [(&str, Change); 13] = [
        ("encoder_plugin", |k| k.encoder_plugin.push('x')),
        ("encoder_plugin_version", |k| {
            k.encoder_plugin_version = "0.1.1".into()
        }),
        ("encoder", |k| k.encoder = "resnet18".into()),
        ("encoder_options", |k| {
            k.encoder_options["pool"] = json!("max")
        }),
        ("weights_sha256", |k| k.weights_sha256 = "ac".repeat(32)),
        ("task", |k| k.task = "cifar100".into()),
        ("task_plugin", |k| k.task_plugin.push('x')),
        ("task_plugin_version", |k| {
            k.task_plugin_version = "0.2.1".into()
        }),
        ("split", |k| k.split = "test".into()),
        ("image_size", |k| k.image_size = 256),
        ("frames", |k| k.frames = 2),
        ("outputs", |k| k.outputs.push("tokens".into())),
        ("dataset_fingerprint", |k| k.dataset_fingerprint.push('1')),
    ];
    for (field, change) in changes {
        let mut k = key();
        change(&mut k);
        assert_ne!(k.digest(), key().digest(), "{field}");
        assert_missing(&cache, &k);
    }
    // Option order, at any depth, and the case of the weights hash do not matter.
    let reordered = CacheKey {
        encoder_options: serde_json::from_str(r#"{"scale": 0.1, "layers": [3, 4], "pool": "avg"}"#)
            .unwrap(),
        weights_sha256: "AB".repeat(32),
        ..key()
    };
    assert_eq!(reordered.digest(), key().digest());
    assert_eq!(loaded(cache.load(&reordered).unwrap()), arrays);
    // The order of outputs does.
    let mut two = key();
    two.outputs = vec!["a".into(), "b".into()];
    let mut swapped = key();
    swapped.outputs = vec!["b".into(), "a".into()];
    assert_ne!(two.digest(), swapped.digest());
}

#[test]
fn float_options_survive_the_header_round_trip() {
    // serde_json (without its `float_roundtrip` feature) parses some floats 1 ulp off, e.g. the
    // last two below: the header's key must still match the requested key.
    let (_tmp, cache) = open();
    let arrays = sample();
    for (i, x) in [
        0.1,
        1e-7,
        std::f64::consts::PI,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        0.30000000000000004,
        5e-324,
        8.383658838626809e-78,
        -6.801672438380202e47,
    ]
    .into_iter()
    .enumerate()
    {
        let k = CacheKey {
            encoder_options: json!({"x": x, "i": i}),
            ..key()
        };
        cache.store(&k, &refs(&arrays)).unwrap();
        assert_eq!(loaded(cache.load(&k).unwrap()), arrays, "{x}");
    }
}

/// Stores the sample, returns the file's bytes and path.
fn stored(cache: &Cache) -> (Vec<u8>, PathBuf) {
    let info = cache.store(&key(), &refs(&sample())).unwrap();
    (fs::read(&info.path).unwrap(), info.path)
}

#[test]
fn truncation_anywhere_is_invalid_then_missing() {
    let (_tmp, cache) = open();
    let (file, path) = stored(&cache);
    for len in 0..file.len() {
        fs::write(&path, &file[..len]).unwrap();
        let reason = invalid_reason(cache.load(&key()).unwrap());
        assert!(!reason.is_empty());
        assert!(!path.exists(), "truncated to {len}: not removed");
        assert_missing(&cache, &key());
    }
    // Extra bytes at the end are also rejected.
    let mut longer = file.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    invalid_reason(cache.load(&key()).unwrap());
    // And the file is rewritten by the next store.
    cache.store(&key(), &refs(&sample())).unwrap();
    assert_eq!(loaded(cache.load(&key()).unwrap()), sample());
}

#[test]
fn a_flipped_bit_in_the_payload_is_invalid() {
    let (_tmp, cache) = open();
    let (mut file, path) = stored(&cache);
    let last = file.len() - 1;
    file[last] ^= 0x10;
    fs::write(&path, &file).unwrap();
    let reason = invalid_reason(cache.load(&key()).unwrap());
    assert!(reason.contains("SHA-256"), "{reason}");
    assert_missing(&cache, &key());
}

#[test]
fn every_single_bit_flip_is_invalid_or_harmless() {
    let (_tmp, cache) = open();
    let (file, path) = stored(&cache);
    let original = sample();
    let mut invalid = 0;
    for i in 0..file.len() {
        for bit in 0..8 {
            let mut corrupt = file.clone();
            corrupt[i] ^= 1 << bit;
            fs::write(&path, &corrupt).unwrap();
            match cache.load(&key()).unwrap() {
                LoadOutcome::Invalid { .. } => invalid += 1,
                LoadOutcome::Loaded(arrays) => {
                    assert_eq!(arrays, original, "byte {i} bit {bit} loaded different data")
                }
                LoadOutcome::Missing => panic!("byte {i} bit {bit}: Missing"),
            }
        }
    }
    // A flip can only be harmless in JSON syntax that does not change the header's meaning.
    assert!(invalid > file.len() * 8 * 9 / 10, "{invalid}");
}

#[test]
fn wrong_magic_is_invalid() {
    let (_tmp, cache) = open();
    let (mut file, path) = stored(&cache);
    file[..8].copy_from_slice(b"VIRBFC02");
    fs::write(&path, &file).unwrap();
    let reason = invalid_reason(cache.load(&key()).unwrap());
    assert!(reason.contains("magic"), "{reason}");
    assert_missing(&cache, &key());
}

#[test]
fn a_file_for_another_key_at_this_name_is_invalid() {
    let (_tmp, cache) = open();
    let other = CacheKey {
        split: "test".into(),
        ..key()
    };
    let info = cache.store(&other, &refs(&sample())).unwrap();
    fs::copy(&info.path, cache.path_for(&key())).unwrap();
    let reason = invalid_reason(cache.load(&key()).unwrap());
    assert!(reason.contains("different key"), "{reason}");
    assert_missing(&cache, &key());
    assert_eq!(loaded(cache.load(&other).unwrap()), sample());
}

#[test]
fn inconsistent_arrays_are_rejected_and_leave_nothing() {
    let (_tmp, cache) = open();
    let bytes = [0u8; 12];
    let cases: [(&str, ArrayRef<'_>, Option<ArrayRef<'_>>); 4] = [
        (
            "needs",
            ArrayRef {
                name: "f",
                dtype: DType::F32,
                shape: &[2, 2],
                bytes: &bytes,
            },
            None,
        ),
        (
            "negative",
            ArrayRef {
                name: "f",
                dtype: DType::U8,
                shape: &[-1, 12],
                bytes: &bytes,
            },
            None,
        ),
        (
            "empty",
            ArrayRef {
                name: "",
                dtype: DType::U8,
                shape: &[12],
                bytes: &bytes,
            },
            None,
        ),
        (
            "same name",
            ArrayRef {
                name: "f",
                dtype: DType::U8,
                shape: &[12],
                bytes: &bytes,
            },
            Some(ArrayRef {
                name: "f",
                dtype: DType::F32,
                shape: &[3],
                bytes: &bytes,
            }),
        ),
    ];
    for (expected, a, b) in cases {
        let arrays: Vec<ArrayRef<'_>> = std::iter::once(a).chain(b).collect();
        match cache.store(&key(), &arrays) {
            Err(e @ CacheError::InvalidArray { .. }) => {
                assert!(e.to_string().contains(expected), "{e}")
            }
            other => panic!("expected InvalidArray, got {other:?}"),
        }
    }
    assert_eq!(file_names(cache.dir()), ["CACHEDIR.TAG"]);
}

#[test]
fn leftover_temp_files_are_ignored_and_cleaned_when_stale() {
    let (_tmp, cache) = open();
    let (file, path) = stored(&cache);
    // A store that crashed before its rename: a complete temp file, no cache file.
    fs::remove_file(&path).unwrap();
    let digest = key().digest();
    let stale = cache.dir().join(format!(".tmp-999999-0-{digest}"));
    let fresh = cache.dir().join(format!(".tmp-999999-1-{digest}"));
    fs::write(&stale, &file).unwrap();
    fs::write(&fresh, &file[..10]).unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    assert_missing(&cache, &key());
    assert_eq!(cache.usage().unwrap(), Usage::default());
    let removed = cache.clean_stale_temps(Duration::from_secs(600)).unwrap();
    assert_eq!(
        removed,
        Usage {
            files: 1,
            bytes: file.len() as u64
        }
    );
    assert!(!stale.exists());
    assert!(
        fresh.exists(),
        "a fresh temp file may belong to a running store"
    );
    // A store in this state works and still leaves the other writer's file alone.
    cache.store(&key(), &refs(&sample())).unwrap();
    assert_eq!(loaded(cache.load(&key()).unwrap()), sample());
    assert!(fresh.exists());
    assert_eq!(cache.usage().unwrap().files, 1);
}

#[test]
fn clear_removes_only_cache_and_temp_files() {
    let (_tmp, cache) = open();
    let (file, _) = stored(&cache);
    let temp = cache.dir().join(format!(".tmp-1-2-{}", key().digest()));
    fs::write(&temp, b"partial").unwrap();
    fs::write(cache.dir().join("notes.txt"), b"mine").unwrap();
    fs::write(cache.dir().join("README.vfc"), b"not a digest").unwrap();
    let removed = cache.clear().unwrap();
    assert_eq!(
        removed,
        Usage {
            files: 2,
            bytes: file.len() as u64 + 7
        }
    );
    assert_eq!(
        file_names(cache.dir()),
        ["CACHEDIR.TAG", "README.vfc", "notes.txt"]
    );
    assert_missing(&cache, &key());
    assert_eq!(cache.usage().unwrap(), Usage::default());
}

#[test]
fn open_tags_the_folder_and_is_idempotent() {
    let (tmp, cache) = open();
    let tag = fs::read_to_string(cache.dir().join("CACHEDIR.TAG")).unwrap();
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
    fs::write(cache.dir().join("CACHEDIR.TAG"), &tag).unwrap();
    let again = Cache::open(tmp.path().join("features")).unwrap();
    assert_eq!(again.dir(), cache.dir());
}

#[test]
fn write_errors_name_the_file_and_the_way_out() {
    let (tmp, cache) = open();
    fs::remove_dir_all(tmp.path().join("features")).unwrap();
    let err = cache.store(&key(), &refs(&sample())).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, CacheError::Write { .. }), "{err:?}");
    assert!(message.contains(&key().digest()), "{message}");
    assert!(message.contains("--no-cache"), "{message}");
    assert_missing(&cache, &key());
    assert!(matches!(cache.usage(), Err(CacheError::ListDir { .. })));
}

#[test]
fn concurrent_stores_of_one_key_never_expose_a_partial_file() {
    let (_tmp, cache) = open();
    let arrays = vec![Array {
        name: "features".into(),
        dtype: DType::F16,
        shape: vec![256, 1024],
        bytes: noise(256 * 1024 * 2, 3),
    }];
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..10 {
                    cache.store(&key(), &refs(&arrays)).unwrap();
                }
            });
        }
        for _ in 0..30 {
            match cache.load(&key()).unwrap() {
                LoadOutcome::Loaded(back) => assert_eq!(back, arrays),
                LoadOutcome::Missing => {}
                invalid => panic!("{invalid:?}"),
            }
        }
    });
    assert_eq!(loaded(cache.load(&key()).unwrap()), arrays);
    assert!(temp_names(cache.dir()).is_empty());
}

/// Set for the child processes of [`killed_writers_never_leave_a_corrupt_file`].
const WRITER_DIR: &str = "VIRB_FEATURE_CACHE_TEST_WRITER_DIR";

fn big() -> Vec<Array> {
    vec![
        Array {
            name: "features".into(),
            dtype: DType::F16,
            shape: vec![2048, 1024],
            bytes: noise(2048 * 1024 * 2, 5),
        },
        Array {
            name: "labels".into(),
            dtype: DType::I64,
            shape: vec![2048],
            bytes: noise(2048 * 8, 6),
        },
    ]
}

/// Stores one key over and over until killed (or for 30 s); does nothing unless run as a child
/// of [`killed_writers_never_leave_a_corrupt_file`].
#[test]
#[ignore = "a child process of killed_writers_never_leave_a_corrupt_file"]
fn writer_child() {
    let Some(dir) = std::env::var_os(WRITER_DIR) else {
        return;
    };
    let cache = Cache::open(PathBuf::from(dir)).unwrap();
    let arrays = big();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < until {
        cache.store(&key(), &refs(&arrays)).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn killed_writers_never_leave_a_corrupt_file() {
    use std::process::{Command, Stdio};
    use std::time::Instant;

    let (_tmp, cache) = open();
    let arrays = big();
    let exe = std::env::current_exe().unwrap();
    let mut loads = [0usize; 2];
    for round in 0..4u64 {
        // Two processes storing the same key, killed with SIGKILL at an arbitrary moment.
        let mut children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args(["writer_child", "--exact", "--ignored", "--test-threads=1"])
                    .env(WRITER_DIR, cache.dir())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let until = Instant::now() + Duration::from_millis(400 + 150 * round);
        while Instant::now() < until {
            match cache.load(&key()).unwrap() {
                LoadOutcome::Loaded(back) => {
                    assert_eq!(back, arrays);
                    loads[0] += 1;
                }
                LoadOutcome::Missing => loads[1] += 1,
                invalid => panic!("round {round}: {invalid:?}"),
            }
        }
        for child in &mut children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        match cache.load(&key()).unwrap() {
            LoadOutcome::Loaded(back) => assert_eq!(back, arrays),
            LoadOutcome::Missing => {}
            invalid => panic!("after kill, round {round}: {invalid:?}"),
        }
        assert!(cache.usage().unwrap().files <= 1);
    }
    eprintln!(
        "loaded {} times, missing {} times, {} temp files left by killed writers",
        loads[0],
        loads[1],
        temp_names(cache.dir()).len()
    );
    std::thread::sleep(Duration::from_millis(20));
    cache.clean_stale_temps(Duration::ZERO).unwrap();
    assert!(temp_names(cache.dir()).is_empty());
}
