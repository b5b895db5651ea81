//! `TaskonomyInpainting`: fill in the centre of a Taskonomy view.
//!
//! Layout: `taskonomy/{train,test}/rgb/<building>/<view>.png` ([`crate::taskonomy`]). Images
//! are converted to RGB; no augmentation.
//!
//! Target: the normalised image `[3, S, S]`. Input: the same tensor with the centre square set
//! to 0 (the mean colour after normalisation): ViRB's rows/columns 64..160 of 224, i.e. the
//! middle 96/224 of each side, scaled to the input size ([`hole`]). Head: PixelWise with 3
//! outputs. Loss: L1 over the whole image (ViRB's). Metrics: `hole_l1`, the L1 over the hole
//! (the headline: outside it the input already shows the answer), and ViRB's whole-image `l1`.
use crate::{
    data::{self, DenseDataset, Pair},
    head::{hole, task_info, PixelHead, Scoring, Validity},
    taskonomy,
};
use std::path::Path;
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Task,
    TaskInfo,
};

/// The task.
pub struct TaskonomyInpainting;

const NAME: &str = "TaskonomyInpainting";
const LAYOUT: &str = "taskonomy/{train,test}/rgb/<building>/<view>.png";
const SCORING: Scoring = Scoring::Inpainting;

/// The input for a normalised image `[3, H, W]`: a copy with the centre square zeroed.
pub fn with_hole(image: &tch::Tensor) -> Result<tch::Tensor, PluginError> {
    let s = image.size();
    let mut input = image.f_zeros_like()?;
    input.f_copy_(image)?;
    let ((r0, r1), (c0, c1)) = (hole(s[1]), hole(s[2]));
    let _ = input
        .f_narrow(1, r0, r1 - r0)?
        .f_narrow(2, c0, c1 - c0)?
        .f_fill_(0.0)?;
    Ok(input)
}

/// Reads one sample.
pub fn load(
    pair: &Pair,
    ctx: &data::LoadContext,
) -> Result<(tch::Tensor, tch::Tensor), PluginError> {
    let image = data::load_image(&pair.image, ctx.image_size, ctx.augment, false)?.tensor;
    Ok((with_hole(&image)?, image))
}

impl Task for TaskonomyInpainting {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(task_info(NAME, taskonomy::DIR, LAYOUT, SCORING, Vec::new())))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let split = request.split()?;
            DenseDataset {
                task: NAME,
                items: taskonomy::images(NAME, LAYOUT, root, split)?,
                image_size: request.image_size,
                outputs: 3,
                source: root
                    .join(taskonomy::DIR)
                    .join(split.as_str())
                    .join("rgb")
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

virb_plugin_kit::register_task!(TaskonomyInpainting);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_hole_is_virbs_square_scaled() {
        assert_eq!(hole(224), (64, 160));
        assert_eq!(hole(64), (18, 46));
        let image = tch::Tensor::ones([3, 224, 224], (tch::Kind::Float, tch::Device::Cpu));
        let input = with_hole(&image).unwrap();
        assert_eq!(
            input.sum(tch::Kind::Double).double_value(&[]),
            3.0 * (224.0 * 224.0 - 96.0 * 96.0)
        );
        assert_eq!(input.double_value(&[0, 63, 100]), 1.0);
        assert_eq!(input.double_value(&[2, 64, 159]), 0.0);
        assert_eq!(input.double_value(&[1, 160, 100]), 1.0);
        assert_eq!(
            image.sum(tch::Kind::Double).double_value(&[]),
            3.0 * 224.0 * 224.0
        );
    }
}
