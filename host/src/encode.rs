//! Decoding samples and running the encoder on them: the one place where a data set's samples
//! become encoder outputs, for the feature cache ([`encode_split`]) and for live training
//! ([`crate::store::LiveStore`]).
//!
//! Images are decoded in parallel (a rayon pool calling the task's data set) one batch ahead of
//! the encoder, so decoding overlaps encoding.
use crate::error::{plugin, JobError};
use crate::progress::Progress;
use crate::store::{runs, MemoryStore};
use rayon::prelude::*;
use std::{sync::mpsc, time::Instant};
use tch::{Device, Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::{RSlice, RString, RVec},
    DatasetBox, EncoderBox, NamedTensor, SampleContext, TensorRef,
};

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
    /// Only these samples of the split (a shard); None: all of them.
    pub range: Option<std::ops::Range<usize>>,
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

/// One decoded batch: inputs `[B, 3, H, W]` (or `[B, T, 3, H, W]`), targets, and the seconds
/// decoding took.
pub struct Decoded {
    /// Stacked inputs.
    pub inputs: Tensor,
    /// Stacked targets.
    pub targets: Tensor,
    /// Input height and width.
    pub input_hw: (u32, u32),
    /// Seconds spent decoding (in parallel; summed per batch).
    pub decode_s: f64,
}

/// For a CUDA encoder, the decoded inputs in pinned (page-locked) host memory, done on the
/// decoding thread so that it overlaps the encoder; [`upload`] then copies them asynchronously.
/// On the CPU, unchanged. A failed pin (no pinned memory left) leaves the batch pageable.
pub(crate) fn pinned(
    batches: Result<Vec<Decoded>, JobError>,
    device: Device,
) -> Result<Vec<Decoded>, JobError> {
    if !device.is_cuda() {
        return batches;
    }
    Ok(batches?
        .into_iter()
        .map(|mut d| {
            if let Ok(p) = d.inputs.f_pin_memory(device) {
                d.inputs = p;
            }
            d
        })
        .collect())
}

/// A batch's inputs on the encoder's device: asynchronous from pinned memory on CUDA (the
/// encoder's kernels queue after the copy on the same stream).
pub(crate) fn upload(inputs: &Tensor, device: Device) -> Result<Tensor, tch::TchError> {
    if inputs.device() == device {
        return Ok(inputs.shallow_clone());
    }
    inputs.f_to_device_(device, inputs.kind(), device.is_cuda(), false)
}

/// Decodes the samples at `indices` in parallel and stacks them into batches of equal input
/// size (consecutive samples of one size share a batch): one batch when every sample has the
/// same size.
pub fn decode_batches(
    dataset: &DatasetBox,
    indices: &[u64],
    frames: u32,
    pool: &rayon::ThreadPool,
    source: &RString,
    context: SampleContext,
) -> Result<Vec<Decoded>, JobError> {
    let t0 = Instant::now();
    let samples: Vec<(Tensor, Tensor)> = pool.install(|| {
        indices
            .par_iter()
            .map(|&i| {
                plugin(dataset.get(i, context)).map(|s| (s.input.into_tch(), s.target.into_tch()))
            })
            .collect::<Result<Vec<_>, JobError>>()
    })?;
    let expected_rank = if frames > 1 { 4 } else { 3 };
    let mut sizes = Vec::with_capacity(samples.len());
    for (k, (input, _)) in samples.iter().enumerate() {
        let s = input.size();
        if s.len() != expected_rank || s[expected_rank - 3] != 3 {
            return Err(JobError::Other(format!(
                "sample {} of {source} has input shape {s:?}; expected {}",
                indices[k],
                if frames > 1 {
                    format!("[{frames}, 3, H, W]")
                } else {
                    "[3, H, W]".to_string()
                }
            )));
        }
        sizes.push(s);
    }
    let decode_s = t0.elapsed().as_secs_f64();
    let groups = runs(&sizes, samples.len());
    let share = decode_s / groups.len().max(1) as f64;
    let mut out = Vec::with_capacity(groups.len());
    for range in groups {
        let part = &samples[range.clone()];
        let target_shape = part[0].1.size();
        if let Some(k) = part.iter().position(|(_, t)| t.size() != target_shape) {
            return Err(JobError::Other(format!(
                "sample {} of {source} has a target of shape {:?}, sample {} one of {target_shape:?}, for inputs of the same size; a task's targets must have one shape per input size",
                indices[range.start + k],
                part[k].1.size(),
                indices[range.start]
            )));
        }
        let inputs: Vec<&Tensor> = part.iter().map(|(i, _)| i).collect();
        let targets: Vec<&Tensor> = part.iter().map(|(_, t)| t).collect();
        let s = &sizes[range.start];
        let hw = (s[s.len() - 2] as u32, s[s.len() - 1] as u32);
        out.push(Decoded {
            inputs: Tensor::f_stack(&inputs, 0)?,
            targets: Tensor::f_stack(&targets, 0)?,
            input_hw: hw,
            decode_s: share,
        });
    }
    Ok(out)
}

/// Decodes and encodes every sample of `dataset`, in order, without augmentation, into memory.
/// Every sample must have the same input size (a split whose sizes differ is an error naming two
/// of them; the caller trains such a split live).
pub fn encode_split(
    dataset: &DatasetBox,
    req: &EncodeRequest<'_>,
) -> Result<(MemoryStore, EncodeTimings), JobError> {
    let mut per_output: Vec<Vec<Tensor>> = (0..req.outputs.len()).map(|_| Vec::new()).collect();
    let mut targets: Vec<Tensor> = Vec::new();
    let (timings, input_hw) = encode_split_into(dataset, req, &mut |outs, t| {
        for (i, o) in outs.iter().enumerate() {
            per_output[i].push(o.f_to_device(req.store_device)?);
        }
        targets.push(t.f_to_device(req.store_device)?);
        Ok(())
    })?;
    let mut features = Vec::with_capacity(req.outputs.len());
    for (name, parts) in req.outputs.iter().zip(per_output) {
        features.push((name.to_string(), Tensor::f_cat(&parts, 0)?));
    }
    let store = MemoryStore::new(features, Tensor::f_cat(&targets, 0)?, input_hw)?;
    Ok((store, timings))
}

/// Receives each encoded batch: the outputs (float16, on the encoder's device, in the order
/// asked for) and the targets (on the CPU).
pub type EncodedSink<'s> = dyn FnMut(&[Tensor], &Tensor) -> Result<(), JobError> + 's;

/// Decodes and encodes every sample of `dataset`, in order, without augmentation, handing each
/// batch to `sink` (memory, or a file written as it goes). Returns the timings and the input
/// size; a split whose samples differ in input size is a [`JobError::VariableInputSize`].
pub fn encode_split_into(
    dataset: &DatasetBox,
    req: &EncodeRequest<'_>,
    sink: &mut EncodedSink<'_>,
) -> Result<(EncodeTimings, (u32, u32)), JobError> {
    let meta = plugin(dataset.meta())?;
    let len = meta.len as usize;
    if len == 0 {
        return Err(JobError::Other(format!("split {} is empty", meta.source)));
    }
    let range = req.range.clone().unwrap_or(0..len);
    let (lo, hi) = (range.start.min(len), range.end.min(len));
    let n = hi.saturating_sub(lo);
    let encoder_device = virb_plugin_api::parse_device(plugin(req.encoder.device())?.as_str())?;
    let start = Instant::now();
    let mut timings = EncodeTimings::default();
    let mut progress = Progress::new(req.label.clone(), n as u64);
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<Decoded>, JobError>>(2);
    let bs = req.batch_size.max(1);
    let mut input_hw: Option<(u32, u32)> = None;
    let (frames, pool, source) = (req.frames, req.pool, &meta.source);
    let result = std::thread::scope(|scope| -> Result<(), JobError> {
        scope.spawn(move || {
            for first in (lo..hi).step_by(bs) {
                let last = (first + bs).min(hi);
                let indices: Vec<u64> = (first as u64..last as u64).collect();
                let batch = pinned(
                    decode_batches(
                        dataset,
                        &indices,
                        frames,
                        pool,
                        source,
                        SampleContext::PLAIN,
                    ),
                    encoder_device,
                );
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        let outcome = (|| {
            for batches in rx.iter() {
                for batch in batches? {
                    match input_hw {
                        None => input_hw = Some(batch.input_hw),
                        Some(hw) if hw != batch.input_hw => {
                            return Err(JobError::VariableInputSize {
                                split: meta.source.to_string(),
                                first: hw,
                                other: batch.input_hw,
                            })
                        }
                        Some(_) => {}
                    }
                    timings.decode_s += batch.decode_s;
                    let t0 = Instant::now();
                    let b = batch.inputs.size()[0];
                    let x = upload(&batch.inputs, encoder_device)?;
                    let outs = encode_batch(&x, req.frames, req.outputs, |x| {
                        plugin(
                            req.encoder
                                .forward(TensorRef::of(x), RSlice::from_slice(req.outputs)),
                        )
                    })?;
                    let outs = outs
                        .into_iter()
                        .map(|t| t.f_to_kind(Kind::Half))
                        .collect::<Result<Vec<_>, _>>()?;
                    sink(&outs, &batch.targets)?;
                    timings.encode_s += t0.elapsed().as_secs_f64();
                    progress.inc(b as u64, "");
                }
            }
            Ok(())
        })();
        // Dropping the receiver stops the producer at its next send.
        drop(rx);
        outcome
    });
    result?;
    timings.wall_s = start.elapsed().as_secs_f64();
    progress.finish(&format!(
        "{:.1} samples/s",
        n as f64 / timings.wall_s.max(1e-9)
    ));
    Ok((timings, input_hw.unwrap_or((0, 0))))
}
