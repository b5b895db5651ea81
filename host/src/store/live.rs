//! Live encoding: nothing is stored; each batch is decoded and encoded when the trainer asks for
//! it. Decoding (the task's data set, in parallel on the decode pool) runs one batch ahead of the
//! encoder, and every head of a grid trains on the one forward pass of each batch.
use super::{Batch, BatchSink, FeatureStore};
use crate::encode::{decode_batches, encode_batch, Decoded};
use crate::error::{plugin, JobError};
use std::{
    sync::{mpsc, Mutex},
    time::Instant,
};
use tch::{Device, Kind};
use virb_plugin_api::{
    abi_stable::std_types::{RSlice, RString},
    DatasetBox, EncoderBox, SampleContext, TensorRef,
};

/// Time a live store spent, summed over every batch it served.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveTimings {
    /// Seconds decoding (overlapping the encoder).
    pub decode_s: f64,
    /// Seconds in the encoder's forward pass.
    pub encode_s: f64,
    /// Samples encoded.
    pub samples: u64,
}

/// A split encoded batch by batch, as training asks for it.
pub struct LiveStore<'a> {
    dataset: &'a DatasetBox,
    encoder: &'a EncoderBox,
    encoder_device: Device,
    outputs: Vec<RString>,
    frames: u32,
    pool: &'a rayon::ThreadPool,
    source: RString,
    len: i64,
    shapes: Vec<(String, Vec<i64>)>,
    input_hw: (u32, u32),
    target: (Kind, Vec<i64>),
    fine_tune: bool,
    timings: Mutex<LiveTimings>,
}

impl<'a> LiveStore<'a> {
    /// A live view of `dataset` through `encoder`, producing `outputs`. With `fine_tune`, training
    /// reads (`context.augment`) run the encoder in training mode with gradients
    /// ([`virb_plugin_api::Encoder::forward_train`]); other reads stay frozen.
    pub fn open(
        dataset: &'a DatasetBox,
        encoder: &'a EncoderBox,
        outputs: &[RString],
        frames: u32,
        pool: &'a rayon::ThreadPool,
        fine_tune: bool,
    ) -> Result<LiveStore<'a>, JobError> {
        let meta = plugin(dataset.meta())?;
        if meta.len == 0 {
            return Err(JobError::Other(format!("split {} is empty", meta.source)));
        }
        let encoder_device = virb_plugin_api::parse_device(plugin(encoder.device())?.as_str())?;
        // The first sample gives the input size, and the encoder the per-sample shapes for it.
        let first = decode_batches(
            dataset,
            &[0],
            frames,
            pool,
            &meta.source,
            SampleContext::PLAIN,
        )?;
        let input_hw = first.first().map(|d| d.input_hw).unwrap_or((0, 0));
        let target = first
            .first()
            .map(|d| (d.targets.kind(), d.targets.size()[1..].to_vec()))
            .unwrap_or((Kind::Int64, Vec::new()));
        let specs = plugin(encoder.output_shapes(input_hw.0 as i64, input_hw.1 as i64))?;
        let mut shapes = Vec::with_capacity(outputs.len());
        for wanted in outputs {
            let spec = specs
                .iter()
                .find(|s| s.name == *wanted)
                .ok_or_else(|| JobError::Other(format!("the encoder has no `{wanted}` output")))?;
            let mut shape: Vec<i64> = spec.shape.to_vec();
            if frames > 1 {
                shape.insert(0, frames as i64);
            }
            shapes.push((wanted.to_string(), shape));
        }
        Ok(LiveStore {
            dataset,
            encoder,
            encoder_device,
            outputs: outputs.to_vec(),
            frames,
            pool,
            source: meta.source,
            len: meta.len as i64,
            shapes,
            input_hw,
            target,
            fine_tune,
            timings: Mutex::new(LiveTimings::default()),
        })
    }

    /// The element type and per-sample shape of the first sample's target.
    pub fn target_spec(&self) -> (Kind, Vec<i64>) {
        self.target.clone()
    }

    /// Time spent so far.
    pub fn timings(&self) -> LiveTimings {
        self.timings.lock().map(|t| *t).unwrap_or_default()
    }

    /// Time spent so far, as the time of getting a split's features (decoding overlaps the
    /// encoder, so the wall time is the encoder's).
    pub fn encode_timings(&self) -> crate::encode::EncodeTimings {
        let t = self.timings();
        crate::encode::EncodeTimings {
            decode_s: t.decode_s,
            encode_s: t.encode_s,
            wall_s: t.encode_s,
            from_cache: false,
        }
    }

    fn encode(&self, batch: Decoded, device: Device, train: bool) -> Result<Batch, JobError> {
        let t0 = Instant::now();
        let x = crate::encode::upload(&batch.inputs, self.encoder_device)?;
        let outputs = RSlice::from_slice(&self.outputs);
        let outs = encode_batch(&x, self.frames, &self.outputs, |x| {
            if train {
                plugin(self.encoder.forward_train(TensorRef::of(x), outputs))
            } else {
                plugin(self.encoder.forward(TensorRef::of(x), outputs))
            }
        })?;
        let mut features = Vec::with_capacity(outs.len());
        for (name, t) in self.outputs.iter().zip(outs) {
            features.push((
                name.to_string(),
                t.f_to_device(device)?.f_to_kind(Kind::Float)?,
            ));
        }
        let target = batch.targets.f_to_device(device)?;
        if let Ok(mut t) = self.timings.lock() {
            t.decode_s += batch.decode_s;
            t.encode_s += t0.elapsed().as_secs_f64();
            t.samples += target.size().first().copied().unwrap_or(0) as u64;
        }
        Ok(Batch {
            features,
            target,
            input_hw: batch.input_hw,
        })
    }
}

impl FeatureStore for LiveStore<'_> {
    fn len(&self) -> i64 {
        self.len
    }

    fn shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.shapes.clone()
    }

    fn input_hw(&self) -> (u32, u32) {
        self.input_hw
    }

    fn class_targets(&self) -> Option<Vec<i64>> {
        None
    }

    fn for_each_batch(
        &self,
        order: &[i64],
        batch: usize,
        device: Device,
        context: SampleContext,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), JobError> {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<Decoded>, JobError>>(2);
        let (dataset, pool, frames, source) = (self.dataset, self.pool, self.frames, &self.source);
        let encoder_device = self.encoder_device;
        let train = self.fine_tune && context.augment;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for chunk in order.chunks(batch.max(1)) {
                    let indices: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
                    let decoded = crate::encode::pinned(
                        decode_batches(dataset, &indices, frames, pool, source, context),
                        encoder_device,
                    );
                    let failed = decoded.is_err();
                    if tx.send(decoded).is_err() || failed {
                        break;
                    }
                }
            });
            let outcome = (|| {
                for decoded in rx.iter() {
                    for part in decoded? {
                        let batch = self.encode(part, device, train)?;
                        sink(batch)?;
                    }
                }
                Ok(())
            })();
            // Dropping the receiver stops the producer at its next send.
            drop(rx);
            outcome
        })
    }
}
