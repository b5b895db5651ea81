//! The on-disk feature cache as the host uses it: the key of one split's features, and reading
//! and writing a [`MemoryStore`] through `virb-feature-cache` (verified; a corrupt file is never
//! used).
use crate::encode::EncodeTimings;
use crate::error::JobError;
use crate::store::{dtype_of, kind_of, FeatureStore, MemoryStore};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The cache key of one split's features: the encoder (plugin, version, options, weights hash),
/// the task (plugin, version), the split, the preprocessing and a fingerprint of the data.
#[allow(clippy::too_many_arguments)]
pub fn cache_key(
    exp: &crate::config::Experiment,
    entry: &crate::plugins::EncoderEntry,
    weights_sha256: &str,
    task: &crate::plugins::TaskEntry,
    split: virb_plugin_api::Split,
    job: &crate::config::JobConfig,
    outputs: &[String],
    meta: &virb_plugin_api::DatasetMeta,
) -> virb_feature_cache::CacheKey {
    let source = meta.source.to_string();
    // Modification time and size of the split's source: rewriting a list file or adding or
    // removing files in a split folder changes the key.
    let stamp = std::fs::metadata(&source)
        .ok()
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{mtime}:{}", m.len())
        })
        .unwrap_or_default();
    let abs = std::fs::canonicalize(&source)
        .map(|p| p.display().to_string())
        .unwrap_or(source);
    let classes: Vec<String> = meta.class_names.iter().map(|c| c.to_string()).collect();
    let fingerprint = serde_json::json!({
        "source": abs, "stamp": stamp, "len": meta.len, "num_outputs": meta.num_outputs,
        "classes": classes,
    });
    virb_feature_cache::CacheKey {
        encoder_plugin: entry.plugin.name.clone(),
        encoder_plugin_version: entry.plugin.version.clone(),
        encoder: exp.encoder.clone(),
        encoder_options: exp.options.clone(),
        weights_sha256: weights_sha256.to_string(),
        task: task.info.name.to_string(),
        task_plugin: task.plugin.name.clone(),
        task_plugin_version: task.plugin.version.clone(),
        split: split.as_str().to_string(),
        image_size: job.image_size,
        frames: task.info.frames.max(1),
        outputs: outputs.to_vec(),
        dataset_fingerprint: crate::hashing::hash_json(&fingerprint),
    }
}

use crate::store::TARGETS;
/// The input height and width the features were computed at (`[2]` int64).
const INPUT_HW: &str = "__input_hw__";

/// Reads a split's features from the cache; `None` when absent or unusable (a corrupt file is
/// reported, removed and re-encoded by the caller, never used).
pub fn load_cached(
    cache: &virb_feature_cache::Cache,
    key: &virb_feature_cache::CacheKey,
    device: Device,
    image_size: u32,
) -> Result<Option<(MemoryStore, EncodeTimings)>, JobError> {
    let start = Instant::now();
    let arrays = match cache.load(key) {
        Ok(virb_feature_cache::LoadOutcome::Loaded(a)) => a,
        Ok(virb_feature_cache::LoadOutcome::Missing) => return Ok(None),
        Ok(virb_feature_cache::LoadOutcome::Invalid { path, reason }) => {
            eprintln!(
                "feature cache: {} is unusable ({reason}); re-encoding",
                path.display()
            );
            return Ok(None);
        }
        Err(e) => {
            eprintln!("feature cache: {e}; re-encoding");
            return Ok(None);
        }
    };
    let mut features = Vec::new();
    let mut targets = None;
    // Caches written before the input size was recorded hold square `image_size` inputs.
    let mut input_hw = (image_size, image_size);
    for a in arrays {
        let t = Tensor::f_from_data_size(&a.bytes, &a.shape, kind_of(a.dtype))?;
        if a.name == INPUT_HW {
            let hw = Vec::<i64>::try_from(&t)?;
            if let [h, w] = hw[..] {
                input_hw = (h as u32, w as u32);
            }
        } else if a.name == TARGETS {
            targets = Some(t.f_to_device(device)?);
        } else {
            features.push((a.name, t.f_to_device(device)?));
        }
    }
    let Some(targets) = targets else {
        eprintln!(
            "feature cache: {} has no targets; re-encoding",
            key.describe()
        );
        return Ok(None);
    };
    let store = match MemoryStore::new(features, targets, input_hw) {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "feature cache: {} has inconsistent sizes ({e}); re-encoding",
                key.describe()
            );
            return Ok(None);
        }
    };
    let len = store.len();
    let wall_s = start.elapsed().as_secs_f64();
    eprintln!(
        "{} {}: {len} samples from the feature cache in {wall_s:.2} s",
        key.task, key.split
    );
    Ok(Some((
        store,
        EncodeTimings {
            wall_s,
            from_cache: true,
            ..EncodeTimings::default()
        },
    )))
}

/// Writes a split's features to the cache; a failure is reported and otherwise ignored (the
/// run goes on without caching).
pub fn store_cached(
    cache: &virb_feature_cache::Cache,
    key: &virb_feature_cache::CacheKey,
    store: &MemoryStore,
) {
    let outcome = (|| -> Result<(), String> {
        let mut owned: Vec<(String, virb_feature_cache::DType, Vec<i64>, Vec<u8>)> = Vec::new();
        let (h, w) = store.input_hw();
        let hw = Tensor::from_slice(&[i64::from(h), i64::from(w)]);
        let all = store
            .features()
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .chain([(TARGETS, store.targets()), (INPUT_HW, &hw)]);
        for (name, t) in all {
            let dtype = dtype_of(t.kind())
                .ok_or_else(|| format!("`{name}` has an uncacheable type {:?}", t.kind()))?;
            let t = t
                .f_to_device(Device::Cpu)
                .and_then(|t| t.f_contiguous())
                .map_err(|e| e.to_string())?;
            let numel = t.numel();
            let mut bytes = vec![0u8; numel * dtype.size()];
            t.f_copy_data_u8(&mut bytes, numel)
                .map_err(|e| e.to_string())?;
            owned.push((name.to_string(), dtype, t.size(), bytes));
        }
        let refs: Vec<virb_feature_cache::ArrayRef<'_>> = owned
            .iter()
            .map(|(name, dtype, shape, bytes)| virb_feature_cache::ArrayRef {
                name,
                dtype: *dtype,
                shape,
                bytes,
            })
            .collect();
        cache
            .store(key, &refs)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })();
    if let Err(e) = outcome {
        eprintln!("warning: feature cache: not cached: {e}");
    }
}

/// The input size of every sample, as a chunked file stores it (`[2]` int64 per sample).
const CHUNKED_INPUT_HW: &str = "__input_hw__";

/// Encodes a split straight into the chunked cache file of `key` (nothing is held in memory but
/// the batch being written), then maps and verifies it.
pub fn encode_to_chunked(
    cache: &virb_feature_cache::Cache,
    key: &virb_feature_cache::CacheKey,
    dataset: &virb_plugin_api::DatasetBox,
    req: &crate::encode::EncodeRequest<'_>,
    live: &crate::store::LiveStore<'_>,
) -> Result<(crate::store::MappedStore, EncodeTimings), JobError> {
    use virb_feature_cache::{ArraySpec, DType};
    let mut arrays: Vec<ArraySpec> = live
        .shapes()
        .into_iter()
        .map(|(name, sample_shape)| ArraySpec {
            name,
            dtype: DType::F16,
            sample_shape,
        })
        .collect();
    let (target_kind, target_shape) = live.target_spec();
    let target_dtype = dtype_of(target_kind).ok_or_else(|| {
        JobError::Other(format!(
            "the task's targets are {target_kind:?}, which the feature cache cannot hold"
        ))
    })?;
    arrays.push(ArraySpec {
        name: TARGETS.into(),
        dtype: target_dtype,
        sample_shape: target_shape,
    });
    arrays.push(ArraySpec {
        name: CHUNKED_INPUT_HW.into(),
        dtype: DType::I64,
        sample_shape: vec![2],
    });
    let cache_err =
        |e: virb_feature_cache::CacheError| JobError::Other(format!("feature cache: {e}"));
    let mut writer = cache
        .create_chunked(key, &arrays, live.len() as u64)
        .map_err(cache_err)?;
    let bytes_of = |t: &Tensor, kind: Kind| -> Result<Vec<u8>, JobError> {
        let t = t
            .f_to_device(Device::Cpu)?
            .f_to_kind(kind)?
            .f_contiguous()?;
        let numel = t.numel();
        let mut out = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut out, numel)?;
        Ok(out)
    };
    let (timings, input_hw) =
        crate::encode::encode_split_into(dataset, req, &mut |outs, targets| {
            let rows = targets.size().first().copied().unwrap_or(0);
            let mut data: Vec<Vec<u8>> = Vec::with_capacity(outs.len() + 2);
            for o in outs {
                data.push(bytes_of(o, Kind::Half)?);
            }
            if targets.kind() != target_kind {
                return Err(JobError::Other(format!(
                    "the task's targets changed type from {target_kind:?} to {:?} within a split",
                    targets.kind()
                )));
            }
            data.push(bytes_of(targets, target_kind)?);
            // Every sample of a cached split has one input size (else encode_split_into stops).
            data.push(
                std::iter::repeat_n(input_hw_bytes(live.input_hw()), rows as usize)
                    .flatten()
                    .collect(),
            );
            let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
            writer.append(rows as u64, &slices).map_err(cache_err)
        })?;
    let path = writer.finish().map_err(cache_err)?;
    match cache.open_chunked(key).map_err(cache_err)? {
        virb_feature_cache::ChunkedOutcome::Loaded(file) => {
            Ok((crate::store::MappedStore::new(file, input_hw)?, timings))
        }
        _ => Err(JobError::Other(format!(
            "feature cache: {} did not verify right after it was written; check the disk",
            path.display()
        ))),
    }
}

fn input_hw_bytes((h, w): (u32, u32)) -> Vec<u8> {
    let mut v = i64::from(h).to_le_bytes().to_vec();
    v.extend_from_slice(&i64::from(w).to_le_bytes());
    v
}

/// A split's chunked cache file, mapped and verified, if the cache has one for `key` (a corrupt
/// file is reported, removed and re-encoded by the caller, never used).
pub fn load_chunked(
    cache: &virb_feature_cache::Cache,
    key: &virb_feature_cache::CacheKey,
) -> Result<Option<crate::store::MappedStore>, JobError> {
    let file = match cache.open_chunked(key) {
        Ok(virb_feature_cache::ChunkedOutcome::Loaded(file)) => file,
        Ok(virb_feature_cache::ChunkedOutcome::Missing) => return Ok(None),
        Ok(virb_feature_cache::ChunkedOutcome::Invalid { path, reason }) => {
            eprintln!(
                "feature cache: {} is unusable ({reason}); re-encoding",
                path.display()
            );
            return Ok(None);
        }
        Err(e) => {
            eprintln!("feature cache: {e}; re-encoding");
            return Ok(None);
        }
    };
    let hw_index = file
        .arrays()
        .iter()
        .position(|a| a.name == CHUNKED_INPUT_HW);
    let mut hw = (0u32, 0u32);
    if let (Some(i), true) = (hw_index, file.samples() > 0) {
        let mut b = [0u8; 16];
        if file.read_rows(i, &[0], &mut b).is_ok() {
            let h = i64::from_le_bytes(b[..8].try_into().unwrap_or_default());
            let w = i64::from_le_bytes(b[8..].try_into().unwrap_or_default());
            hw = (h as u32, w as u32);
        }
    }
    eprintln!(
        "{} {}: {} samples from the feature cache (memory-mapped, verified)",
        key.task,
        key.split,
        file.samples()
    );
    Ok(Some(crate::store::MappedStore::new(file, hw)?))
}
