//! Where the self-supervised projects ViRB evaluated leave the ResNet trunk in their checkpoints,
//! as data: one [`Layout`] per project (the key mappings of ViRB's conversion scripts).
//! [`detect`] finds a checkpoint's layout; [`convert`] extracts its trunk under torchvision's
//! names (`conv1.weight`, `layer1.0.conv1.weight`, ...), dropping every head (`fc`, projection
//! heads, prototypes, MoCo's key encoder and queue) and everything outside the trunk's dict.
use crate::{Nested, NestedTensor};
use std::path::PathBuf;

/// The top-level modules of a torchvision ResNet trunk: a converted file keeps exactly the
/// tensors under these (the classifier `fc` and every other head are dropped).
pub const TRUNK_MODULES: [&str; 6] = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"];

/// One project's checkpoint layout.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    /// The name `virb-host convert --from` takes (`moco`).
    pub name: &'static str,
    /// The project, as people call it (`MoCo`).
    pub title: &'static str,
    /// What writes such files.
    pub source: &'static str,
    /// The nested dicts the trunk may sit in, tried in order (`[]`: the top-level dict).
    pub containers: &'static [&'static [&'static str]],
    /// The prefix of the trunk's keys inside that dict; the rest is a torchvision name.
    pub prefix: &'static str,
    /// The ResNet plugin reads this layout as it is (no conversion needed).
    pub loadable: bool,
}

const TOP: &[&str] = &[];
const STATE_DICT: &[&str] = &["state_dict"];
const VISSL_TRUNK: &[&str] = &["classy_state_dict", "base_model", "model", "trunk"];

/// Every known layout. `pirl` and `exemplar` share one mapping (both are VISSL checkpoints).
pub const LAYOUTS: &[Layout] = &[
    Layout {
        name: "swav",
        title: "SwAV",
        source: "facebookresearch/swav: main_swav.py's {epoch, state_dict, optimizer}, or the released flat file",
        containers: &[TOP, STATE_DICT],
        prefix: "module.",
        loadable: false,
    },
    Layout {
        name: "moco",
        title: "MoCo",
        source: "facebookresearch/moco (v1 and v2): {epoch, arch, state_dict, optimizer}",
        containers: &[STATE_DICT, TOP],
        prefix: "module.encoder_q.",
        loadable: false,
    },
    Layout {
        name: "pirl",
        title: "PIRL (VISSL)",
        source: "facebookresearch/vissl: classy_state_dict -> base_model -> model -> trunk",
        containers: &[VISSL_TRUNK],
        prefix: "_feature_blocks.",
        loadable: false,
    },
    Layout {
        name: "simsiam",
        title: "SimSiam",
        source: "facebookresearch/simsiam: {epoch, arch, state_dict, optimizer}",
        containers: &[STATE_DICT, TOP],
        prefix: "module.encoder.",
        loadable: false,
    },
    Layout {
        name: "exemplar",
        title: "Exemplar (VISSL)",
        source: "facebookresearch/vissl: classy_state_dict -> base_model -> model -> trunk",
        containers: &[VISSL_TRUNK],
        prefix: "_feature_blocks.",
        loadable: false,
    },
    Layout {
        name: "humantorch",
        title: "humantorch",
        source: "humantorch's training code (legacy torch.save format)",
        containers: &[STATE_DICT, TOP],
        prefix: "feature_extractor.resnet.",
        loadable: false,
    },
    Layout {
        name: "torchvision",
        title: "torchvision",
        source: "torch.save(model.state_dict()) of a torchvision ResNet, or a checkpoint holding it",
        containers: &[TOP, STATE_DICT, &["model"], &["module"]],
        prefix: "",
        loadable: true,
    },
    Layout {
        name: "virb",
        title: "ViRB",
        source: "ViRB's conversion scripts (torchvision names prefixed `model.`)",
        containers: &[TOP, STATE_DICT],
        prefix: "model.",
        loadable: true,
    },
];

/// The layout called `name`.
pub fn by_name(name: &str) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.name == name)
}

impl Layout {
    /// Whether two layouts convert every file the same way (PIRL and Exemplar do).
    pub fn same_mapping(&self, other: &Layout) -> bool {
        self.containers == other.containers && self.prefix == other.prefix
    }

    /// Where this layout keeps the trunk, in words: ``keys `module.encoder_q.*` under
    /// `state_dict` or at the top level``.
    pub fn location(&self) -> String {
        let places: Vec<String> = self.containers.iter().map(|c| place(c)).collect();
        format!("keys `{}*` {}", self.prefix, places.join(" or "))
    }
}

fn place<S: AsRef<str>>(container: &[S]) -> String {
    if container.is_empty() {
        "at the top level".to_string()
    } else {
        let path: Vec<String> = container
            .iter()
            .map(|s| format!("`{}`", s.as_ref()))
            .collect();
        format!("under {}", path.join(" -> "))
    }
}

/// Why a checkpoint could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// `--from` named a layout the file does not have.
    #[error("{path} is not a {title} checkpoint: it has no ResNet trunk ({location}; at least `conv1.weight` and `layer1.*`); {hint}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The layout asked for.
        title: &'static str,
        /// Where that layout keeps the trunk.
        location: String,
        /// What the file looks like instead, and its first keys.
        hint: String,
    },
    /// The file matches no layout.
    #[error(
        "{path} matches no known checkpoint layout (tried {tried}); its first keys: {first_keys}"
    )]
    Unknown {
        /// The file.
        path: PathBuf,
        /// Every layout tried, with where it looks.
        tried: String,
        /// The file's first tensor paths.
        first_keys: String,
    },
    /// The file matches layouts that would convert it differently.
    #[error("{path} matches more than one layout: {candidates}; pass the right one with --from")]
    Ambiguous {
        /// The file.
        path: PathBuf,
        /// The layouts that match, with where each found a trunk.
        candidates: String,
    },
}

/// A checkpoint's detected layout.
#[derive(Debug)]
pub struct Detection {
    /// The layout (the first of those with the same mapping).
    pub layout: &'static Layout,
    /// Other layouts with the same mapping that match as well (`exemplar` beside `pirl`).
    pub same: Vec<&'static Layout>,
    /// The nested dicts where the trunk was found.
    pub container: Vec<String>,
}

impl Detection {
    /// The layout's name, with the names sharing its mapping: `pirl (or exemplar: same mapping)`.
    pub fn names(&self) -> String {
        if self.same.is_empty() {
            return self.layout.name.to_string();
        }
        let others: Vec<&str> = self.same.iter().map(|l| l.name).collect();
        format!(
            "{} (or {}: same mapping)",
            self.layout.name,
            others.join(", ")
        )
    }

    /// Where the trunk is, in words: ``keys `module.encoder_q.*` under `state_dict` ``.
    pub fn location(&self) -> String {
        format!("keys `{}*` {}", self.layout.prefix, place(&self.container))
    }
}

/// The torchvision name of `t` under `layout`, if `t` is a trunk tensor in `container`.
fn trunk_name<'a>(t: &'a NestedTensor, layout: &Layout, container: &[&str]) -> Option<&'a str> {
    if t.container() != container {
        return None;
    }
    let rest = t.key().strip_prefix(layout.prefix)?;
    let module = rest.split('.').next()?;
    TRUNK_MODULES.contains(&module).then_some(rest)
}

/// The first container of `layout` holding a trunk: `conv1.weight` and some `layer1.*`.
fn find_container(nested: &Nested, layout: &Layout) -> Option<&'static [&'static str]> {
    layout.containers.iter().copied().find(|c| {
        let names: Vec<&str> = nested
            .tensors
            .iter()
            .filter_map(|t| trunk_name(t, layout, c))
            .collect();
        names.contains(&"conv1.weight") && names.iter().any(|n| n.starts_with("layer1."))
    })
}

/// The first `n` tensor paths of a checkpoint, quoted, for messages.
pub fn first_keys(nested: &Nested, n: usize) -> String {
    let mut text: Vec<String> = nested
        .tensors
        .iter()
        .take(n)
        .map(|t| format!("`{}`", t.dotted()))
        .collect();
    if nested.tensors.len() > n {
        text.push(format!("... ({} tensors in all)", nested.tensors.len()));
    }
    text.join(", ")
}

/// Finds the layout of a checkpoint. Layouts with the same mapping (PIRL, Exemplar) are one
/// answer; layouts that would convert the file differently are [`LayoutError::Ambiguous`].
pub fn detect(nested: &Nested) -> Result<Detection, LayoutError> {
    let mut found: Vec<Detection> = Vec::new();
    for layout in LAYOUTS {
        let Some(container) = find_container(nested, layout) else {
            continue;
        };
        match found.iter_mut().find(|d| d.layout.same_mapping(layout)) {
            Some(d) => d.same.push(layout),
            None => found.push(Detection {
                layout,
                same: Vec::new(),
                container: container.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }
    match found.len() {
        0 => Err(LayoutError::Unknown {
            path: nested.path.clone(),
            tried: LAYOUTS
                .iter()
                .map(|l| format!("{}: {}", l.name, l.location()))
                .collect::<Vec<_>>()
                .join("; "),
            first_keys: first_keys(nested, 8),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(LayoutError::Ambiguous {
            path: nested.path.clone(),
            candidates: found
                .iter()
                .map(|d| format!("{} ({})", d.names(), d.location()))
                .collect::<Vec<_>>()
                .join(" and "),
        }),
    }
}

/// A checkpoint's trunk under torchvision's names, and what was left out.
#[derive(Debug)]
pub struct Conversion {
    /// The layout used.
    pub layout: &'static Layout,
    /// The nested dicts the trunk was taken from.
    pub container: Vec<String>,
    /// The trunk's tensors under torchvision names, in file order (handles sharing the
    /// checkpoint's storage).
    pub tensors: Vec<(String, tch::Tensor)>,
    /// How many kept tensors changed name.
    pub renamed: usize,
    /// Dropped tensors by group (`state_dict.module.encoder_k.*`), with counts, in file order.
    pub dropped: Vec<(String, usize)>,
}

impl Conversion {
    /// The number of dropped tensors.
    pub fn dropped_count(&self) -> usize {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// The number of elements in the kept tensors.
    pub fn elements(&self) -> i64 {
        self.tensors.iter().map(|(_, t)| t.numel() as i64).sum()
    }
}

/// Extracts the trunk of `nested` as `layout` places it. A file without a trunk where `layout`
/// looks is [`LayoutError::Mismatch`], which says which layout the file has instead.
pub fn convert(nested: &Nested, layout: &'static Layout) -> Result<Conversion, LayoutError> {
    let Some(container) = find_container(nested, layout) else {
        let hint = match detect(nested) {
            Ok(d) => format!(
                "it looks like a {} checkpoint ({}): use --from {}",
                d.layout.title,
                d.location(),
                d.layout.name
            ),
            Err(LayoutError::Ambiguous { candidates, .. }) => {
                format!("it matches {candidates}")
            }
            Err(_) => format!(
                "it matches no known layout; its first keys: {}",
                first_keys(nested, 8)
            ),
        };
        return Err(LayoutError::Mismatch {
            path: nested.path.clone(),
            title: layout.title,
            location: layout.location(),
            hint,
        });
    };
    let mut tensors = Vec::new();
    let mut renamed = 0;
    let mut dropped: Vec<(String, usize)> = Vec::new();
    for t in &nested.tensors {
        match trunk_name(t, layout, container) {
            Some(name) => {
                if name != t.dotted() {
                    renamed += 1;
                }
                tensors.push((name.to_string(), t.tensor.shallow_clone()));
            }
            None => {
                let g = group(t, container, layout.prefix);
                match dropped.iter_mut().find(|(name, _)| *name == g) {
                    Some((_, n)) => *n += 1,
                    None => dropped.push((g, 1)),
                }
            }
        }
    }
    Ok(Conversion {
        layout,
        container: container.iter().map(|s| s.to_string()).collect(),
        tensors,
        renamed,
        dropped,
    })
}

/// The group a dropped tensor is reported in: its path down to the first segment where it
/// leaves the trunk, plus one (`state_dict.module.encoder_k.*`, `module.prototypes.weight`,
/// `optimizer.*`).
fn group(t: &NestedTensor, container: &[&str], prefix: &str) -> String {
    let star = |segs: &[String], whole: usize| {
        let text = segs.join(".");
        if segs.len() < whole {
            format!("{text}.*")
        } else {
            text
        }
    };
    if t.container() != container {
        let common = t
            .path
            .iter()
            .zip(container)
            .take_while(|(a, b)| a == *b)
            .count();
        let end = (common + 1).min(t.path.len());
        return star(&t.path[..end], t.path.len());
    }
    let mut segs: Vec<String> = t.container().to_vec();
    let key: Vec<String> = t.key().split('.').map(str::to_string).collect();
    let common = key
        .iter()
        .zip(prefix.split('.').filter(|s| !s.is_empty()))
        .take_while(|(a, b)| a.as_str() == *b)
        .count();
    let end = (common + 1).min(key.len());
    let whole = segs.len() + key.len();
    segs.extend(key.into_iter().take(end));
    star(&segs, whole)
}

#[path = "layout_hint.rs"]
mod hint;
pub use hint::{conversion_hint, suggest_output};

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
