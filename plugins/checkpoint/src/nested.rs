//! A checkpoint read whole: every tensor with its path through nested dicts, for converters and
//! inspectors that must see more than the state dict [`crate::load`] returns (VISSL nests the
//! trunk four dicts deep; training checkpoints hold optimiser state beside the model).
use crate::{read_root, CheckpointError, Format, Root, Tree};
use std::{
    fs::File,
    path::{Path, PathBuf},
};

/// One tensor of a checkpoint and where it sits.
#[derive(Debug)]
pub struct NestedTensor {
    /// The dict keys leading to it, outermost first; the last one is the tensor's own key (for
    /// `{"state_dict": {"module.conv1.weight": t}}`: `["state_dict", "module.conv1.weight"]`).
    pub path: Vec<String>,
    /// The tensor, on the CPU.
    pub tensor: tch::Tensor,
}

impl NestedTensor {
    /// The path joined with `.` (`state_dict.module.conv1.weight`), for messages.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// The keys of the dicts holding the tensor (its path without its own key).
    pub fn container(&self) -> &[String] {
        self.path.split_last().map(|(_, c)| c).unwrap_or(&[])
    }

    /// The tensor's own key in its dict.
    pub fn key(&self) -> &str {
        self.path.last().map(String::as_str).unwrap_or("")
    }
}

/// Every tensor of a checkpoint, in file order, with the entries that are not tensors.
#[derive(Debug)]
pub struct Nested {
    /// The file read.
    pub path: PathBuf,
    /// The format it was in.
    pub format: Format,
    /// Every tensor found through nested dicts (tensors inside lists or objects are not
    /// visited). A safetensors file's tensors all have one-element paths.
    pub tensors: Vec<NestedTensor>,
    /// The paths of entries that are neither tensors nor dicts (`epoch`, `arch`,
    /// `optimizer.param_groups`), in file order.
    pub others: Vec<Vec<String>>,
}

/// Reads every tensor of a checkpoint file with its full path through nested dicts. Like
/// [`crate::load`], it executes nothing; unlike it, it does not stop at the first dict that
/// holds tensors.
pub fn load_nested(path: &Path) -> Result<Nested, CheckpointError> {
    let (format, tree) = match read_root(path)? {
        Root::Pickle(format, tree) => (format, tree),
        Root::Flat(sd) => {
            return Ok(Nested {
                path: path.to_path_buf(),
                format: sd.format,
                tensors: sd
                    .tensors
                    .into_iter()
                    .map(|(k, tensor)| NestedTensor {
                        path: vec![k],
                        tensor,
                    })
                    .collect(),
                others: Vec::new(),
            })
        }
    };
    let mut out = Nested {
        path: path.to_path_buf(),
        format,
        tensors: Vec::new(),
        others: Vec::new(),
    };
    let Tree::Dict(items) = tree else {
        return Err(CheckpointError::NoTensors {
            path: path.to_path_buf(),
            keys: "(the top level is not a dict)".to_string(),
        });
    };
    let top_keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    walk(items, &mut Vec::new(), &mut out);
    if out.tensors.is_empty() {
        return Err(CheckpointError::NoTensors {
            path: path.to_path_buf(),
            keys: if top_keys.is_empty() {
                "none".to_string()
            } else {
                top_keys.join(", ")
            },
        });
    }
    Ok(out)
}

fn walk(items: Vec<(String, Tree)>, prefix: &mut Vec<String>, out: &mut Nested) {
    for (key, value) in items {
        prefix.push(key);
        match value {
            Tree::Tensor(tensor) => out.tensors.push(NestedTensor {
                path: prefix.clone(),
                tensor,
            }),
            Tree::Dict(inner) => walk(inner, prefix, out),
            Tree::Other => out.others.push(prefix.clone()),
        }
        prefix.pop();
    }
}

/// When `path` is a TorchScript archive (`torch.jit.save`: a zip with `<name>/code/` and
/// `<name>/constants.pkl` entries), the archive's folder name. TorchScript files hold a program,
/// not a state dict: [`crate::load`] cannot read their weights.
pub fn torchscript_archive(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let archive = zip::ZipArchive::new(file).ok()?;
    let names: Vec<&str> = archive.file_names().collect();
    names.iter().find_map(|n| {
        let (folder, rest) = n.split_once('/')?;
        let code = format!("{folder}/code/");
        (rest == "constants.pkl" && names.iter().any(|m| m.starts_with(&code)))
            .then(|| folder.to_string())
    })
}
