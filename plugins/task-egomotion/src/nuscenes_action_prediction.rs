//! `nuScenesActionPrediction`: the ego vehicle's action between two nuScenes camera frames.
//!
//! Layout: `<data>/nuScenes/nuScenes_train.json` and `nuScenes_test.json` (ViRB's split files:
//! JSON arrays of `{"img_a", "img_b", "label"}`, image paths relative to `<data>/nuScenes/`)
//! plus the nuScenes `samples/` and `sweeps/` images. Classes are the sorted labels of both
//! files, so they agree between the splits (ViRB computed them per split).
use serde_json::Value;
use std::{
    collections::BTreeSet,
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
pub struct NuScenesActionPrediction;

const NAME: &str = "nuScenesActionPrediction";
const DIR: &str = "nuScenes";
const LAYOUT: &str = "nuScenes/nuScenes_{train,test}.json ([{\"img_a\", \"img_b\", \"label\"}], paths relative to nuScenes/) + nuScenes/samples, nuScenes/sweeps";
const FIXTURE_LABELS: [&str; 4] = ["forward", "left", "right", "stop"];

fn split_path(root: &Path, split: Split) -> PathBuf {
    root.join(DIR)
        .join(format!("nuScenes_{}.json", split.as_str()))
}

/// `([frame a, frame b], label)` of every entry of a split file.
fn read_split(root: &Path, split: Split) -> Result<Vec<([PathBuf; 2], String)>, PluginError> {
    let path = split_path(root, split);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        PluginError::data(format!("{NAME}: cannot read split file {}: {e}", path.display())).with_help(format!(
            "download ViRB's nuScenes_{}.json into {} (https://prior-datasets.s3.us-east-2.amazonaws.com/ViRB/nuScenes_{}.json) next to the nuScenes samples and sweeps; or run `virb-host fixtures {NAME} {}`",
            split.as_str(),
            root.join(DIR).display(),
            split.as_str(),
            root.display()
        ))
    })?;
    let bad = |what: String| PluginError::data(format!("{NAME}: {}: {what}", path.display()));
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let entries = json
        .as_array()
        .ok_or_else(|| bad("not a JSON array".into()))?;
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let field = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("entry {i} has no string `{k}`")))
        };
        let frames = [
            root.join(DIR).join(field("img_a")?),
            root.join(DIR).join(field("img_b")?),
        ];
        if let Some(missing) = frames.iter().find(|f| !f.is_file()) {
            return Err(bad(format!(
                "entry {i}: image {} not found",
                missing.display()
            )));
        }
        out.push((frames, field("label")?.to_string()));
    }
    Ok(out)
}

impl Task for NuScenesActionPrediction {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(classification_info(NAME, "egomotion", DIR, LAYOUT, 2)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let root = Path::new(request.data_root.as_str());
            let this = read_split(root, split)?;
            let other = read_split(root, split.other())?;
            let classes: Vec<String> = this
                .iter()
                .chain(&other)
                .map(|(_, l)| l.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let items = this
                .into_iter()
                .map(|(frames, label)| {
                    (
                        frames.to_vec(),
                        classes.binary_search(&label).unwrap_or(0) as i64,
                    )
                })
                .collect();
            let source = split_path(root, split).display().to_string();
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
                let mut entries = Vec::new();
                for i in 0..per_class * classes {
                    let class = i % classes;
                    let (a, b) = draw::motion_pair(class, classes, size, &mut rng);
                    let names = [
                        format!("samples/CAM_FRONT/{}_{i:05}.jpg", split.as_str()),
                        format!("sweeps/CAM_FRONT/{}_{i:05}.jpg", split.as_str()),
                    ];
                    for (name, px) in names.iter().zip([&a, &b]) {
                        draw::write_jpeg(&root.join(DIR).join(name), size, size, px)?;
                    }
                    entries.push(serde_json::json!({"img_a": names[0], "img_b": names[1], "label": FIXTURE_LABELS[class as usize]}));
                    total += 1;
                }
                draw::write_text(&split_path(root, split), &Value::Array(entries).to_string())?;
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} actions, {total} frame pairs in {}",
                root.join(DIR).display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(NuScenesActionPrediction);
