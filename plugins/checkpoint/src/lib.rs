//! Reads model weights from the files users really have, into tch tensors:
//!
//! * PyTorch's zip checkpoint format (`torch.save` since PyTorch 1.6), including files written by
//!   `torch.save(model.state_dict())` (an `OrderedDict`, which tch cannot read by itself);
//! * PyTorch's legacy (pre-1.6) pickle format;
//! * safetensors.
//!
//! Nothing in a checkpoint is executed: pickles are decoded by a small reader that only knows how
//! tensors and dicts are rebuilt.
//!
//! [`load`] returns the state dict (the top-level dict, or the one under `state_dict`, `model` or
//! `module`); [`load_nested`] returns every tensor with its path through nested dicts, which
//! [`layout`] maps from self-supervised projects' checkpoints (MoCo, SwAV, VISSL, ...) to
//! torchvision names, and [`write`] saves as safetensors.
#![deny(missing_docs)]

pub mod layout;
mod nested;
pub mod pickle;
pub mod write;

pub use nested::{load_nested, torchscript_archive, Nested, NestedTensor};
use pickle::{DType, TensorRef, Value};
use std::{
    collections::HashMap,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

/// The file formats [`load`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PyTorch zip checkpoint (`torch.save`, PyTorch >= 1.6).
    TorchZip,
    /// PyTorch legacy pickle checkpoint (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`).
    TorchLegacy,
    /// safetensors.
    Safetensors,
}

impl Format {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::TorchZip => "pytorch zip checkpoint",
            Format::TorchLegacy => "pytorch legacy checkpoint",
            Format::Safetensors => "safetensors",
        }
    }
}

/// The tensors of a checkpoint, in file order.
#[derive(Debug)]
pub struct StateDict {
    /// `(name, tensor)` pairs, on the CPU.
    pub tensors: Vec<(String, tch::Tensor)>,
    /// The format the file was in.
    pub format: Format,
    /// When the tensors were found under a key of a larger checkpoint dict (`state_dict`), that key.
    pub nested_under: Option<String>,
}

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read.
    #[error("cannot read weights file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is none of the supported formats.
    #[error("{path} is not a checkpoint: {what} (expected a PyTorch .pt/.pth file written by torch.save, or a .safetensors file)")]
    NotACheckpoint {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },
    /// The file has the right kind but is damaged or holds something unexpected.
    #[error("{path}: damaged or unsupported {format} file: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The format it seemed to be in.
        format: &'static str,
        /// What was wrong.
        what: String,
    },
    /// The checkpoint holds no tensors where a state dict was expected.
    #[error("{path} holds no state dict of tensors (top-level keys: {keys})")]
    NoTensors {
        /// The file.
        path: PathBuf,
        /// The top-level keys found.
        keys: String,
    },
}

/// Reads every tensor of a checkpoint file.
///
/// For a PyTorch checkpoint whose top level is a dict holding a state dict under `state_dict`,
/// `model` or `module` (as training scripts often save), the nested dict is returned and
/// [`StateDict::nested_under`] says so.
pub fn load(path: &Path) -> Result<StateDict, CheckpointError> {
    match read_root(path)? {
        Root::Pickle(format, tree) => extract(path, format, tree),
        Root::Flat(sd) => Ok(sd),
    }
}

/// A checkpoint as read: a pickle's decoded tree, or a safetensors file's flat tensors.
enum Root {
    Pickle(Format, Tree),
    Flat(StateDict),
}

fn read_root(path: &Path) -> Result<Root, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = [0u8; 16];
    let mut file = File::open(path).map_err(io)?;
    let n = read_up_to(&mut file, &mut head).map_err(io)?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        Ok(Root::Pickle(Format::TorchZip, read_zip(path)?))
    } else if looks_like_safetensors(head) {
        read_safetensors(path).map(Root::Flat)
    } else if head.first() == Some(&0x80) {
        let data = std::fs::read(path).map_err(io)?;
        Ok(Root::Pickle(Format::TorchLegacy, read_legacy(path, &data)?))
    } else {
        let what = if head.is_empty() {
            "the file is empty".to_string()
        } else {
            format!(
                "it starts with bytes {}",
                head.iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            what,
        })
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// safetensors: an 8-byte little-endian header length, then a JSON header starting with `{`.
/// (A legacy pickle starts with 0x80 0x02 0x8a, so its byte 8 is never `{`.)
fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{' && head[6] == 0 && head[7] == 0
}

fn malformed(path: &Path, format: Format, what: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed {
        path: path.to_path_buf(),
        format: format.name(),
        what: what.into(),
    }
}

/// A decoded pickle tree with its tensors materialised.
enum Tree {
    Tensor(tch::Tensor),
    Dict(Vec<(String, Tree)>),
    Other,
}

fn read_zip(path: &Path) -> Result<Tree, CheckpointError> {
    let fmt = Format::TorchZip;
    let file = File::open(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| malformed(path, fmt, format!("bad zip: {e}")))?;
    let pkl_name = archive
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| malformed(path, fmt, "no <name>/data.pkl entry"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = read_entry(&mut archive, &pkl_name).map_err(|e| malformed(path, fmt, e))?;
    let mut pos = 0;
    let root = pickle::read(&pkl, &mut pos).map_err(|e| malformed(path, fmt, e.to_string()))?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    materialise(path, fmt, root, &mut |r: &TensorRef| {
        if !storages.contains_key(&r.storage_key) {
            let name = format!("{prefix}data/{}", r.storage_key);
            let bytes = read_entry(&mut archive, &name)
                .map_err(|e| format!("storage {}: {e}", r.storage_key))?;
            storages.insert(r.storage_key.clone(), bytes);
        }
        Ok(storages
            .get(&r.storage_key)
            .map(|b| b.as_slice())
            .unwrap_or_default()
            .to_vec())
    })
}

fn read_entry(archive: &mut zip::ZipArchive<File>, name: &str) -> Result<Vec<u8>, String> {
    let mut entry = archive
        .by_name(name)
        .map_err(|e| format!("missing entry {name}: {e}"))?;
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read entry {name}: {e}"))?;
    Ok(out)
}

fn read_legacy(path: &Path, data: &[u8]) -> Result<Tree, CheckpointError> {
    let fmt = Format::TorchLegacy;
    let bad = |e: pickle::PickleError| malformed(path, fmt, e.to_string());
    let mut pos = 0;
    let magic = pickle::read(data, &mut pos).map_err(bad)?;
    const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    if magic != Value::Bytes(MAGIC.to_vec()) {
        return Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            what: "a pickle without PyTorch's magic number".to_string(),
        });
    }
    let _protocol = pickle::read(data, &mut pos).map_err(bad)?;
    let _sys_info = pickle::read(data, &mut pos).map_err(bad)?;
    let root = pickle::read(data, &mut pos).map_err(bad)?;
    let keys = match pickle::read(data, &mut pos).map_err(bad)? {
        Value::List(keys) => keys,
        other => {
            return Err(malformed(
                path,
                fmt,
                format!("storage key list is {other:?}"),
            ))
        }
    };
    // Element sizes come from the tensors that use each storage.
    let mut dtypes: HashMap<String, DType> = HashMap::new();
    collect_refs(&root, &mut |r| {
        dtypes.insert(r.storage_key.clone(), r.dtype);
    });
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let key = match key {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            other => return Err(malformed(path, fmt, format!("bad storage key {other:?}"))),
        };
        let numel_bytes = data
            .get(pos..pos + 8)
            .ok_or_else(|| malformed(path, fmt, format!("storage {key} truncated")))?;
        let mut b = [0u8; 8];
        b.copy_from_slice(numel_bytes);
        let numel = u64::from_le_bytes(b) as usize;
        pos += 8;
        let elem = dtypes.get(&key).map(|d| d.size()).unwrap_or(1);
        let len = numel
            .checked_mul(elem)
            .ok_or_else(|| malformed(path, fmt, "storage size overflows"))?;
        let bytes = data
            .get(pos..pos + len)
            .ok_or_else(|| malformed(path, fmt, format!("storage {key} truncated")))?;
        storages.insert(key, bytes.to_vec());
        pos += len;
    }
    materialise(path, fmt, root, &mut |r: &TensorRef| {
        storages
            .get(&r.storage_key)
            .cloned()
            .ok_or_else(|| format!("storage {} missing", r.storage_key))
    })
}

fn collect_refs(v: &Value, f: &mut dyn FnMut(&TensorRef)) {
    match v {
        Value::Tensor(r) => f(r),
        Value::Dict(items) => items.iter().for_each(|(_, v)| collect_refs(v, f)),
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(|v| collect_refs(v, f)),
        _ => {}
    }
}

fn materialise(
    path: &Path,
    fmt: Format,
    v: Value,
    storage: &mut dyn FnMut(&TensorRef) -> Result<Vec<u8>, String>,
) -> Result<Tree, CheckpointError> {
    Ok(match v {
        Value::Tensor(r) => {
            let bytes = storage(&r).map_err(|e| malformed(path, fmt, e))?;
            Tree::Tensor(make_tensor(&r, &bytes).map_err(|e| malformed(path, fmt, e))?)
        }
        Value::Dict(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (k, v) in items {
                let key = match k {
                    Value::Str(s) => s,
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                out.push((key, materialise(path, fmt, v, storage)?));
            }
            Tree::Dict(out)
        }
        _ => Tree::Other,
    })
}

fn make_tensor(r: &TensorRef, bytes: &[u8]) -> Result<tch::Tensor, String> {
    let elem = r.dtype.size();
    if !bytes.len().is_multiple_of(elem) {
        return Err(format!("storage {} has a partial element", r.storage_key));
    }
    let numel = (bytes.len() / elem) as i64;
    if let Some(expected) = r.storage_numel {
        if expected as i64 != numel {
            return Err(format!(
                "storage {} holds {numel} elements, the checkpoint says {expected}",
                r.storage_key
            ));
        }
    }
    if r.size.len() != r.stride.len() {
        return Err(format!(
            "storage {}: size and stride differ in rank",
            r.storage_key
        ));
    }
    // Largest element index the view touches must lie inside the storage.
    let extent: i64 = r
        .size
        .iter()
        .zip(&r.stride)
        .map(|(s, st)| if *s == 0 { 0 } else { (s - 1) * st })
        .sum();
    let empty = r.size.contains(&0);
    if r.offset < 0 || (!empty && r.offset + extent >= numel) {
        return Err(format!(
            "tensor of shape {:?} at offset {} does not fit storage {} of {numel} elements",
            r.size, r.offset, r.storage_key
        ));
    }
    let flat = tch::Tensor::f_from_data_size(bytes, &[numel], r.dtype.kind())
        .map_err(|e| e.to_string())?;
    flat.f_as_strided(r.size.as_slice(), r.stride.as_slice(), Some(r.offset))
        .and_then(|t| t.f_contiguous())
        .map_err(|e| e.to_string())
}

fn extract(path: &Path, format: Format, root: Tree) -> Result<StateDict, CheckpointError> {
    let Tree::Dict(items) = root else {
        return Err(CheckpointError::NoTensors {
            path: path.to_path_buf(),
            keys: "(the top level is not a dict)".to_string(),
        });
    };
    let has_tensors = items.iter().any(|(_, v)| matches!(v, Tree::Tensor(_)));
    if has_tensors {
        return Ok(StateDict {
            tensors: tensors_of(items),
            format,
            nested_under: None,
        });
    }
    let keys = items
        .iter()
        .map(|(k, _)| k.clone())
        .collect::<Vec<_>>()
        .join(", ");
    for wanted in ["state_dict", "model", "module"] {
        if let Some(pos) = items.iter().position(|(k, _)| k == wanted) {
            if let Some((k, Tree::Dict(inner))) = items.into_iter().nth(pos) {
                if inner.iter().any(|(_, v)| matches!(v, Tree::Tensor(_))) {
                    return Ok(StateDict {
                        tensors: tensors_of(inner),
                        format,
                        nested_under: Some(k),
                    });
                }
            }
            break;
        }
    }
    Err(CheckpointError::NoTensors {
        path: path.to_path_buf(),
        keys: if keys.is_empty() {
            "none".to_string()
        } else {
            keys
        },
    })
}

fn tensors_of(items: Vec<(String, Tree)>) -> Vec<(String, tch::Tensor)> {
    items
        .into_iter()
        .filter_map(|(k, v)| match v {
            Tree::Tensor(t) => Some((k, t)),
            _ => None,
        })
        .collect()
}

/// What is wrong with a safetensors file, in words (the crate's own messages are debug dumps
/// such as `InvalidOffset("conv1.weight")`).
fn safetensors_problem(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::InvalidHeaderLength | E::MetadataIncompleteBuffer => {
            "the file is truncated (its header promises more bytes than it has)".into()
        }
        E::HeaderTooLarge => {
            "its header length is implausibly large (not a safetensors file?)".into()
        }
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization => {
            "its header is not valid safetensors JSON".into()
        }
        E::InvalidOffset(name) => {
            format!("tensor `{name}` lies outside the file's data (truncated or damaged file)")
        }
        E::TensorInvalidInfo => "a tensor's shape does not match its byte size".into(),
        E::IoError(io) => format!("cannot read it: {io}"),
        other => {
            let text = format!("{other:?}");
            format!("unreadable ({})", text.chars().take(80).collect::<String>())
        }
    }
}

fn read_safetensors(path: &Path) -> Result<StateDict, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| malformed(path, Format::Safetensors, safetensors_problem(&e)))?;
    drop(bytes);
    let tensors = tch::Tensor::read_safetensors(path)
        .map_err(|e| malformed(path, Format::Safetensors, e.to_string()))?;
    if tensors.is_empty() {
        return Err(CheckpointError::NoTensors {
            path: path.to_path_buf(),
            keys: "none".to_string(),
        });
    }
    Ok(StateDict {
        tensors,
        format: Format::Safetensors,
        nested_under: None,
    })
}
