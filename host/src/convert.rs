//! `virb-host convert`: extracts the ResNet trunk of a self-supervised project's checkpoint
//! (SwAV, MoCo, PIRL, SimSiam, Exemplar, humantorch; see `virb_checkpoint::layout`) under
//! torchvision's names and writes it as a safetensors file, which the ResNet encoder reads as it
//! is and which, unlike a pickle, cannot carry code.
use std::path::{Path, PathBuf};
use virb_checkpoint::{layout, write, Nested};

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The output exists and `--force` was not given.
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// The input is a TorchScript program, not a checkpoint.
    #[error("{0} is a TorchScript module (torch.jit.save), not a checkpoint: there is nothing to convert; name it in the experiment list with `encoder: torchscript`")]
    TorchScript(PathBuf),
    /// `--from` names no layout.
    #[error("unknown layout `{0}`; expected one of: {names}, or auto", names = layout_names())]
    UnknownLayout(String),
    /// The input could not be read.
    #[error(transparent)]
    Read(#[from] virb_checkpoint::CheckpointError),
    /// The input does not have the layout asked for, or no / several known layouts.
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// The output could not be written.
    #[error(transparent)]
    Write(#[from] write::WriteError),
}

/// The names `--from` accepts besides `auto`, comma-separated.
pub fn layout_names() -> String {
    layout::LAYOUTS
        .iter()
        .map(|l| l.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Groups digits by thousands: `11,689,512`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// Quoted paths, at most `n`, with a count of the rest.
pub fn quoted(paths: &[Vec<String>], n: usize) -> String {
    let mut text: Vec<String> = paths
        .iter()
        .take(n)
        .map(|p| format!("`{}`", p.join(".")))
        .collect();
    if paths.len() > n {
        text.push(format!("and {} more", paths.len() - n));
    }
    text.join(", ")
}

/// Converts `input` as `from` (a layout name or `auto`) into `output`; returns the report lines.
pub fn run(
    from: &str,
    input: &Path,
    output: &Path,
    force: bool,
) -> Result<Vec<String>, ConvertError> {
    if !force && output.exists() {
        return Err(ConvertError::Exists(output.to_path_buf()));
    }
    let wanted = match from {
        "auto" => None,
        name => {
            Some(layout::by_name(name).ok_or_else(|| ConvertError::UnknownLayout(name.into()))?)
        }
    };
    if virb_checkpoint::torchscript_archive(input).is_some() {
        return Err(ConvertError::TorchScript(input.to_path_buf()));
    }
    let nested = virb_checkpoint::load_nested(input)?;
    let mut lines = vec![format!(
        "read {} ({}): {} tensor(s)",
        input.display(),
        nested.format.name(),
        nested.tensors.len()
    )];
    let chosen = match wanted {
        Some(l) => l,
        None => {
            let found = layout::detect(&nested)?;
            lines.push(format!(
                "detected layout: {} ({}: {})",
                found.names(),
                found.layout.title,
                found.location()
            ));
            found.layout
        }
    };
    let conv = layout::convert(&nested, chosen)?;
    if wanted.is_some() {
        lines.push(format!(
            "layout: {} ({}: keys `{}*` {})",
            chosen.name,
            chosen.title,
            chosen.prefix,
            where_found(&conv)
        ));
    }
    report(&nested, &conv, &mut lines);
    let source = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let metadata = [
        ("format", "pt".to_string()),
        ("virb.converted_from", chosen.name.to_string()),
        ("virb.source_file", source),
    ];
    write::write_safetensors(output, &conv.tensors, &metadata, force).map_err(|e| match e {
        write::WriteError::Exists(p) => ConvertError::Exists(p),
        other => ConvertError::Write(other),
    })?;
    lines.push(format!(
        "wrote {}: {} tensor(s), {} values, safetensors (a header and raw tensor bytes: nothing in it can run code)",
        output.display(),
        conv.tensors.len(),
        thousands(conv.elements())
    ));
    if output.extension().is_none_or(|e| e != "safetensors") {
        lines.push(format!(
            "note: {} is a safetensors file whatever its name; `.safetensors` says so to people",
            output.display()
        ));
    }
    if chosen.loadable {
        lines.push(format!(
            "note: encoders read the {} layout as it is; this conversion only dropped the heads and changed the format",
            chosen.name
        ));
    }
    Ok(lines)
}

fn where_found(conv: &layout::Conversion) -> String {
    if conv.container.is_empty() {
        "at the top level".into()
    } else {
        let c: Vec<String> = conv.container.iter().map(|s| format!("`{s}`")).collect();
        format!("under {}", c.join(" -> "))
    }
}

/// What was kept, renamed, dropped and ignored.
fn report(nested: &Nested, conv: &layout::Conversion, lines: &mut Vec<String>) {
    let from: String = conv
        .container
        .iter()
        .map(|c| format!("{c}."))
        .collect::<String>()
        + conv.layout.prefix;
    lines.push(if conv.renamed > 0 {
        format!(
            "kept {} tensor(s) of the ResNet trunk, {} renamed from `{from}*` to torchvision names `*`",
            conv.tensors.len(),
            conv.renamed
        )
    } else {
        format!(
            "kept {} tensor(s) of the ResNet trunk, names unchanged (torchvision names)",
            conv.tensors.len()
        )
    });
    if conv.dropped.is_empty() {
        lines.push("dropped nothing".into());
    } else {
        let groups: Vec<String> = conv
            .dropped
            .iter()
            .map(|(g, n)| format!("`{g}` ({n})"))
            .collect();
        lines.push(format!(
            "dropped {} tensor(s) outside the trunk (heads, other networks, optimiser state): {}",
            conv.dropped_count(),
            groups.join(", ")
        ));
    }
    if !nested.others.is_empty() {
        lines.push(format!(
            "ignored {} non-tensor entr{}: {}",
            nested.others.len(),
            if nested.others.len() == 1 { "y" } else { "ies" },
            quoted(&nested.others, 8)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(11_689_512), "11,689,512");
        assert_eq!(thousands(-1234), "-1,234");
    }
}
