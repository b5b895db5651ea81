//! `TaskonomyDepth`: per-pixel depth of Taskonomy views, normalised per image.
//!
//! Layout: `taskonomy/{train,test}/rgb/<building>/<view>.png` with
//! `taskonomy/{train,test}/depth_zbuffer/<building>/<view>.png` (16-bit), paired by view
//! ([`crate::taskonomy`]). Images are converted to RGB (ViRB did not); no augmentation.
//!
//! Target: the 16-bit depth clamped at 10000 (Taskonomy's 65535 "no depth" becomes the far
//! plane, as in ViRB; clamped before resizing, so it does not smear into its neighbours),
//! resized with an antialiased bilinear filter, then a true per-image min–max scaling to
//! [0, 1]. ViRB divided by the max and then subtracted the min, which gives [0, 1 − min/max],
//! not [0, 1]; a constant map (all equal) becomes 0 everywhere instead of NaN. Every finite pixel
//! is trained on and scored; metrics `l1` and `rmse` (the scaling removes scale and offset, so
//! ratio metrics would be meaningless).
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
pub struct TaskonomyDepth;

const NAME: &str = "TaskonomyDepth";
const LAYOUT: &str = "taskonomy/{train,test}/rgb/<building>/<view>.png + taskonomy/{train,test}/depth_zbuffer/<building>/<view>.png (16-bit)";
const SCORING: Scoring = Scoring::L1Rmse;
/// ViRB's clamp of the raw 16-bit depth.
pub const CLAMP: f32 = 10000.0;

/// The target from raw depth values: clamp, resize, min–max. `[size, size]`.
pub fn target(mut map: data::GreyMap, size: u32) -> Result<tch::Tensor, PluginError> {
    for v in map.values.iter_mut() {
        *v = v.min(CLAMP);
    }
    data::min_max(&data::resize_map(&map, size)?)
}

/// Reads one sample.
pub fn load(
    pair: &Pair,
    ctx: &data::LoadContext,
) -> Result<(tch::Tensor, tch::Tensor), PluginError> {
    let input = data::load_image(&pair.image, ctx.image_size, ctx.augment, false)?;
    let path = pair.target.as_deref().ok_or_else(|| {
        PluginError::invalid_input(format!("{NAME}: {} has no depth map", pair.image.display()))
    })?;
    let map = data::load_grey_png(NAME, path)?;
    data::check_same_size(
        NAME,
        &pair.image,
        (input.width, input.height),
        path,
        (map.width, map.height),
    )?;
    Ok((input.tensor, target(map, ctx.image_size)?.f_unsqueeze(0)?))
}

impl Task for TaskonomyDepth {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(task_info(NAME, taskonomy::DIR, LAYOUT, SCORING, Vec::new())))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let split = request.split()?;
            DenseDataset {
                task: NAME,
                items: taskonomy::pairs(NAME, LAYOUT, root, split, "depth_zbuffer", "depth map")?,
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

virb_plugin_kit::register_task!(TaskonomyDepth);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn values(t: &tch::Tensor) -> Vec<f32> {
        Vec::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn clamps_then_scales_min_max_to_zero_one() {
        let map = data::GreyMap {
            width: 2,
            height: 2,
            values: vec![2000.0, 4000.0, 6000.0, 65535.0],
        };
        // Clamped: 2000, 4000, 6000, 10000; true min-max: 0, 0.25, 0.5, 1. ViRB's order
        // (divide by the max, then subtract the min) would give 0, 0.2, 0.4, 0.8.
        assert_eq!(values(&target(map, 2).unwrap()), [0.0, 0.25, 0.5, 1.0]);
        let flat = data::GreyMap {
            width: 2,
            height: 2,
            values: vec![500.0; 4],
        };
        assert_eq!(values(&target(flat, 2).unwrap()), [0.0; 4]);
    }
}
