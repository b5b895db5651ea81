//! `Imagenetv2`: ImageNetV2, evaluated (never trained) with the ImageNet heads that `Imagenet`
//! jobs trained for the same experiment, which the host finds in `--out`.
//!
//! Layout: `<data>/imagenetv2/<class index>/*.jpeg` (the ImageNetV2 release: folder names are
//! ImageNet class indices 0..999, in torchvision's order, the order of `Imagenet`'s sorted wnids).
//! Only the test split exists.
use std::path::Path;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Task,
    TaskInfo,
};
use virb_plugin_kit::{
    dataset::{classification_info, integer_classes, ImageList},
    draw,
    heads::ClassifierHead,
};

/// The task.
pub struct Imagenetv2;

const NAME: &str = "Imagenetv2";
const DIR: &str = "imagenetv2";
const LAYOUT: &str = "imagenetv2/<ImageNet class index 0..999>/*.jpeg";

impl Task for Imagenetv2 {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| {
            let mut info = classification_info(NAME, "classification", DIR, LAYOUT, 1);
            info.evaluates_heads_of = "Imagenet".into();
            Ok(info)
        })
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let dir = Path::new(request.data_root.as_str()).join(DIR);
            let entries = std::fs::read_dir(&dir).map_err(|e| {
                PluginError::data(format!("{NAME}: cannot read data folder {}: {e}", dir.display())).with_help(format!(
                    "expected {LAYOUT} under {} (the ImageNetV2 release, e.g. matched-frequency); or run `virb-host fixtures {NAME} {}`",
                    request.data_root, request.data_root
                ))
            })?;
            let mut items = Vec::new();
            let mut folders: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            folders.sort();
            for folder in folders {
                let name = folder
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let label: i64 = name.parse::<u32>().map(i64::from).map_err(|_| {
                    PluginError::data(format!(
                        "{NAME}: folder {} is not an ImageNet class index (expected 0..999)",
                        folder.display()
                    ))
                })?;
                let mut files: Vec<_> = std::fs::read_dir(&folder)
                    .map_err(|e| {
                        PluginError::data(format!("cannot list {}: {e}", folder.display()))
                    })?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(PluginError::data(format!(
                        "{NAME}: class folder {} has no images",
                        folder.display()
                    ))
                    .with_help("remove the empty folder or put its images back"));
                }
                items.extend(files.into_iter().map(|f| (f, label)));
            }
            let classes = integer_classes(
                NAME,
                items
                    .iter()
                    .map(|(f, l)| (*l, f.parent().unwrap_or(f).display())),
                1000,
            )?;
            ImageList::single(
                items,
                classes,
                request.image_size,
                dir.display().to_string(),
            )
            .boxed(NAME)
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| Ok(ClassifierHead::new(&request)?.boxed()))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            // The same drawing per class index as the `Imagenet` fixture, so its heads apply.
            let classes =
                request.classes_up_to(NAME, crate::imagenet::SPEC.fixture_classes.len() as u32)?;
            let dir = Path::new(request.data_root.as_str()).join(DIR);
            let size = request.image_size.max(8);
            let mut rng = draw::Rng::new(request.seed ^ 0x5eed);
            let mut total = 0;
            for class in 0..classes {
                for i in 0..request.test_per_class {
                    let w = size + rng.below(size as u64 / 2 + 1) as u32;
                    let h = size * 3 / 4 + rng.below(size as u64 / 2 + 1) as u32;
                    let pixels = draw::class_image(class, classes, w, h, &mut rng);
                    draw::write_jpeg(
                        &dir.join(class.to_string()).join(format!("{i:04}.jpeg")),
                        w,
                        h,
                        &pixels,
                    )?;
                    total += 1;
                }
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} classes, {total} test images in {}",
                dir.display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(Imagenetv2);
