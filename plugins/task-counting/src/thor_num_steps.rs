//! `THORNumSteps`: how many steps an agent in AI2-THOR took to reach the viewpoint.
//!
//! Layout: `<data>/thor_num_steps/{train,val}/<dir>/<stem>_rgb.jpg` with
//! `<data>/thor_num_steps/{train,val}_labels.txt`, one `"<split>/<dir>/<stem> <steps>"` per line
//! (the image path relative to `thor_num_steps/`, without `_rgb.jpg`). `val` is the test split.
//! Classes are `0..=max` over both label files.
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

/// The task.
pub struct ThorNumSteps;

const NAME: &str = "THORNumSteps";
const DIR: &str = "thor_num_steps";
const LAYOUT: &str = "thor_num_steps/{train,val}/<dir>/<stem>_rgb.jpg + thor_num_steps/{train,val}_labels.txt (\"<split>/<dir>/<stem> <steps>\" per line)";

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

/// Most step counts (classes) a data set may have: real THOR episodes take tens of steps.
const MAX_CLASSES: i64 = 1000;

/// A labelled image and the `file:line` of its label.
type Labelled = (PathBuf, i64, String);

/// `(image, steps, file:line)` for every line of a split's label file; every image must exist.
fn read_labels(root: &Path, split: Split) -> Result<Vec<Labelled>, PluginError> {
    let path = labels_path(root, split);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        PluginError::data(format!("{NAME}: cannot read label file {}: {e}", path.display())).with_help(format!(
            "expected {LAYOUT} under {} (from ViRB's thor_num_steps.zip); or run `virb-host fixtures {NAME} {}`",
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
        let bad = || {
            PluginError::data(format!(
                "{NAME}: {}:{}: expected \"<split>/<dir>/<stem> <steps>\", found \"{line}\"",
                path.display(),
                n + 1
            ))
        };
        let (key, steps) = line.trim().rsplit_once(' ').ok_or_else(bad)?;
        let steps: i64 = steps.trim().parse().map_err(|_| bad())?;
        if steps < 0 {
            return Err(bad());
        }
        let image = root.join(DIR).join(format!("{}_rgb.jpg", key.trim()));
        if !image.is_file() {
            return Err(PluginError::data(format!(
                "{NAME}: image {} (line {} of {}) not found",
                image.display(),
                n + 1,
                path.display()
            ))
            .with_help(format!("expected layout: {LAYOUT}")));
        }
        out.push((image, steps, format!("{}:{}", path.display(), n + 1)));
    }
    Ok(out)
}

impl Task for ThorNumSteps {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(classification_info(NAME, "counting", DIR, LAYOUT, 1)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let root = Path::new(request.data_root.as_str());
            let this = read_labels(root, split)?;
            let other = read_labels(root, split.other())?;
            let classes = integer_classes(
                NAME,
                this.iter().chain(&other).map(|(_, l, at)| (*l, at)),
                MAX_CLASSES,
            )?;
            let source = labels_path(root, split).display().to_string();
            let items = this.into_iter().map(|(p, l, _)| (p, l)).collect();
            ImageList::single(items, classes, request.image_size, source).boxed(NAME)
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| Ok(ClassifierHead::new(&request)?.boxed()))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(NAME, 16)?;
            let size = request.image_size.max(16);
            let mut rng = draw::Rng::new(request.seed);
            let mut total = 0;
            for (split, per_class) in request.per_split() {
                let mut lines = String::new();
                for i in 0..per_class * classes {
                    let steps = i % classes;
                    let key = format!("{}/scene_{:02}/view_{i:05}", split_name(split), i % 3);
                    let pixels = draw::class_image(steps, classes, size, size, &mut rng);
                    draw::write_jpeg(
                        &root.join(DIR).join(format!("{key}_rgb.jpg")),
                        size,
                        size,
                        &pixels,
                    )?;
                    lines.push_str(&format!("{key} {steps}\n"));
                    total += 1;
                }
                draw::write_text(&labels_path(root, split), &lines)?;
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} step counts, {total} images in {}",
                root.join(DIR).display()
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use virb_plugin_kit::dataset::integer_classes;

    // The kit's own test binary would not find libtorch (only plugin crates bake its rpath), so
    // integer_classes is tested here.
    #[test]
    fn classes_up_to_the_largest_label() {
        let c = integer_classes("T", [(2, "a"), (0, "b")], 10).expect("fits");
        assert_eq!(c, ["0", "1", "2"]);
    }

    #[test]
    fn an_absurd_label_is_named_with_its_origin() {
        let labels = (0..16).map(|i| (i, format!("f.txt:{}", i + 1))).chain([
            (999_999_999, "f.txt:17".to_string()),
            (3, "f.txt:18".to_string()),
        ]);
        let e = integer_classes("THORNumSteps", labels, 1000).expect_err("too many");
        assert_eq!(
            e.message.as_str(),
            "THORNumSteps: label 999999999 (f.txt:17) would make a 1000000000-way classifier, but THORNumSteps allows at most 1000 classes (labels 0 to 999); found 17 distinct values: 0-15, 999999999"
        );
    }
}

virb_plugin_kit::register_task!(ThorNumSteps);
