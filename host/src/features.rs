//! Encoding a split once and keeping its features.
//!
//! Images are decoded in parallel (a rayon pool calling the task's data set) one batch ahead of
//! the encoder, so decoding overlaps encoding. Features are kept as float16 (as ViRB does) behind
//! [`FeatureStore`], which is all the trainer sees, so other stores (on-disk, memory-mapped,
//! per-device) can stand in.
use crate::error::{plugin, JobError};
use crate::progress::Progress;
use rayon::prelude::*;
use std::{sync::mpsc, time::Instant};
use tch::{Device, Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::{RSlice, RString, RVec},
    DatasetBox, EncoderBox, NamedTensor, TensorRef,
};

/// Encoded features of one split, served by index.
pub trait FeatureStore {
    /// Number of samples.
    fn len(&self) -> i64;
    /// Per-sample shapes by output name.
    fn shapes(&self) -> Vec<(String, Vec<i64>)>;
    /// The same, as a head request describes its inputs.
    fn feature_specs(&self) -> Vec<virb_plugin_api::FeatureSpec> {
        self.shapes()
            .into_iter()
            .map(|(name, shape)| virb_plugin_api::FeatureSpec {
                name: name.as_str().into(),
                shape: shape.into(),
            })
            .collect()
    }
    /// The features (float32, on `device`) and targets of the samples at `indices`.
    fn gather(
        &self,
        indices: &Tensor,
        device: Device,
    ) -> Result<(Vec<(String, Tensor)>, Tensor), JobError>;
}

/// Features held in memory (host or device), float16.
pub struct MemoryStore {
    features: Vec<(String, Tensor)>,
    targets: Tensor,
    len: i64,
}

impl FeatureStore for MemoryStore {
    fn len(&self) -> i64 {
        self.len
    }

    fn shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.features
            .iter()
            .map(|(n, t)| (n.clone(), t.size()[1..].to_vec()))
            .collect()
    }

    fn gather(
        &self,
        indices: &Tensor,
        device: Device,
    ) -> Result<(Vec<(String, Tensor)>, Tensor), JobError> {
        let mut out = Vec::with_capacity(self.features.len());
        for (name, t) in &self.features {
            let idx = indices.f_to_device(t.device())?;
            let x = t
                .f_index_select(0, &idx)?
                .f_to_device(device)?
                .f_to_kind(Kind::Float)?;
            out.push((name.clone(), x));
        }
        let idx = indices.f_to_device(self.targets.device())?;
        let y = self.targets.f_index_select(0, &idx)?.f_to_device(device)?;
        Ok((out, y))
    }
}

impl MemoryStore {
    /// The samples at `indices` (a new store).
    pub fn subset(&self, indices: &Tensor) -> Result<MemoryStore, JobError> {
        let mut features = Vec::with_capacity(self.features.len());
        for (name, t) in &self.features {
            let idx = indices.f_to_device(t.device())?;
            features.push((name.clone(), t.f_index_select(0, &idx)?));
        }
        let idx = indices.f_to_device(self.targets.device())?;
        Ok(MemoryStore {
            features,
            targets: self.targets.f_index_select(0, &idx)?,
            len: indices.size().first().copied().unwrap_or(0),
        })
    }
}

/// A training split divided into what trains the heads and what validates them.
pub struct ValidationSplit {
    /// What the heads train on.
    pub train: MemoryStore,
    /// What they are validated on.
    pub val: MemoryStore,
    /// The fraction asked for.
    pub fraction: f64,
    /// Whether the split was stratified by class.
    pub stratified: bool,
}

/// Holds out `fraction` of `store` for validation, chosen with `seed` (the same seed gives the
/// same split). With `by_class` and scalar integer targets, each class gives its own share
/// (at least one sample from every class that has two or more), so rare classes are in both.
pub fn split_validation(
    store: &MemoryStore,
    fraction: f64,
    seed: u64,
    by_class: bool,
) -> Result<ValidationSplit, JobError> {
    let n = store.len;
    tch::manual_seed((seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 1) as i64);
    let perm = Vec::<i64>::try_from(&Tensor::f_randperm(n, (Kind::Int64, Device::Cpu))?)?;
    let targets = store.targets.f_to_device(Device::Cpu)?;
    let stratified = by_class && targets.dim() == 1 && targets.kind() == Kind::Int64;
    let mut val = Vec::new();
    let mut train = Vec::new();
    if stratified {
        let labels = Vec::<i64>::try_from(&targets)?;
        let mut by: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
        for &i in &perm {
            by.entry(labels[i as usize]).or_default().push(i);
        }
        for members in by.values() {
            let mut k = (members.len() as f64 * fraction).round() as usize;
            if members.len() >= 2 {
                k = k.clamp(1, members.len() - 1);
            } else {
                k = 0;
            }
            val.extend_from_slice(&members[..k]);
            train.extend_from_slice(&members[k..]);
        }
    } else {
        // At least one sample on each side when there are two or more (else the error below).
        let k = ((n as f64 * fraction).round() as usize).min((n as usize).saturating_sub(1));
        let k = k.max(usize::from(n >= 2));
        val.extend_from_slice(&perm[..k]);
        train.extend_from_slice(&perm[k..]);
    }
    if val.is_empty() || train.is_empty() {
        return Err(JobError::Other(format!(
            "validation_fraction {fraction} of {n} training samples leaves {} for training and {} for validation; use more data or another fraction",
            train.len(),
            val.len()
        )));
    }
    val.sort_unstable();
    train.sort_unstable();
    Ok(ValidationSplit {
        train: store.subset(&Tensor::from_slice(&train))?,
        val: store.subset(&Tensor::from_slice(&val))?,
        fraction,
        stratified,
    })
}

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

/// Reads a split's features from the cache; `None` when absent or unusable (a corrupt file is
/// reported, removed and re-encoded by the caller, never used).
pub fn load_cached(
    cache: &virb_feature_cache::Cache,
    key: &virb_feature_cache::CacheKey,
    device: Device,
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
    for a in arrays {
        let t =
            Tensor::f_from_data_size(&a.bytes, &a.shape, kind_of(a.dtype))?.f_to_device(device)?;
        if a.name == TARGETS {
            targets = Some(t);
        } else {
            features.push((a.name, t));
        }
    }
    let Some(targets) = targets else {
        eprintln!(
            "feature cache: {} has no targets; re-encoding",
            key.describe()
        );
        return Ok(None);
    };
    let len = targets.size().first().copied().unwrap_or(0);
    if features.iter().any(|(_, t)| t.size().first() != Some(&len)) {
        eprintln!(
            "feature cache: {} has inconsistent sizes; re-encoding",
            key.describe()
        );
        return Ok(None);
    }
    let wall_s = start.elapsed().as_secs_f64();
    eprintln!(
        "{} {}: {len} samples from the feature cache in {wall_s:.2} s",
        key.task, key.split
    );
    Ok(Some((
        MemoryStore {
            features,
            targets,
            len,
        },
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
        let all = store
            .features
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .chain(std::iter::once((TARGETS, &store.targets)));
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

/// Time spent encoding a split.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeTimings {
    /// Seconds of decoding and preprocessing (summed over batches; overlaps encoding).
    pub decode_s: f64,
    /// Seconds in the encoder's forward pass.
    pub encode_s: f64,
    /// Wall-clock seconds for the split.
    pub wall_s: f64,
    /// Whether the features were read from the on-disk cache instead.
    pub from_cache: bool,
}

impl std::ops::Add for EncodeTimings {
    type Output = EncodeTimings;

    /// Both splits' times; from the cache only if both came from it.
    fn add(self, other: EncodeTimings) -> EncodeTimings {
        EncodeTimings {
            decode_s: self.decode_s + other.decode_s,
            encode_s: self.encode_s + other.encode_s,
            wall_s: self.wall_s + other.wall_s,
            from_cache: self.from_cache && other.from_cache,
        }
    }
}

struct Batch {
    inputs: Tensor,
    targets: Tensor,
    decode_s: f64,
}

/// Everything `encode_split` needs besides the data set.
pub struct EncodeRequest<'a> {
    /// The encoder.
    pub encoder: &'a EncoderBox,
    /// Outputs to keep.
    pub outputs: &'a [RString],
    /// Frames per sample.
    pub frames: u32,
    /// Samples per batch.
    pub batch_size: usize,
    /// Decoding threads.
    pub pool: &'a rayon::ThreadPool,
    /// Where to keep the features.
    pub store_device: Device,
    /// Progress label.
    pub label: String,
}

/// Runs `forward` on a batch of images `[B, 3, H, W]` (or clips `[B, T, 3, H, W]`, encoded
/// frame by frame) and returns the `outputs` in order, each `[B, ...]` (or `[B, T, ...]`).
pub fn encode_batch(
    x: &Tensor,
    frames: u32,
    outputs: &[RString],
    forward: impl FnOnce(&Tensor) -> Result<RVec<NamedTensor>, JobError>,
) -> Result<Vec<Tensor>, JobError> {
    let b = x.size()[0];
    let outs = if frames > 1 {
        let s = x.size();
        forward(&x.f_reshape([s[0] * s[1], s[2], s[3], s[4]])?)?
    } else {
        forward(x)?
    };
    let mut outs: Vec<(String, Tensor)> = outs
        .into_iter()
        .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
        .collect();
    let mut picked = Vec::with_capacity(outputs.len());
    for wanted in outputs {
        let pos = outs
            .iter()
            .position(|(n, _)| n == wanted.as_str())
            .ok_or_else(|| JobError::Other(format!("the encoder returned no `{wanted}` output")))?;
        let (_, mut t) = outs.swap_remove(pos);
        if frames > 1 {
            let mut shape = vec![b, frames as i64];
            shape.extend_from_slice(&t.size()[1..]);
            t = t.f_reshape(shape.as_slice())?;
        }
        if t.size().first() != Some(&b) {
            return Err(JobError::Other(format!(
                "the encoder's `{wanted}` output has shape {:?} for a batch of {b}",
                t.size()
            )));
        }
        picked.push(t);
    }
    Ok(picked)
}

/// Decodes and encodes every sample of `dataset`, in order.
pub fn encode_split(
    dataset: &DatasetBox,
    req: &EncodeRequest<'_>,
) -> Result<(MemoryStore, EncodeTimings), JobError> {
    let meta = plugin(dataset.meta())?;
    let n = meta.len as usize;
    if n == 0 {
        return Err(JobError::Other(format!("split {} is empty", meta.source)));
    }
    let encoder_device = virb_plugin_api::parse_device(plugin(req.encoder.device())?.as_str())?;
    let start = Instant::now();
    let mut timings = EncodeTimings::default();
    let mut progress = Progress::new(req.label.clone(), n as u64);
    let (tx, rx) = mpsc::sync_channel::<Result<Batch, JobError>>(2);
    let bs = req.batch_size.max(1);
    let mut per_output: Vec<Vec<Tensor>> = (0..req.outputs.len()).map(|_| Vec::new()).collect();
    let mut targets: Vec<Tensor> = Vec::new();
    let (frames, pool) = (req.frames, req.pool);
    let result = std::thread::scope(|scope| -> Result<(), JobError> {
        scope.spawn(move || {
            for first in (0..n).step_by(bs) {
                let t0 = Instant::now();
                let last = (first + bs).min(n);
                let indices: Vec<u64> = (first as u64..last as u64).collect();
                let batch = read_batch(dataset, &indices, frames, pool, &meta.source).map(
                    |(inputs, targets)| Batch {
                        inputs,
                        targets,
                        decode_s: t0.elapsed().as_secs_f64(),
                    },
                );
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        let outcome = (|| {
            for batch in rx.iter() {
                let batch = batch?;
                timings.decode_s += batch.decode_s;
                let t0 = Instant::now();
                let b = batch.inputs.size()[0];
                let x = batch.inputs.f_to_device(encoder_device)?;
                let outs = encode_batch(&x, req.frames, req.outputs, |x| {
                    plugin(
                        req.encoder
                            .forward(TensorRef::of(x), RSlice::from_slice(req.outputs)),
                    )
                })?;
                for (i, t) in outs.into_iter().enumerate() {
                    per_output[i].push(t.f_to_kind(Kind::Half)?.f_to_device(req.store_device)?);
                }
                targets.push(batch.targets.f_to_device(req.store_device)?);
                timings.encode_s += t0.elapsed().as_secs_f64();
                progress.inc(b as u64, "");
            }
            Ok(())
        })();
        // Dropping the receiver stops the producer at its next send.
        drop(rx);
        outcome
    });
    result?;
    let mut features = Vec::with_capacity(req.outputs.len());
    for (name, parts) in req.outputs.iter().zip(per_output) {
        features.push((name.to_string(), Tensor::f_cat(&parts, 0)?));
    }
    let targets = Tensor::f_cat(&targets, 0)?;
    timings.wall_s = start.elapsed().as_secs_f64();
    progress.finish(&format!(
        "{:.1} samples/s",
        n as f64 / timings.wall_s.max(1e-9)
    ));
    Ok((
        MemoryStore {
            features,
            targets,
            len: n as i64,
        },
        timings,
    ))
}

/// Decodes the samples at `indices` in parallel and stacks them: `(inputs, targets)`.
pub fn read_batch(
    dataset: &DatasetBox,
    indices: &[u64],
    frames: u32,
    pool: &rayon::ThreadPool,
    source: &RString,
) -> Result<(Tensor, Tensor), JobError> {
    let samples: Vec<_> = pool.install(|| {
        indices
            .par_iter()
            .map(|&i| plugin(dataset.get(i)))
            .collect::<Result<Vec<_>, JobError>>()
    })?;
    let mut inputs = Vec::with_capacity(samples.len());
    let mut targets = Vec::with_capacity(samples.len());
    for s in samples {
        inputs.push(s.input.into_tch());
        targets.push(s.target.into_tch());
    }
    let expected_rank = if frames > 1 { 4 } else { 3 };
    let shape0 = inputs.first().map(|t| t.size()).unwrap_or_default();
    for (k, t) in inputs.iter().enumerate() {
        let s = t.size();
        if s.len() != expected_rank || s != shape0 || s[expected_rank - 3] != 3 {
            return Err(JobError::Other(format!(
                "sample {} of {source} has input shape {s:?}; expected {} with the same size for every sample",
                indices[k],
                if frames > 1 { format!("[{frames}, 3, H, W]") } else { "[3, H, W]".to_string() }
            )));
        }
    }
    Ok((Tensor::f_stack(&inputs, 0)?, Tensor::f_stack(&targets, 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(labels: &[i64]) -> MemoryStore {
        let n = labels.len() as i64;
        MemoryStore {
            features: vec![(
                "embedding".into(),
                Tensor::arange(n * 2, (Kind::Float, Device::Cpu)).reshape([n, 2]),
            )],
            targets: Tensor::from_slice(labels),
            len: n,
        }
    }

    #[test]
    fn validation_split_is_stratified_seeded_and_refuses_too_little_data() {
        let labels: Vec<i64> = (0..40).map(|i| i % 4).collect();
        let s = split_validation(&store(&labels), 0.25, 7, true).expect("split");
        assert!(s.stratified);
        // 10 per class, a quarter rounded: 3 of each class held out.
        assert_eq!((s.train.len, s.val.len), (28, 12));
        let val = Vec::<i64>::try_from(&s.val.targets).expect("labels");
        for c in 0..4 {
            let k = val.iter().filter(|&&l| l == c).count();
            assert_eq!(k, 3, "class {c}");
        }
        let again = split_validation(&store(&labels), 0.25, 7, true).expect("split");
        assert!(again.val.targets.equal(&s.val.targets));
        let plain = split_validation(&store(&labels), 0.25, 7, false).expect("split");
        assert!(!plain.stratified);
        assert_eq!(plain.val.len, 10);
        // One sample cannot be split: an error, not a panic.
        let err = split_validation(&store(&[0]), 0.5, 0, false)
            .err()
            .expect("error");
        assert!(err.to_string().contains("validation_fraction"), "{err}");
    }
}
