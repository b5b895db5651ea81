//! The on-disk feature cache as the host uses it: the key of one split's features, and reading
//! and writing a [`MemoryStore`] through `virb-feature-cache` (verified; a corrupt file is never
//! used).
use crate::encode::EncodeTimings;
use crate::error::JobError;
use crate::store::{FeatureStore, MemoryStore};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn dtype_of(kind: Kind) -> Option<virb_feature_cache::DType> {
    use virb_feature_cache::DType;
    match kind {
        Kind::Half => Some(DType::F16),
        Kind::Float => Some(DType::F32),
        Kind::Int64 => Some(DType::I64),
        Kind::Uint8 => Some(DType::U8),
        _ => None,
    }
}

fn kind_of(dtype: virb_feature_cache::DType) -> Kind {
    use virb_feature_cache::DType;
    match dtype {
        DType::F16 => Kind::Half,
        DType::F32 => Kind::Float,
        DType::I64 => Kind::Int64,
        DType::U8 => Kind::Uint8,
    }
}

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
        dataset_fingerprint: crate::results::hash_json(&fingerprint),
    }
}

const TARGETS: &str = "__targets__";
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
