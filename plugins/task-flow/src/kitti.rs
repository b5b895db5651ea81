//! `KITTI`: optical flow on KITTI flow 2015's 200 training pairs, with ViRB's siamese pixel-wise
//! head (reference §3.3, §5.4).
//!
//! * Layout: `<data>/KITTI/training/image_2/<id>_10.png` (frame A), `<id>_11.png` (frame B) and
//!   the real flow `training/flow_occ/<id>_10.png` (16-bit, KITTI's devkit encoding), or with
//!   `target: viz` the visualisation `training/viz_flow_occ/<id>_10.png`. Split as ViRB: the
//!   sorted list of frame A's names, the first ⌊0.9·n⌋ train (180 of 200), the rest test.
//!   Missing files, sizes and the flow files' colour type are checked when a split is opened.
//! * Sample: `[2, 3, H, W]` (A, B; decoded and normalised like every input, never resized) and
//!   the target `[3, H, W]` (u, v, valid) or `[1, H, W]` (viz). Training (`SampleContext::augment`)
//!   takes the identical random square crop of A, B and the target, of side
//!   `min(image_size, H, W)` (ViRB: 224 on 375x1242 frames; the cap lets small fixtures work),
//!   drawn from `SampleContext::rng_seed`. Test: full frames, of any size (KITTI has 375- and
//!   376-row frames; the host batches equal sizes). As frames are only cropped, never resized,
//!   flow vectors keep their values and EPE is in pixels of the original frame.
//! * Head, loss and metrics: see [`crate::head`] and [`crate::metric`].
use crate::{
    data::{check_headers, list_pairs, split_pairs, KittiSplit, DIR, LAYOUT, NAME},
    fixture,
    head::{SiameseHead, LEVELS},
    metric::metric_specs,
    options::Target,
};
use std::path::Path;
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RString},
    },
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Task,
    TaskInfo,
};

/// The task.
pub struct Kitti;

impl Task for Kitti {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| {
            Ok(TaskInfo {
                name: NAME.into(),
                family: "flow".into(),
                data_dir: DIR.into(),
                layout: LAYOUT.into(),
                metrics: metric_specs().into(),
                required_outputs: LEVELS.iter().map(|l| RString::from(*l)).collect(),
                frames: 2,
                encodable: true,
                evaluates_heads_of: RString::new(),
                pixel_wise: true,
                wants_encoder_state: false,
                options: vec![Target::spec()].into(),
            })
        })
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let target = Target::from_options(NAME, request.options_json.as_str())?;
            let data_root = Path::new(request.data_root.as_str());
            let all = list_pairs(data_root, target)?;
            let total = all.len();
            let pairs = split_pairs(all, split);
            if pairs.is_empty() {
                return Err(PluginError::data(format!(
                    "{NAME}: the {} split of {} frame pairs in {} is empty (ViRB's split: the first 90% train, the rest test)",
                    split.as_str(),
                    total,
                    crate::data::training_dir(data_root).join("image_2").display()
                ))
                .with_help("KITTI needs at least 2 frame pairs (1 train, 1 test)"));
            }
            for pair in &pairs {
                check_headers(pair, target)?;
            }
            let source = format!(
                "{} ({} split: {} of {total} frame pairs, target {})",
                crate::data::training_dir(data_root).display(),
                split.as_str(),
                pairs.len(),
                target.as_str()
            );
            Ok(DatasetBox::from_value(
                KittiSplit {
                    pairs,
                    target,
                    crop: request.image_size,
                    source,
                },
                TD_Opaque,
            ))
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| {
            let target = Target::from_options(NAME, request.options_json.as_str())?;
            Ok(SiameseHead::new(&request, target)?.boxed())
        })
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| Ok(fixture::write(&request)?.into()))
    }
}

virb_plugin_kit::register_task!(Kitti);
