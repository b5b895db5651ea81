//! Matching a weights file against an architecture: the strict load, and the
//! `virb.encoder.check_weights/v1` capability that reports the same comparison without loading.
use crate::model::{expected_shapes, Arch};
use std::{collections::HashMap, path::Path};
use tch::nn;
use virb_plugin_api::PluginError;

/// Keys that are never required and never unexpected: the unused classifier and the
/// batch-norm step counters.
fn ignored(key: &str) -> bool {
    key.starts_with("fc.") || key.ends_with("num_batches_tracked")
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        text.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    text
}

/// How a file's tensors compare with what an architecture loads.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The prefix stripped from every key (`model.`, `module.`), or empty.
    pub prefix: &'static str,
    /// Expected tensors the file lacks, sorted.
    pub missing: Vec<String>,
    /// File tensors the architecture does not have, sorted.
    pub unexpected: Vec<String>,
    /// ``"`key` has shape [..], expected [..]"``.
    pub mis_shaped: Vec<String>,
    /// ``"`key` is int64"``: not floating point.
    pub mis_typed: Vec<String>,
    /// `(index in the file, architecture key)` of every tensor that fits.
    pub matched: Vec<(usize, String)>,
}

impl Comparison {
    /// Nothing missing, unexpected, mis-shaped or mis-typed.
    pub fn fits(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mis_shaped.is_empty()
            && self.mis_typed.is_empty()
    }
}

/// Compares a file's `(name, tensor)` pairs with the `expected` names and shapes.
pub fn compare(
    tensors: &[(String, tch::Tensor)],
    expected: &HashMap<String, Vec<i64>>,
) -> Comparison {
    // Strip a prefix shared by all keys: ViRB writes `model.`, DataParallel `module.`.
    let prefix = ["model.", "module.", "model.module."]
        .into_iter()
        .filter(|p| tensors.iter().all(|(k, _)| k.starts_with(p)))
        .max_by_key(|p| p.len())
        .unwrap_or("");
    let mut c = Comparison {
        prefix,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (i, (key, src)) in tensors.iter().enumerate() {
        let key = &key[prefix.len()..];
        if ignored(key) {
            continue;
        }
        match expected.get(key) {
            Some(shape) => {
                if !src.is_floating_point() {
                    let kind = format!("{:?}", src.kind()).to_lowercase();
                    c.mis_typed.push(format!("`{key}` is {kind}"));
                } else if src.size() != *shape {
                    c.mis_shaped.push(format!(
                        "`{key}` has shape {:?}, expected {shape:?}",
                        src.size()
                    ));
                } else {
                    seen.insert(key.to_string());
                    c.matched.push((i, key.to_string()));
                }
            }
            None => c.unexpected.push(key.to_string()),
        }
    }
    c.missing = expected
        .keys()
        .filter(|k| !seen.contains(*k) && !ignored(k))
        .cloned()
        .collect();
    c.missing.sort();
    c.unexpected.sort();
    c
}

/// Adds the conversion hint to a load error when the file has a known convertible layout
/// (MoCo, SwAV, VISSL, ...): which layout it looks like and the `virb-host convert` command.
fn with_hint(err: PluginError, path: &Path, fallback: &str) -> PluginError {
    match virb_checkpoint::layout::conversion_hint(path) {
        Some(hint) => err.with_help(hint),
        None => err.with_help(fallback),
    }
}

fn read(path: &Path) -> Result<virb_checkpoint::StateDict, PluginError> {
    virb_checkpoint::load(path).map_err(|e| {
        with_hint(
            PluginError::weights(e.to_string()),
            path,
            "give a ResNet state dict saved with torch.save(model.state_dict(), path), or a .safetensors file",
        )
    })
}

/// Loads `path` into `vs` strictly: a missing, unexpected, mis-shaped or non-float tensor is an
/// error naming it (`fc.*` and `num_batches_tracked` are ignored).
pub fn copy_weights(path: &Path, vs: &nn::VarStore) -> Result<(), PluginError> {
    let sd = read(path)?;
    let file = path.display();
    let mut variables = vs.variables();
    let shapes: HashMap<String, Vec<i64>> = variables
        .iter()
        .map(|(k, t)| (k.clone(), t.size()))
        .collect();
    let c = compare(&sd.tensors, &shapes);
    if !c.mis_typed.is_empty() {
        return Err(PluginError::weights(format!(
            "{file}: {} tensor(s) are not floating point: {}{}",
            c.mis_typed.len(),
            c.mis_typed.iter().take(8).cloned().collect::<Vec<_>>().join("; "),
            if c.mis_typed.len() > 8 { "; ..." } else { "" }
        ))
        .with_help("weights must be float32, float16, bfloat16 or float64; the file holds integer tensors (quantised or not a model's weights?)"));
    }
    if !c.mis_shaped.is_empty() {
        let err = PluginError::weights(format!(
            "{file}: {} tensor(s) do not match the architecture: {}",
            c.mis_shaped.len(),
            c.mis_shaped.join("; ")
        ));
        return Err(with_hint(
            err,
            path,
            "the file is for another architecture or width; check the experiment list",
        ));
    }
    if !c.missing.is_empty() {
        let err = PluginError::weights(format!(
            "{file}: missing {} tensor(s): {}",
            c.missing.len(),
            list(&c.missing)
        ));
        return Err(with_hint(
            err,
            path,
            if c.prefix.is_empty() && !c.unexpected.is_empty() {
                "the keys have an unknown prefix; convert the checkpoint to torchvision names (optionally prefixed with `model.`)"
            } else {
                "the file is incomplete or for another architecture"
            },
        ));
    }
    if !c.unexpected.is_empty() {
        let err = PluginError::weights(format!(
            "{file}: {} unexpected tensor(s): {}",
            c.unexpected.len(),
            list(&c.unexpected)
        ));
        return Err(with_hint(
            err,
            path,
            "the file holds more than a torchvision ResNet; convert it to a plain state dict",
        ));
    }
    for (i, key) in &c.matched {
        if let (Some(dst), Some((_, src))) = (variables.get_mut(key), sd.tensors.get(*i)) {
            tch::no_grad(|| dst.f_copy_(src))?;
        }
    }
    Ok(())
}

/// The `virb.encoder.check_weights/v1` reply for `path` against `arch`: `{"fits", "missing",
/// "unexpected", "mismatched", "prefix"}` (names as this plugin sees them, after the prefix it
/// strips; `mismatched` holds mis-shaped and non-float tensors). An unreadable file is an error.
pub fn check(path: &Path, arch: Arch) -> Result<serde_json::Value, PluginError> {
    let sd = read(path)?;
    let shapes: HashMap<String, Vec<i64>> = expected_shapes(arch).into_iter().collect();
    let c = compare(&sd.tensors, &shapes);
    let mut mismatched = c.mis_shaped.clone();
    mismatched.extend(c.mis_typed.iter().cloned());
    Ok(serde_json::json!({
        "fits": c.fits(),
        "missing": c.missing,
        "unexpected": c.unexpected,
        "mismatched": mismatched,
        "prefix": c.prefix,
    }))
}
