//! CLEVR scenes: `<data>/CLEVR/images/{train,val}/*.png` with
//! `<data>/CLEVR/scenes/CLEVR_{train,val}_scenes.json` (`{"scenes": [{"image_filename",
//! "objects": [{"3d_coords": [x, y, z]}, ...]}, ...]}`). `val` is the test split. Images are
//! matched to scenes by `image_filename` (ViRB matched sorted lists by position, which breaks as
//! soon as one file is missing); every listed image must exist. Labels are integers derived from
//! the objects, and classes are `0..=max` over both splits, so they agree. CLEVRNumObjects and
//! CLEVRDist read the same files; each one's fixture generator writes scenes for its own labels.
use serde_json::Value;
use std::path::{Path, PathBuf};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Split,
    Task, TaskInfo,
};
use virb_plugin_kit::{
    dataset::{classification_info, integer_classes, ImageList},
    draw,
    heads::ClassifierHead,
};

/// An object of a fixture scene: its 3-D coordinates and its radius in the image, as a fraction
/// of the image side.
pub type FixtureObject = ([f64; 3], f32);

/// A scene: its image file, its objects' 3-D coordinates and where it is (file and index).
type Scene = (PathBuf, Vec<[f64; 3]>, String);

/// A task over CLEVR scenes.
pub struct ClevrSpec {
    /// Task type name.
    pub name: &'static str,
    /// The label of a scene, from its objects' 3-D coordinates.
    pub label: fn(&[[f64; 3]]) -> i64,
    /// Most classes (labels `0..max_classes`) a data set may have.
    pub max_classes: i64,
    /// The objects of a fixture scene of class `class` of `classes`.
    pub fixture_scene: fn(class: u32, classes: u32, rng: &mut draw::Rng) -> Vec<FixtureObject>,
}

/// The task for a [`ClevrSpec`].
pub struct ClevrTask(pub &'static ClevrSpec);

const DIR: &str = "CLEVR";
const LAYOUT: &str = "CLEVR/images/{train,val}/*.png + CLEVR/scenes/CLEVR_{train,val}_scenes.json";

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "val",
        // Unreachable in practice: a split this plugin does not know arrives as an error from
        // `DatasetRequest::split()`. Treated like the test split.
        _ => "val",
    }
}

fn scenes_path(root: &Path, split: Split) -> PathBuf {
    root.join(DIR)
        .join("scenes")
        .join(format!("CLEVR_{}_scenes.json", split_name(split)))
}

fn images_dir(root: &Path, split: Split) -> PathBuf {
    root.join(DIR).join("images").join(split_name(split))
}

/// `(image file, objects' 3-D coordinates)` of every scene of a split.
fn read_scenes(task: &str, root: &Path, split: Split) -> Result<Vec<Scene>, PluginError> {
    let path = scenes_path(root, split);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        PluginError::data(format!("{task}: cannot read scene file {}: {e}", path.display())).with_help(format!(
            "expected {LAYOUT} under {} (from CLEVR_v1.0.zip); or run `virb-host fixtures {task} {}`",
            root.display(),
            root.display()
        ))
    })?;
    let bad = |what: String| PluginError::data(format!("{task}: {}: {what}", path.display()));
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let scenes = json
        .get("scenes")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `scenes` array".into()))?;
    let dir = images_dir(root, split);
    let mut out = Vec::with_capacity(scenes.len());
    for (i, scene) in scenes.iter().enumerate() {
        let file = scene
            .get("image_filename")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("scene {i} has no `image_filename`")))?;
        let objects = scene
            .get("objects")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("scene {i} ({file}) has no `objects` array")))?;
        let coords = objects
            .iter()
            .map(|o| {
                let c = o.get("3d_coords").and_then(Value::as_array)?;
                let f = |k: usize| c.get(k).and_then(Value::as_f64);
                Some([f(0)?, f(1)?, f(2)?])
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(format!(
                    "scene {i} ({file}) has an object without numeric `3d_coords`"
                ))
            })?;
        let image = dir.join(file);
        if !image.is_file() {
            return Err(PluginError::data(format!(
                "{task}: image {} listed in {} not found",
                image.display(),
                path.display()
            ))
            .with_help(format!("expected layout: {LAYOUT}")));
        }
        out.push((
            image,
            coords,
            format!("scene {i} ({file}) of {}", path.display()),
        ));
    }
    if out.is_empty() {
        return Err(bad("lists no scenes".into()));
    }
    Ok(out)
}

impl Task for ClevrTask {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(classification_info(self.0.name, "counting", DIR, LAYOUT, 1)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let spec = self.0;
            let root = Path::new(request.data_root.as_str());
            let label = |objs: &[[f64; 3]]| (spec.label)(objs);
            let this = read_scenes(spec.name, root, split)?;
            let other_split = split.other();
            let other = read_scenes(spec.name, root, other_split)?;
            let classes = integer_classes(
                spec.name,
                this.iter().chain(&other).map(|(_, o, at)| (label(o), at)),
                spec.max_classes,
            )?;
            let items = this.into_iter().map(|(p, o, _)| (p, label(&o))).collect();
            let source = scenes_path(root, split).display().to_string();
            ImageList::single(items, classes, request.image_size, source).boxed(spec.name)
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| Ok(ClassifierHead::new(&request)?.boxed()))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(self.0.name, 8)?;
            let size = request.image_size.max(16);
            let mut rng = draw::Rng::new(request.seed);
            let mut total = 0;
            for (split, per_class) in request.per_split() {
                let mut scenes = Vec::new();
                for i in 0..per_class * classes {
                    let class = i % classes;
                    let objects = (self.0.fixture_scene)(class, classes, &mut rng);
                    let radii: Vec<f32> = objects.iter().map(|(_, r)| r * size as f32).collect();
                    let (w, h) = (size * 3 / 2, size);
                    // A class-specific colour as well as the real count or distance, so that even
                    // a random encoder's features separate the classes.
                    let colour = draw::hue_to_rgb(class as f32 / classes as f32);
                    let pixels =
                        draw::discs_image(w, h, radii.len() as u32, 0.0, &radii, colour, &mut rng);
                    let file = format!("CLEVR_{}_{i:06}.png", split_name(split));
                    draw::write_png(&images_dir(root, split).join(&file), w, h, &pixels)?;
                    let objs: Vec<Value> = objects
                        .iter()
                        .map(|(c, _)| serde_json::json!({"3d_coords": c, "shape": "sphere"}))
                        .collect();
                    scenes.push(serde_json::json!({"image_index": i, "image_filename": file, "objects": objs}));
                    total += 1;
                }
                let json =
                    serde_json::json!({"info": {"split": split_name(split)}, "scenes": scenes});
                draw::write_text(&scenes_path(root, split), &json.to_string())?;
            }
            Ok(RString::from(format!(
                "{}: {classes} classes, {total} scenes in {}",
                self.0.name,
                root.join(DIR).display()
            )))
        })
    }
}
