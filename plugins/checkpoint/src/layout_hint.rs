//! What to tell a user whose weights file is a project's checkpoint: the output name and the
//! `virb-host convert` command.
use super::detect;
use std::path::{Path, PathBuf};

/// Where `convert` should write the trunk of `path` by default: its name with the checkpoint
/// extension (`.pth.tar`, `.pth`, `.pt`, `.tar`, `.torch`, `.ckpt`) replaced by `.safetensors`.
pub fn suggest_output(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [
        ".pth.tar",
        ".pth",
        ".pt",
        ".tar",
        ".torch",
        ".ckpt",
        ".safetensors",
    ]
    .iter()
    .find_map(|ext| name.strip_suffix(ext))
    .unwrap_or(&name);
    let mut out = format!("{stem}.safetensors");
    if out == name {
        out = format!("{stem}.converted.safetensors");
    }
    path.with_file_name(out)
}

/// What to say when an encoder cannot load `path` and the file has a convertible layout: ``this
/// looks like a MoCo checkpoint (keys `module.encoder_q.*` under `state_dict`); convert it with
/// `virb-host convert --from moco IN OUT.safetensors` ...``. `None` when the file cannot be read,
/// matches no layout or several, or is already in a layout encoders read.
pub fn conversion_hint(path: &Path) -> Option<String> {
    let nested = crate::load_nested(path).ok()?;
    let found = detect(&nested).ok()?;
    if found.layout.loadable {
        return None;
    }
    let out = suggest_output(path);
    Some(format!(
        "this looks like a {} checkpoint ({}); convert it with `virb-host convert --from {} {} {}` and name {} in the experiment list",
        found.layout.title,
        found.location(),
        found.layout.name,
        path.display(),
        out.display(),
        out.display()
    ))
}
