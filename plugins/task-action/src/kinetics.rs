//! `KineticsActionPrediction`: Kinetics-400 action classes from 6 frames per video.
//!
//! Layout (kinetics-downloader's, with frames pre-extracted):
//! `<data>/kinetics400/annotations/{train,validate}.json` (an object keyed by video id whose
//! values hold `annotations.label`) and the frames `<data>/kinetics400/{train,validate}/<first
//! two characters of the id>/<id>_*`. `validate` is the test split. A video with fewer than 6
//! frames is skipped (as in ViRB); otherwise its first 6 frames in sorted name order are used
//! (ViRB kept the first 6 in directory order, which depends on the file system). Classes are the
//! sorted labels of both annotation files, so they agree between the splits.
use serde_json::Value;
use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};
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
pub struct KineticsActionPrediction;

const NAME: &str = "KineticsActionPrediction";
const DIR: &str = "kinetics400";
const FRAMES: usize = 6;
const LAYOUT: &str = "kinetics400/annotations/{train,validate}.json + kinetics400/{train,validate}/<id[0..2]>/<id>_* (6+ extracted frames per video)";
const FIXTURE_LABELS: [&str; 6] = [
    "abseiling",
    "air drumming",
    "answering questions",
    "applauding",
    "applying cream",
    "archery",
];

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "validate",
        // Unreachable in practice: a split this plugin does not know arrives as an error from
        // `DatasetRequest::split()`. Treated like the test split.
        _ => "validate",
    }
}

fn annotations_path(root: &Path, split: Split) -> PathBuf {
    root.join(DIR)
        .join("annotations")
        .join(format!("{}.json", split_name(split)))
}

/// `(video id, label)` of every annotated video of a split, in id order.
fn read_annotations(root: &Path, split: Split) -> Result<Vec<(String, String)>, PluginError> {
    let path = annotations_path(root, split);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        PluginError::data(format!("{NAME}: cannot read annotation file {}: {e}", path.display())).with_help(format!(
            "expected {LAYOUT} under {} (kinetics-downloader's annotations, frames extracted per video); or run `virb-host fixtures {NAME} {}`",
            root.display(),
            root.display()
        ))
    })?;
    let bad = |what: String| PluginError::data(format!("{NAME}: {}: {what}", path.display()));
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let videos = json
        .as_object()
        .ok_or_else(|| bad("not a JSON object keyed by video id".into()))?;
    let mut out: Vec<(String, String)> = videos
        .iter()
        .map(|(id, v)| {
            v.pointer("/annotations/label")
                .and_then(Value::as_str)
                .map(|l| (id.clone(), l.to_string()))
                .ok_or_else(|| bad(format!("video {id} has no annotations.label")))
        })
        .collect::<Result<_, _>>()?;
    out.sort();
    Ok(out)
}

impl Task for KineticsActionPrediction {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| {
            Ok(classification_info(
                NAME,
                "action",
                DIR,
                LAYOUT,
                FRAMES as u32,
            ))
        })
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let split = request.split()?;
            let this = read_annotations(root, split)?;
            let other = read_annotations(root, split.other())?;
            let classes: Vec<String> = this
                .iter()
                .chain(&other)
                .map(|(_, l)| l.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let frames_dir = root.join(DIR).join(split_name(split));
            if !frames_dir.is_dir() {
                return Err(PluginError::data(format!(
                    "{NAME}: frame folder {} not found",
                    frames_dir.display()
                ))
                .with_help(format!("expected layout: {LAYOUT}")));
            }
            // One listing per two-character folder, shared by its videos.
            let mut listings: HashMap<String, Vec<String>> = HashMap::new();
            let mut items = Vec::new();
            let mut skipped = 0;
            for (id, label) in this {
                let sub: String = id.chars().take(2).collect();
                let names = listings.entry(sub.clone()).or_insert_with(|| {
                    let mut names: Vec<String> = std::fs::read_dir(frames_dir.join(&sub))
                        .map(|d| {
                            d.flatten()
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    names.sort();
                    names
                });
                let prefix = format!("{id}_");
                let frames: Vec<PathBuf> = names
                    .iter()
                    .filter(|n| n.starts_with(&prefix))
                    .take(FRAMES)
                    .map(|n| frames_dir.join(&sub).join(n))
                    .collect();
                if frames.len() < FRAMES {
                    skipped += 1;
                    continue;
                }
                items.push((frames, classes.binary_search(&label).unwrap_or(0) as i64));
            }
            if items.is_empty() {
                return Err(PluginError::data(format!(
                    "{NAME}: none of the {skipped} videos of {} has {FRAMES} frames in {}",
                    annotations_path(root, split).display(),
                    frames_dir.display()
                ))
                .with_help(format!("expected layout: {LAYOUT}")));
            }
            let source = format!(
                "{} ({} videos, {skipped} skipped with fewer than {FRAMES} frames)",
                annotations_path(root, split).display(),
                items.len()
            );
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
            let classes = request.classes_up_to(NAME, FIXTURE_LABELS.len() as u32)?;
            let mut rng = draw::Rng::new(request.seed);
            let mut total = 0;
            for (split, per_class) in request.per_split() {
                let mut annotations = serde_json::Map::new();
                for i in 0..per_class * classes {
                    let class = i % classes;
                    let id = format!("{}{:09}", (b'a' + (i % 3) as u8) as char, i);
                    for f in 0..FRAMES + 2 {
                        let pixels = draw::class_image(class, classes, size, size, &mut rng);
                        let path = root
                            .join(DIR)
                            .join(split_name(split))
                            .join(&id[..2])
                            .join(format!("{id}_{f:06}.jpg"));
                        draw::write_jpeg(&path, size, size, &pixels)?;
                    }
                    annotations.insert(
                        id,
                        serde_json::json!({"annotations": {"label": FIXTURE_LABELS[class as usize], "segment": [0.0, 10.0]}, "subset": split_name(split)}),
                    );
                    total += 1;
                }
                draw::write_text(
                    &annotations_path(root, split),
                    &Value::Object(annotations).to_string(),
                )?;
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} actions, {total} videos of {} frames in {}",
                FRAMES + 2,
                root.join(DIR).display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(KineticsActionPrediction);
