//! What training sees: a [`FeatureStore`] serves batches of features and targets by index, and
//! nothing else reaches the trainer. Three stores stand behind it:
//!
//! * [`MemoryStore`]: features encoded once (or read from the cache), float16, in host or device
//!   memory;
//! * [`MappedStore`]: features encoded once into a memory-mapped, verified file, for a pyramid
//!   larger than the memory budget;
//! * [`LiveStore`]: nothing stored; each batch is decoded (with the task's training augmentation,
//!   drawn from the run's seed and the epoch) and encoded when asked for, decoding running ahead
//!   of the encoder;
//! * [`IndexView`]: some samples of another store (a validation split is a view, not a copy).
use crate::error::JobError;
use tch::{Device, Tensor};
use virb_plugin_api::SampleContext;

mod live;
mod mapped;
mod memory;

pub use live::LiveStore;
pub use mapped::{dtype_of, kind_of, MappedStore, TARGETS};
pub use memory::MemoryStore;

/// One batch, ready for the heads.
pub struct Batch {
    /// Features by output name, float32 on the training device, batch first.
    pub features: Vec<(String, Tensor)>,
    /// Targets, batch first, on the training device.
    pub target: Tensor,
    /// Height and width of the batch's network input.
    pub input_hw: (u32, u32),
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> i64 {
        self.target.size().first().copied().unwrap_or(0)
    }
}

/// Receives batches one after the other (training steps, metric updates).
pub type BatchSink<'s> = dyn FnMut(Batch) -> Result<(), JobError> + 's;

/// Features of one split, served by index.
pub trait FeatureStore {
    /// Number of samples.
    fn len(&self) -> i64;

    /// Per-sample shapes by output name (for the head request).
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

    /// Height and width of the network input of the first sample (a head's training size).
    fn input_hw(&self) -> (u32, u32);

    /// Class index of every sample when targets are scalar class indices and known without
    /// decoding (a stratified validation split needs them); `None` otherwise.
    fn class_targets(&self) -> Option<Vec<i64>>;

    /// Serves the samples at `order` (indices into this store) in batches of up to `batch`
    /// samples, on `device`, to `sink`. `context` says whether and how a live store augments.
    /// Samples of different input sizes never share a batch.
    fn for_each_batch(
        &self,
        order: &[i64],
        batch: usize,
        device: Device,
        context: SampleContext,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), JobError>;
}

/// Some samples of another store, by index.
pub struct IndexView<'a> {
    base: &'a dyn FeatureStore,
    indices: Vec<i64>,
}

impl<'a> IndexView<'a> {
    /// The samples `indices` of `base`.
    pub fn new(base: &'a dyn FeatureStore, indices: Vec<i64>) -> Self {
        IndexView { base, indices }
    }
}

impl FeatureStore for IndexView<'_> {
    fn len(&self) -> i64 {
        self.indices.len() as i64
    }

    fn shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.base.shapes()
    }

    fn input_hw(&self) -> (u32, u32) {
        self.base.input_hw()
    }

    fn class_targets(&self) -> Option<Vec<i64>> {
        let all = self.base.class_targets()?;
        self.indices
            .iter()
            .map(|&i| all.get(i as usize).copied())
            .collect()
    }

    fn for_each_batch(
        &self,
        order: &[i64],
        batch: usize,
        device: Device,
        context: SampleContext,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), JobError> {
        let mapped = order
            .iter()
            .map(|&i| {
                self.indices.get(i as usize).copied().ok_or_else(|| {
                    JobError::Other(format!(
                        "index {i} outside a view of {} samples",
                        self.indices.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.base
            .for_each_batch(&mapped, batch, device, context, sink)
    }
}

/// A training split divided into what trains the heads and what validates them, as two views.
pub struct ValidationSplit<'a> {
    /// What the heads train on.
    pub train: IndexView<'a>,
    /// What they are validated on.
    pub val: IndexView<'a>,
    /// The fraction asked for.
    pub fraction: f64,
    /// Whether the split was stratified by class.
    pub stratified: bool,
}

/// Holds out `fraction` of `store` for validation, chosen with `seed` (the same seed gives the
/// same split). With `by_class` and class-index targets, each class gives its own share (at
/// least one sample from every class that has two or more), so rare classes are in both.
pub fn split_validation<'a>(
    store: &'a dyn FeatureStore,
    fraction: f64,
    seed: u64,
    by_class: bool,
) -> Result<ValidationSplit<'a>, JobError> {
    let n = store.len();
    tch::manual_seed((seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 1) as i64);
    let perm = Vec::<i64>::try_from(&Tensor::f_randperm(n, (tch::Kind::Int64, Device::Cpu))?)?;
    let labels = if by_class {
        store.class_targets()
    } else {
        None
    };
    let stratified = labels.is_some();
    let mut val = Vec::new();
    let mut train = Vec::new();
    if let Some(labels) = labels {
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
        train: IndexView::new(store, train),
        val: IndexView::new(store, val),
        fraction,
        stratified,
    })
}

/// Runs of consecutive positions of `order` whose samples share an input size, each cut into
/// pieces of at most `batch`: the batches a store serves.
pub(crate) fn runs<K: PartialEq>(keys: &[K], batch: usize) -> Vec<std::ops::Range<usize>> {
    let batch = batch.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=keys.len() {
        if i == keys.len() || keys[i] != keys[start] || i - start == batch {
            if i > start {
                out.push(start..i);
            }
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_on_size_changes_and_batch_size() {
        let keys = [1, 1, 1, 2, 2, 1];
        assert_eq!(runs(&keys, 2), vec![0..2, 2..3, 3..5, 5..6]);
        assert_eq!(runs(&keys, 8), vec![0..3, 3..5, 5..6]);
        assert!(runs::<u8>(&[], 4).is_empty());
    }

    #[test]
    fn validation_split_is_stratified_seeded_and_refuses_too_little_data() {
        let labels: Vec<i64> = (0..40).map(|i| i % 4).collect();
        let store = MemoryStore::for_tests(&labels);
        let s = split_validation(&store, 0.25, 7, true).expect("split");
        assert!(s.stratified);
        // 10 per class, a quarter rounded: 3 of each class held out.
        assert_eq!((s.train.len(), s.val.len()), (28, 12));
        let val = s.val.class_targets().expect("labels");
        for c in 0..4 {
            let k = val.iter().filter(|&&l| l == c).count();
            assert_eq!(k, 3, "class {c}");
        }
        let again = split_validation(&store, 0.25, 7, true).expect("split");
        assert_eq!(again.val.indices, s.val.indices);
        let plain = split_validation(&store, 0.25, 7, false).expect("split");
        assert!(!plain.stratified);
        assert_eq!(plain.val.len(), 10);
        // One sample cannot be split: an error, not a panic.
        let one = MemoryStore::for_tests(&[0]);
        let err = split_validation(&one, 0.5, 0, false).err().expect("error");
        assert!(err.to_string().contains("validation_fraction"), "{err}");
    }
}
