//! A virb task plugin built outside the virb workspace, as a template to copy.
//!
//! Task `TemplateShapes`: image classification on its own on-disk layout,
//! `<data_root>/template-shapes/{train,test}/<class>/*.ppm` (one folder per class, binary PPM
//! images), with a linear probe on the encoder's `embedding`, cross-entropy, and two metrics over
//! the whole split: top-1 accuracy (the headline) and mean per-class accuracy, plus the per-class
//! accuracies in `results.json`'s `test_details`. `virb-host fixtures TemplateShapes <DATA_ROOT>`
//! writes a small data set.
//!
//! Every method body runs inside [`guard`], so a panic becomes an error of its job, never an
//! abort of the host.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod dataset;
pub mod fixture;
pub mod head;
pub mod ppm;

use std::path::Path;
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RString},
    },
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, MetricSpec,
    PluginError, Task, TaskBox, TaskInfo,
};

/// The task's name, as virb configs write it in `task:`.
pub const TASK: &str = "TemplateShapes";
/// The folder below the data root.
pub const DATA_DIR: &str = "template-shapes";
/// The expected layout, in one line.
pub const LAYOUT: &str =
    "<data-root>/template-shapes/{train,test}/<class>/*.ppm (one folder per class, binary PPM images)";

/// The task.
pub struct TemplateShapes;

/// Refuses task options: this task has none (the host already refuses keys not listed in
/// `TaskInfo::options`; a task with options parses and checks their values here).
fn no_options(options_json: &str) -> Result<(), PluginError> {
    let value: serde_json::Value = serde_json::from_str(options_json)
        .map_err(|e| PluginError::invalid_input(format!("task options are not JSON: {e}")))?;
    match value.as_object() {
        Some(map) if map.is_empty() => Ok(()),
        _ => Err(PluginError::invalid_input(format!(
            "{TASK} takes no task_options, got {value}"
        ))),
    }
}

impl Task for TemplateShapes {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| {
            Ok(TaskInfo {
                name: TASK.into(),
                family: "classification".into(),
                data_dir: DATA_DIR.into(),
                layout: LAYOUT.into(),
                metrics: vec![
                    MetricSpec {
                        name: "top1_accuracy".into(),
                        higher_is_better: true,
                    },
                    MetricSpec {
                        name: "mean_class_accuracy".into(),
                        higher_is_better: true,
                    },
                ]
                .into(),
                required_outputs: vec![RString::from("embedding")].into(),
                frames: 1,
                encodable: true,
                evaluates_heads_of: RString::new(),
                pixel_wise: false,
                wants_encoder_state: false,
                options: Default::default(),
            })
        })
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            no_options(request.options_json.as_str())?;
            let split = request.split()?;
            let task_dir = Path::new(request.data_root.as_str()).join(DATA_DIR);
            let dataset = dataset::FolderDataset::open(&task_dir, split, request.image_size)?;
            Ok(DatasetBox::from_value(dataset, TD_Opaque))
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| {
            no_options(request.options_json.as_str())?;
            Ok(HeadBox::from_value(
                head::LinearHead::new(&request)?,
                TD_Opaque,
            ))
        })
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| Ok(fixture::write(&request, DATA_DIR)?.into()))
    }
}

virb_plugin_api::export_task_plugin!(vec![TaskBox::from_value(TemplateShapes, TD_Opaque)]);

#[cfg(test)]
mod tests {
    use super::*;
    use virb_plugin_api::{SampleContext, Split};

    fn fixture(root: &Path) {
        let request = FixtureRequest {
            data_root: root.display().to_string().into(),
            classes: 3,
            train_per_class: 2,
            test_per_class: 1,
            image_size: 20,
            seed: 0,
            options_json: "{}".into(),
        };
        let line = TemplateShapes.write_fixture(request).into_result().unwrap();
        assert!(line.contains("9 images of 3 classes (20x20 PPM)"), "{line}");
    }

    fn open(root: &Path, split: Split) -> Result<DatasetBox, PluginError> {
        TemplateShapes
            .open(DatasetRequest {
                data_root: root.display().to_string().into(),
                split_ne: split.to_ne(),
                image_size: 16,
                options_json: "{}".into(),
            })
            .into_result()
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_its_fixture_normalised_like_torchvision() {
        let root = temp_dir("virb-template-task-read");
        fixture(&root);
        let train = open(&root, Split::Train).unwrap();
        let meta = train.meta().into_result().unwrap();
        assert_eq!((meta.len, meta.num_outputs), (6, 3));
        let names: Vec<&str> = meta.class_names.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["disc", "hbar", "square"]);
        // Sample 2 is the first of class `hbar` (sorted folder names).
        let sample = train.get(2, SampleContext::PLAIN).into_result().unwrap();
        assert_eq!(sample.target.into_tch().int64_value(&[]), 1);
        let x = sample.input.into_tch();
        assert_eq!(x.size(), [3, 16, 16]);
        // The same pixels resized and normalised by hand.
        let image = ppm::read(&root.join("template-shapes/train/hbar/0000.ppm")).unwrap();
        let raw = tch::Tensor::from_slice(&image.data)
            .view([20, 20, 3])
            .permute([2, 0, 1]);
        let resized = (raw.to_kind(tch::Kind::Float) / 255.0)
            .unsqueeze(0)
            .upsample_bilinear2d([16, 16], false, None::<f64>, None::<f64>)
            .squeeze_dim(0);
        let mean = tch::Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([3, 1, 1]);
        let std = tch::Tensor::from_slice(&[0.229f32, 0.224, 0.225]).view([3, 1, 1]);
        assert!(x.allclose(&((resized - mean) / std), 1e-6, 1e-6, false));
        // Augmented reads are flips drawn from (seed, epoch, index); plain reads never flip.
        let ctx = |epoch| SampleContext {
            augment: true,
            epoch,
            seed: 0,
        };
        let flips: Vec<bool> = (0..8)
            .map(|e| {
                let s = train.get(2, ctx(e)).into_result().unwrap().input.into_tch();
                !s.equal(&x)
            })
            .collect();
        assert!(flips.contains(&true) && flips.contains(&false), "{flips:?}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn layout_errors_name_the_folder_or_file() {
        let root = temp_dir("virb-template-task-errors");
        let err = open(&root, Split::Train).err().unwrap();
        assert!(
            err.message.contains("template-shapes/train cannot be read"),
            "{err}"
        );
        assert!(
            err.help.contains("virb-host fixtures TemplateShapes"),
            "{err}"
        );
        fixture(&root);
        std::fs::remove_dir_all(root.join("template-shapes/test/square")).unwrap();
        let err = open(&root, Split::Train).err().unwrap();
        assert!(err.message.contains("but"), "{err}");
        fixture(&root);
        let bad = root.join("template-shapes/test/disc/0000.ppm");
        std::fs::write(&bad, b"P6\n20 20\n255\n\x01\x02").unwrap();
        let test = open(&root, Split::Test).unwrap();
        let err = test
            .get(0, SampleContext::PLAIN)
            .into_result()
            .err()
            .unwrap();
        assert!(
            err.message
                .contains(&format!("cannot decode image {}", bad.display())),
            "{err}"
        );
        assert!(err.message.contains("truncated"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
