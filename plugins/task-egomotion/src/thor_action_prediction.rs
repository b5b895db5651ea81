//! `THORActionPrediction`: which action (MoveAhead, RotateLeft, RotateRight, LookUp, LookDown)
//! an AI2-THOR agent took between two frames.
//!
//! Layout: `<data>/thor_action_prediction/{train,val}_labels.txt`, one
//! `"<prefix> <ActionName>"` per line, with the frames at
//! `<data>/thor_action_prediction/<prefix>_rgb_a.jpg` and `..._rgb_b.jpg`. `val` is the test split.
use std::path::{Path, PathBuf};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Split,
    Task, TaskInfo,
};
use virb_plugin_kit::{
    dataset::{classification_info, ImageList},
    draw,
    heads::ClassifierHead,
};

/// The task.
pub struct ThorActionPrediction;

const NAME: &str = "THORActionPrediction";
const DIR: &str = "thor_action_prediction";
const LAYOUT: &str = "thor_action_prediction/{train,val}_labels.txt (\"<prefix> <Action>\" per line) + <prefix>_rgb_a.jpg, <prefix>_rgb_b.jpg";
/// The actions, in class order.
pub const ACTIONS: [&str; 5] = [
    "MoveAhead",
    "RotateLeft",
    "RotateRight",
    "LookUp",
    "LookDown",
];

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "val",
        // Unreachable in practice: a split this plugin does not know arrives as an error from
        // `DatasetRequest::split()`. Treated like the test split.
        _ => "val",
    }
}

fn labels_path(root: &Path, split: Split) -> PathBuf {
    root.join(DIR)
        .join(format!("{}_labels.txt", split_name(split)))
}

fn read_labels(root: &Path, split: Split) -> Result<Vec<(Vec<PathBuf>, i64)>, PluginError> {
    let path = labels_path(root, split);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        PluginError::data(format!("{NAME}: cannot read label file {}: {e}", path.display())).with_help(format!(
            "expected {LAYOUT} under {} (from ViRB's thor_egomotion.zip); or run `virb-host fixtures {NAME} {}`",
            root.display(),
            root.display()
        ))
    })?;
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (prefix, action) = line.trim().rsplit_once(' ').ok_or_else(|| {
            PluginError::data(format!(
                "{NAME}: {}:{}: expected \"<prefix> <Action>\", found \"{line}\"",
                path.display(),
                n + 1
            ))
        })?;
        let label = ACTIONS
            .iter()
            .position(|a| *a == action.trim())
            .ok_or_else(|| {
                PluginError::data(format!(
                    "{NAME}: {}:{}: unknown action \"{action}\"; expected one of {}",
                    path.display(),
                    n + 1,
                    ACTIONS.join(", ")
                ))
            })?;
        let frames: Vec<PathBuf> = ["a", "b"]
            .iter()
            .map(|f| {
                root.join(DIR)
                    .join(format!("{}_rgb_{f}.jpg", prefix.trim()))
            })
            .collect();
        if let Some(missing) = frames.iter().find(|f| !f.is_file()) {
            return Err(PluginError::data(format!(
                "{NAME}: frame {} (line {} of {}) not found",
                missing.display(),
                n + 1,
                path.display()
            ))
            .with_help(format!("expected layout: {LAYOUT}")));
        }
        out.push((frames, label as i64));
    }
    Ok(out)
}

impl Task for ThorActionPrediction {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(classification_info(NAME, "egomotion", DIR, LAYOUT, 2)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let root = Path::new(request.data_root.as_str());
            let items = read_labels(root, split)?;
            let classes = ACTIONS.iter().map(|a| a.to_string()).collect();
            let source = labels_path(root, split).display().to_string();
            ImageList {
                items,
                classes,
                image_size: request.image_size,
                source,
            }
            .boxed(NAME)
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| Ok(ClassifierHead::new(&request)?.boxed()))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let size = request.image_size.max(16);
            let mut rng = draw::Rng::new(request.seed);
            let actions = ACTIONS.len() as u32;
            let mut total = 0;
            for (split, per_class) in request.per_split() {
                let mut lines = String::new();
                for i in 0..per_class * actions {
                    let action = i % actions;
                    let prefix =
                        format!("{}/FloorPlan{}/step_{i:05}", split_name(split), i % 4 + 1);
                    let (a, b) = draw::motion_pair(action, actions, size, &mut rng);
                    for (f, px) in [("a", &a), ("b", &b)] {
                        draw::write_jpeg(
                            &root.join(DIR).join(format!("{prefix}_rgb_{f}.jpg")),
                            size,
                            size,
                            px,
                        )?;
                    }
                    lines.push_str(&format!("{prefix} {}\n", ACTIONS[action as usize]));
                    total += 1;
                }
                draw::write_text(&labels_path(root, split), &lines)?;
            }
            Ok(RString::from(format!(
                "{NAME}: {actions} actions, {total} frame pairs in {}",
                root.join(DIR).display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(ThorActionPrediction);
