//! `virb-host inspect WEIGHTS`: what a weights file holds (format, nesting, tensors, parameter
//! count, checkpoint layout) and which encoders of the loaded plugins can load it.
use crate::{
    convert::{quoted, thousands},
    plugins::{EncoderEntry, Registry},
};
use abi_stable::std_types::ROption;
use std::path::Path;
use virb_checkpoint::{layout, Nested};
use virb_plugin_api::{EncoderRequest, ExtensionCall, ENCODER_CHECK_WEIGHTS};

/// Tensors listed without `--all`.
pub const SHOWN: usize = 40;

/// How a file fits one encoder.
enum Fit {
    /// A strict load would succeed.
    Fits,
    /// The plugin's `check_weights` reply: missing, unexpected and mismatched tensors.
    Checked(Vec<String>, Vec<String>, Vec<String>),
    /// The plugin offers no check, or the file is unreadable to it: the load error.
    Error(String),
}

fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Asks the encoder's plugin for `virb.encoder.check_weights/v1`; a plugin without it is
/// checked with a strict load on the CPU.
fn fit(entry: &EncoderEntry, path: &Path) -> Fit {
    let weights = path.to_string_lossy().into_owned();
    let call = ExtensionCall::json(serde_json::json!({ "weights": weights }).to_string());
    match entry
        .factory
        .extension(ENCODER_CHECK_WEIGHTS.into(), call)
        .into_result()
    {
        Ok(ROption::RSome(reply)) => match serde_json::from_str::<serde_json::Value>(&reply.json) {
            Ok(v) if v.get("fits").and_then(|f| f.as_bool()) == Some(true) => Fit::Fits,
            Ok(v) => Fit::Checked(
                strings(&v, "missing"),
                strings(&v, "unexpected"),
                strings(&v, "mismatched"),
            ),
            Err(e) => Fit::Error(format!("unreadable check_weights reply: {e}")),
        },
        Ok(ROption::RNone) => match entry
            .factory
            .load(EncoderRequest {
                weights: weights.as_str().into(),
                device: "cpu".into(),
                options_json: "{}".into(),
            })
            .into_result()
        {
            Ok(_) => Fit::Fits,
            Err(e) => Fit::Error(e.to_string()),
        },
        Err(e) => Fit::Error(e.to_string()),
    }
}

fn names(keys: &[String], n: usize) -> String {
    let paths: Vec<Vec<String>> = keys.iter().map(|k| vec![k.clone()]).collect();
    quoted(&paths, n)
}

/// One line per encoder and a verdict: which fit, else the closest and what it lacks.
fn encoders(reg: &Registry, path: &Path, out: &mut Vec<String>) -> bool {
    if reg.encoders.is_empty() {
        out.push("encoders: no encoder plugin loaded (see `virb-host plugins`)".into());
        return false;
    }
    let fits: Vec<(&str, Fit)> = reg
        .encoders
        .iter()
        .map(|e| (e.info.name.as_str(), fit(e, path)))
        .collect();
    // Encoders failing with the same error (an unreadable file) share one line.
    let mut errors: Vec<(Vec<&str>, &str)> = Vec::new();
    for (name, f) in &fits {
        if let Fit::Error(e) = f {
            match errors.iter_mut().find(|(_, text)| text == e) {
                Some((names, _)) => names.push(name),
                None => errors.push((vec![name], e)),
            }
        }
    }
    for (name, f) in &fits {
        out.push(match f {
            Fit::Fits => format!("  {name}: fits"),
            Fit::Checked(m, u, x) => format!(
                "  {name}: does not fit: {} missing, {} unexpected, {} mismatched",
                m.len(),
                u.len(),
                x.len()
            ),
            Fit::Error(e) => match errors.iter().find(|(_, text)| text == e) {
                Some((names, _)) if names.first() == Some(name) => format!(
                    "  {}: does not fit: {}",
                    names.join(", "),
                    e.replace('\n', " ")
                ),
                _ => continue,
            },
        });
    }
    let fitting: Vec<&str> = fits
        .iter()
        .filter(|(_, f)| matches!(f, Fit::Fits))
        .map(|(n, _)| *n)
        .collect();
    if !fitting.is_empty() {
        out.push(format!("fits: {}", fitting.join(", ")));
        return true;
    }
    let closest = fits
        .iter()
        .filter_map(|(n, f)| match f {
            Fit::Checked(m, u, x) => Some((n, m, u, x)),
            _ => None,
        })
        .min_by_key(|(_, m, u, x)| m.len() + u.len() + x.len());
    match closest {
        Some((name, m, u, x)) => {
            let mut what = Vec::new();
            if !m.is_empty() {
                what.push(format!("missing {}", names(m, 6)));
            }
            if !u.is_empty() {
                what.push(format!("unexpected {}", names(u, 6)));
            }
            if !x.is_empty() {
                what.push(format!("mismatched: {}", x[..x.len().min(4)].join("; ")));
            }
            out.push(format!(
                "fits no encoder; closest: {name} ({})",
                what.join("; ")
            ));
        }
        None => out.push("fits no encoder (see the errors above)".into()),
    }
    false
}

/// Tensors grouped by the dicts holding them (numbered dicts, such as optimiser state per
/// parameter, as one `*` group), in file order.
fn nesting(nested: &Nested) -> Vec<String> {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for t in &nested.tensors {
        let c: Vec<String> = t
            .container()
            .iter()
            .map(|s| {
                if s.parse::<u64>().is_ok() {
                    "*".to_string()
                } else {
                    format!("`{s}`")
                }
            })
            .collect();
        let name = if c.is_empty() {
            "the top level".to_string()
        } else {
            c.join(" -> ")
        };
        match groups.iter_mut().find(|(g, _)| *g == name) {
            Some((_, n)) => *n += 1,
            None => groups.push((name, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(g, n)| format!("{n} under {g}"))
        .collect()
}

fn dtype(t: &tch::Tensor) -> String {
    match t.kind() {
        tch::Kind::Float => "float32".into(),
        tch::Kind::Double => "float64".into(),
        tch::Kind::Half => "float16".into(),
        tch::Kind::BFloat16 => "bfloat16".into(),
        tch::Kind::Int64 => "int64".into(),
        tch::Kind::Int => "int32".into(),
        tch::Kind::Uint8 => "uint8".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The report on `path`, line by line; an unreadable file is an error.
pub fn run(reg: &Registry, path: &Path, all: bool) -> Result<Vec<String>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let mut out = vec![format!(
        "file: {} ({} bytes)",
        path.display(),
        thousands(size as i64)
    )];
    if let Some(name) = virb_checkpoint::torchscript_archive(path) {
        out.push(format!("format: TorchScript module (torch.jit.save; archive `{name}/` with code/ and constants.pkl): a program, not a state dict"));
        out.push("TorchScript module: use `encoder: torchscript` in the experiment list".into());
        out.push("encoders:".into());
        encoders(reg, path, &mut out);
        return Ok(out);
    }
    let nested = virb_checkpoint::load_nested(path).map_err(|e| e.to_string())?;
    out.push(format!("format: {}", nested.format.name()));
    out.push(format!("nesting: {}", nesting(&nested).join("; ")));
    if !nested.others.is_empty() {
        out.push(format!(
            "other entries (not tensors; never executed): {}",
            quoted(&nested.others, 12)
        ));
    }
    let shown = if all { nested.tensors.len() } else { SHOWN };
    out.push(format!(
        "tensors ({}{}):",
        nested.tensors.len(),
        if nested.tensors.len() > shown {
            format!(", the first {shown}; --all lists every one")
        } else {
            String::new()
        }
    ));
    let width = nested
        .tensors
        .iter()
        .take(shown)
        .map(|t| t.dotted().len())
        .max()
        .unwrap_or(0);
    for t in nested.tensors.iter().take(shown) {
        out.push(format!(
            "  {:width$}  {:?}  {}",
            t.dotted(),
            t.tensor.size(),
            dtype(&t.tensor)
        ));
    }
    let total: i64 = nested.tensors.iter().map(|t| t.tensor.numel() as i64).sum();
    out.push(format!(
        "total parameters: {} (elements of all {} tensors)",
        thousands(total),
        nested.tensors.len()
    ));
    let found = layout::detect(&nested);
    let conversion = match &found {
        Ok(d) => {
            let conv = layout::convert(&nested, d.layout).map_err(|e| e.to_string())?;
            out.push(format!(
                "layout: {} ({}: {}): a ResNet trunk of {} tensors, {} parameters",
                d.names(),
                d.layout.title,
                d.location(),
                conv.tensors.len(),
                thousands(conv.elements())
            ));
            if d.layout.loadable {
                out.push("encoders read this layout as it is".into());
            } else {
                out.push(format!(
                    "convert it with: virb-host convert --from {} {} {}",
                    d.layout.name,
                    path.display(),
                    layout::suggest_output(path).display()
                ));
            }
            Some(conv)
        }
        Err(e) => {
            out.push(format!("layout: {e}"));
            None
        }
    };
    out.push("encoders:".into());
    let fits = encoders(reg, path, &mut out);
    if let (false, Some(conv), Ok(d)) = (fits, conversion, &found) {
        if !d.layout.loadable {
            converted_fits(reg, d.layout.name, &conv, &mut out);
        }
    }
    Ok(out)
}

/// Which encoders the file would fit once converted (checked on a temporary safetensors file).
fn converted_fits(reg: &Registry, layout: &str, conv: &layout::Conversion, out: &mut Vec<String>) {
    let tmp = std::env::temp_dir().join(format!(
        "virb-inspect-{}-{layout}.safetensors",
        std::process::id()
    ));
    if let Err(e) = virb_checkpoint::write::write_safetensors(&tmp, &conv.tensors, &[], true) {
        out.push(format!("(could not check the converted trunk: {e})"));
        return;
    }
    let mut after = Vec::new();
    encoders(reg, &tmp, &mut after);
    let _ = std::fs::remove_file(&tmp);
    if let Some(verdict) = after.last() {
        out.push(format!("after `convert --from {layout}`: {verdict}"));
    }
}
