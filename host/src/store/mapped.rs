//! Features in a memory-mapped, verified chunked file (`virb_feature_cache::chunked`): for a
//! pyramid larger than the memory budget. Each batch copies its rows out of the map and releases
//! their pages, so the resident set stays near one batch whatever the file's size.
use super::{Batch, BatchSink, FeatureStore, MemoryStore};
use crate::error::JobError;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};
use virb_feature_cache::{ChunkedFile, DType};
use virb_plugin_api::SampleContext;

/// The name of the targets array in a chunked file.
pub const TARGETS: &str = "__targets__";

/// Element type of a tensor kind in a cache file, if it can be stored.
pub fn dtype_of(kind: Kind) -> Option<DType> {
    match kind {
        Kind::Half => Some(DType::F16),
        Kind::Float => Some(DType::F32),
        Kind::Int64 => Some(DType::I64),
        Kind::Uint8 => Some(DType::U8),
        _ => None,
    }
}

/// The tensor kind of a cache element type.
pub fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F16 => Kind::Half,
        DType::F32 => Kind::Float,
        DType::I64 => Kind::Int64,
        DType::U8 => Kind::Uint8,
    }
}

struct Column {
    name: String,
    index: usize,
    shape: Vec<i64>,
    kind: Kind,
    row_bytes: usize,
}

/// A split's features served from a mapped chunked file.
pub struct MappedStore {
    file: ChunkedFile,
    features: Vec<Column>,
    target: Column,
    input_hw: (u32, u32),
}

impl MappedStore {
    /// Serves `file` (features for inputs of `input_hw`); its targets are the array
    /// [`TARGETS`], every other array is a feature.
    pub fn new(file: ChunkedFile, input_hw: (u32, u32)) -> Result<MappedStore, JobError> {
        let mut features = Vec::new();
        let mut target = None;
        for (index, a) in file.arrays().into_iter().enumerate() {
            let column = Column {
                row_bytes: a.row_bytes() as usize,
                kind: kind_of(a.dtype),
                shape: a.sample_shape,
                index,
                name: a.name,
            };
            if column.name == TARGETS {
                target = Some(column);
            } else if !column.name.starts_with("__") {
                features.push(column);
            }
        }
        let target = target.ok_or_else(|| {
            JobError::Other(format!("{} holds no targets", file.path().display()))
        })?;
        Ok(MappedStore {
            file,
            features,
            target,
            input_hw,
        })
    }

    fn rows(&self, column: &Column, indices: &[u64]) -> Result<Tensor, JobError> {
        let mut bytes = vec![0u8; indices.len() * column.row_bytes];
        // Rows are copied in parallel pieces: the copy is memory-bound and the map is shared.
        let per = (indices.len() / rayon::current_num_threads().max(1)).max(1);
        bytes
            .par_chunks_mut(per * column.row_bytes.max(1))
            .zip(indices.par_chunks(per))
            .try_for_each(|(out, idx)| self.file.read_rows(column.index, idx, out))
            .map_err(|e| JobError::Other(format!("{}: {e}", self.file.path().display())))?;
        let mut shape = vec![indices.len() as i64];
        shape.extend_from_slice(&column.shape);
        Ok(Tensor::f_from_data_size(&bytes, &shape, column.kind)?)
    }

    /// Bytes of features and targets (what holding it in memory would take).
    pub fn bytes(&self) -> u64 {
        let per: usize = self
            .features
            .iter()
            .chain(std::iter::once(&self.target))
            .map(|c| c.row_bytes)
            .sum();
        per as u64 * self.file.samples()
    }

    /// Reads the whole file into memory (on `device`): when it fits the memory budget.
    pub fn into_memory(self, device: Device) -> Result<MemoryStore, JobError> {
        let all: Vec<u64> = (0..self.file.samples()).collect();
        let mut features = Vec::with_capacity(self.features.len());
        for c in &self.features {
            let mut parts = Vec::new();
            for chunk in all.chunks(256) {
                parts.push(self.rows(c, chunk)?.f_to_device(device)?);
            }
            features.push((c.name.clone(), Tensor::f_cat(&parts, 0)?));
        }
        let targets = self.rows(&self.target, &all)?.f_to_device(device)?;
        MemoryStore::new(features, targets, self.input_hw)
    }
}

impl FeatureStore for MappedStore {
    fn len(&self) -> i64 {
        self.file.samples() as i64
    }

    fn shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.features
            .iter()
            .map(|c| (c.name.clone(), c.shape.clone()))
            .collect()
    }

    fn input_hw(&self) -> (u32, u32) {
        self.input_hw
    }

    fn class_targets(&self) -> Option<Vec<i64>> {
        if !self.target.shape.is_empty() || self.target.kind != Kind::Int64 {
            return None;
        }
        let all: Vec<u64> = (0..self.file.samples()).collect();
        let t = self.rows(&self.target, &all).ok()?;
        Vec::<i64>::try_from(&t).ok()
    }

    fn for_each_batch(
        &self,
        order: &[i64],
        batch: usize,
        device: Device,
        _context: SampleContext,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), JobError> {
        for chunk in order.chunks(batch.max(1)) {
            let idx: Vec<u64> = chunk.iter().map(|&i| i.max(0) as u64).collect();
            let mut features = Vec::with_capacity(self.features.len());
            for c in &self.features {
                let t = self
                    .rows(c, &idx)?
                    .f_to_device(device)?
                    .f_to_kind(Kind::Float)?;
                features.push((c.name.clone(), t));
            }
            let target = self.rows(&self.target, &idx)?.f_to_device(device)?;
            sink(Batch {
                features,
                target,
                input_hw: self.input_hw,
            })?;
        }
        Ok(())
    }
}
