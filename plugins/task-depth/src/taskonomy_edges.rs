//! `TaskonomyEdges`: Taskonomy's texture edges, normalised per image.
//!
//! Layout: `taskonomy/{train,test}/rgb/<building>/<view>.png` with
//! `taskonomy/{train,test}/edges/<building>/<view>.png` (8- or 16-bit grey), paired by view
//! ([`crate::taskonomy`]). Images are converted to RGB; no augmentation.
//!
//! Target: the edge map resized with an antialiased bilinear filter, then per-image min–max
//! scaled to [0, 1] (a constant map becomes 0, not NaN as in ViRB). Loss: plain L1 over finite
//! pixels. ViRB's loss, mean |out − y| · y, is degenerate: pixels with y = 0 (most of an edge
//! map) cost nothing, so predicting large values everywhere is free. Metric: `l1`, per image,
//! averaged over images.
use crate::{
    data::{self, DenseDataset, Pair},
    head::{task_info, PixelHead, Scoring, Validity},
    taskonomy,
};
use std::path::Path;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Task,
    TaskInfo,
};

/// The task.
pub struct TaskonomyEdges;

const NAME: &str = "TaskonomyEdges";
const LAYOUT: &str = "taskonomy/{train,test}/rgb/<building>/<view>.png + taskonomy/{train,test}/edges/<building>/<view>.png (grey)";
const SCORING: Scoring = Scoring::L1;

/// Reads one sample.
pub fn load(
    pair: &Pair,
    ctx: &data::LoadContext,
) -> Result<(tch::Tensor, tch::Tensor), PluginError> {
    let input = data::load_image(&pair.image, ctx.image_size, ctx.augment, false)?;
    let path = pair.target.as_deref().ok_or_else(|| {
        PluginError::invalid_input(format!("{NAME}: {} has no edge map", pair.image.display()))
    })?;
    let map = data::load_grey_png(NAME, path)?;
    data::check_same_size(
        NAME,
        &pair.image,
        (input.width, input.height),
        path,
        (map.width, map.height),
    )?;
    let target = data::min_max(&data::resize_map(&map, ctx.image_size)?)?;
    Ok((input.tensor, target.f_unsqueeze(0)?))
}

impl Task for TaskonomyEdges {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(task_info(NAME, taskonomy::DIR, LAYOUT, SCORING, Vec::new())))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let split = request.split()?;
            DenseDataset {
                task: NAME,
                items: taskonomy::pairs(NAME, LAYOUT, root, split, "edges", "edge map")?,
                image_size: request.image_size,
                outputs: 1,
                source: root
                    .join(taskonomy::DIR)
                    .join(split.as_str())
                    .display()
                    .to_string(),
                load: Box::new(load),
            }
            .boxed()
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| PixelHead::build(&request, Validity::Finite, SCORING))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| Ok(taskonomy::write_fixture(NAME, &request)?.into()))
    }
}

virb_plugin_kit::register_task!(TaskonomyEdges);
