//! Writes tensors as a safetensors file: a JSON header (names, dtypes, shapes, byte offsets,
//! and string metadata) followed by the raw bytes. Nothing in such a file can run code when it is
//! read, unlike a pickle.
use safetensors::tensor::{Dtype, View};
use std::{
    borrow::Cow,
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

/// Why a safetensors file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The destination exists and replacing it was not allowed.
    #[error("{0} already exists")]
    Exists(PathBuf),
    /// A tensor has a type safetensors cannot hold, or could not be copied out.
    #[error("tensor `{name}`: {what}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What was wrong.
        what: String,
    },
    /// Two tensors share a name.
    #[error("two tensors are named `{0}`")]
    Duplicate(String),
    /// The file system refused.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One tensor's bytes, as safetensors wants them.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn dtype(kind: tch::Kind) -> Option<Dtype> {
    use tch::Kind as K;
    Some(match kind {
        K::Bool => Dtype::BOOL,
        K::Uint8 => Dtype::U8,
        K::Int8 => Dtype::I8,
        K::Int16 => Dtype::I16,
        K::Int => Dtype::I32,
        K::Int64 => Dtype::I64,
        K::BFloat16 => Dtype::BF16,
        K::Half => Dtype::F16,
        K::Float => Dtype::F32,
        K::Double => Dtype::F64,
        _ => return None,
    })
}

fn bytes_of(name: &str, t: &tch::Tensor) -> Result<Bytes, WriteError> {
    let bad = |what: String| WriteError::Tensor {
        name: name.to_string(),
        what,
    };
    let dtype = dtype(t.kind()).ok_or_else(|| {
        bad(format!(
            "type {:?} cannot be stored in safetensors",
            t.kind()
        ))
    })?;
    let t = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .map_err(|e| bad(e.to_string()))?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Bytes {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Writes `tensors` (and string `metadata`, such as where they came from) to `dest` as
/// safetensors, atomically: into a temporary file beside it, synced, then renamed over `dest`,
/// so a reader never sees half a file. An existing `dest` is an error unless `overwrite`.
pub fn write_safetensors(
    dest: &Path,
    tensors: &[(String, tch::Tensor)],
    metadata: &[(&str, String)],
    overwrite: bool,
) -> Result<(), WriteError> {
    if !overwrite && dest.exists() {
        return Err(WriteError::Exists(dest.to_path_buf()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(WriteError::Duplicate(name.clone()));
        }
        views.push((name.clone(), bytes_of(name, t)?));
    }
    let info: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(views.iter().map(|(n, b)| (n.as_str(), b)), &Some(info))
        .map_err(|e| WriteError::Tensor {
            name: "(file)".into(),
            what: format!("{e:?}"),
        })?;
    let io = |source| WriteError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weights".into());
    let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_through_the_reader_with_metadata_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("virb-write-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out.safetensors");
        let _ = std::fs::remove_file(&dest);
        let w = tch::Tensor::arange(6, (tch::Kind::Float, tch::Device::Cpu)).view([2, 3]);
        let tensors = vec![
            ("conv1.weight".to_string(), w.tr()),
            (
                "bn1.num_batches_tracked".to_string(),
                tch::Tensor::from(7i64),
            ),
        ];
        write_safetensors(&dest, &tensors, &[("converted_from", "moco".into())], false).unwrap();
        let back = crate::load(&dest).unwrap();
        assert_eq!(back.format, crate::Format::Safetensors);
        let get = |n: &str| &back.tensors.iter().find(|(k, _)| k == n).unwrap().1;
        assert!(get("conv1.weight").equal(&w.tr()));
        assert_eq!(get("bn1.num_batches_tracked").kind(), tch::Kind::Int64);
        let raw = std::fs::read(&dest).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&raw).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta.get("converted_from").map(String::as_str), Some("moco"));
        let again = write_safetensors(&dest, &tensors, &[], false).unwrap_err();
        assert!(matches!(again, WriteError::Exists(_)), "{again}");
        write_safetensors(&dest, &tensors[..1], &[], true).unwrap();
        assert_eq!(crate::load(&dest).unwrap().tensors.len(), 1);
        let dup = [tensors[0].0.clone(), tensors[0].0.clone()]
            .into_iter()
            .map(|n| (n, w.shallow_clone()))
            .collect::<Vec<_>>();
        assert!(matches!(
            write_safetensors(&dir.join("dup.safetensors"), &dup, &[], false),
            Err(WriteError::Duplicate(_))
        ));
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
