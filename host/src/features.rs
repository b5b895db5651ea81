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
    abi_stable::std_types::{RSlice, RString},
    DatasetBox, EncoderBox, TensorRef,
};

/// Encoded features of one split, served by index.
pub trait FeatureStore {
    /// Number of samples.
    fn len(&self) -> i64;
    /// Per-sample shapes by output name.
    fn shapes(&self) -> Vec<(String, Vec<i64>)>;
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

/// Time spent encoding a split.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeTimings {
    /// Seconds of decoding and preprocessing (summed over batches; overlaps encoding).
    pub decode_s: f64,
    /// Seconds in the encoder's forward pass.
    pub encode_s: f64,
    /// Wall-clock seconds for the split.
    pub wall_s: f64,
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
                let batch = read_batch(dataset, first, last, frames, pool, &meta.source).map(
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
                let mut x = batch.inputs.f_to_device(encoder_device)?;
                if req.frames > 1 {
                    let s = x.size();
                    x = x.f_reshape([s[0] * s[1], s[2], s[3], s[4]])?;
                }
                let outs = plugin(
                    req.encoder
                        .forward(TensorRef::of(&x), RSlice::from_slice(req.outputs)),
                )?;
                let mut outs: Vec<(String, Tensor)> = outs
                    .into_iter()
                    .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
                    .collect();
                for (i, wanted) in req.outputs.iter().enumerate() {
                    let pos = outs
                        .iter()
                        .position(|(n, _)| n == wanted.as_str())
                        .ok_or_else(|| {
                            JobError::Other(format!("the encoder returned no `{wanted}` output"))
                        })?;
                    let (_, mut t) = outs.swap_remove(pos);
                    if req.frames > 1 {
                        let mut shape = vec![b, req.frames as i64];
                        shape.extend_from_slice(&t.size()[1..]);
                        t = t.f_reshape(shape.as_slice())?;
                    }
                    if t.size().first() != Some(&b) {
                        return Err(JobError::Other(format!(
                            "the encoder's `{wanted}` output has shape {:?} for a batch of {b}",
                            t.size()
                        )));
                    }
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

fn read_batch(
    dataset: &DatasetBox,
    first: usize,
    last: usize,
    frames: u32,
    pool: &rayon::ThreadPool,
    source: &RString,
) -> Result<(Tensor, Tensor), JobError> {
    let samples: Vec<_> = pool.install(|| {
        (first..last)
            .into_par_iter()
            .map(|i| plugin(dataset.get(i as u64)))
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
                first + k,
                if frames > 1 { format!("[{frames}, 3, H, W]") } else { "[3, H, W]".to_string() }
            )));
        }
    }
    Ok((Tensor::f_stack(&inputs, 0)?, Tensor::f_stack(&targets, 0)?))
}
