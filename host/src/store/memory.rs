//! Features held in memory (host or device), float16, encoded once.
use super::{runs, Batch, BatchSink, FeatureStore};
use crate::error::JobError;
use tch::{Device, Kind, Tensor};
use virb_plugin_api::SampleContext;

/// Features and targets of every sample of a split, in memory.
pub struct MemoryStore {
    features: Vec<(String, Tensor)>,
    targets: Tensor,
    len: i64,
    input_hw: (u32, u32),
}

impl MemoryStore {
    /// A store of `features` (each `[N, ...]`) and `targets` (`[N, ...]`) for inputs of
    /// `input_hw`; an error when the first dimensions disagree.
    pub fn new(
        features: Vec<(String, Tensor)>,
        targets: Tensor,
        input_hw: (u32, u32),
    ) -> Result<MemoryStore, JobError> {
        let len = targets.size().first().copied().unwrap_or(0);
        if let Some((name, t)) = features
            .iter()
            .find(|(_, t)| t.size().first() != Some(&len))
        {
            return Err(JobError::Other(format!(
                "feature `{name}` has shape {:?} for {len} targets",
                t.size()
            )));
        }
        Ok(MemoryStore {
            features,
            targets,
            len,
            input_hw,
        })
    }

    /// The stored features, by output name.
    pub fn features(&self) -> &[(String, Tensor)] {
        &self.features
    }

    /// The stored targets.
    pub fn targets(&self) -> &Tensor {
        &self.targets
    }

    #[cfg(test)]
    pub(crate) fn for_tests(labels: &[i64]) -> MemoryStore {
        let n = labels.len() as i64;
        MemoryStore {
            features: vec![(
                "embedding".into(),
                Tensor::arange(n * 2, (Kind::Float, Device::Cpu)).reshape([n, 2]),
            )],
            targets: Tensor::from_slice(labels),
            len: n,
            input_hw: (8, 8),
        }
    }
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

    fn input_hw(&self) -> (u32, u32) {
        self.input_hw
    }

    fn class_targets(&self) -> Option<Vec<i64>> {
        if self.targets.dim() != 1 || self.targets.kind() != Kind::Int64 {
            return None;
        }
        let cpu = self.targets.f_to_device(Device::Cpu).ok()?;
        Vec::<i64>::try_from(&cpu).ok()
    }

    fn for_each_batch(
        &self,
        order: &[i64],
        batch: usize,
        device: Device,
        _context: SampleContext,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), JobError> {
        let same = vec![(); order.len()];
        for range in runs(&same, batch) {
            let idx = Tensor::from_slice(&order[range]);
            let mut features = Vec::with_capacity(self.features.len());
            for (name, t) in &self.features {
                let x = t
                    .f_index_select(0, &idx.f_to_device(t.device())?)?
                    .f_to_device(device)?
                    .f_to_kind(Kind::Float)?;
                features.push((name.clone(), x));
            }
            let target = self
                .targets
                .f_index_select(0, &idx.f_to_device(self.targets.device())?)?
                .f_to_device(device)?;
            sink(Batch {
                features,
                target,
                input_hw: self.input_hw,
            })?;
        }
        Ok(())
    }
}
