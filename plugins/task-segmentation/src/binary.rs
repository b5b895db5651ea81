//! What the two binary tasks (Pets-Detection, NYUWalkable) share: the square preprocessing and
//! the one-output PixelWise head.
use crate::augment::jitter_and_grayscale;
use crate::dense::{check_same_size, mask_tensor, resize_mask, Mask};
use crate::head::{DenseHead, Loss};
use crate::metric::Scoring;
use crate::pairs::{Pair, Prepare};
use std::path::Path;
use virb_plugin_api::{HeadBox, HeadRequest, PluginError, SampleContext};
use virb_plugin_kit::{
    draw::Rng,
    image::{load_rgb, resize_square, to_normalised_tensor},
};

/// The shared preprocessing of the binary tasks: the image resized to `size`² (jittered in
/// training), the mask resized with nearest neighbour.
pub struct SquarePrep {
    /// Task name, for messages.
    pub task: &'static str,
    /// Network input side.
    pub size: u32,
    /// Reads a mask file as targets.
    pub target: fn(&Path) -> Result<Mask, PluginError>,
}

impl Prepare for SquarePrep {
    fn prepare(
        &self,
        pair: &Pair,
        index: u64,
        context: SampleContext,
    ) -> Result<(tch::Tensor, tch::Tensor), PluginError> {
        let img = load_rgb(&pair.image)?;
        let mask = (self.target)(&pair.mask)?;
        check_same_size(self.task, &img, &pair.image, &mask, &pair.mask)?;
        let mut img = resize_square(img, self.size)?;
        if context.augment {
            jitter_and_grayscale(&mut img, &mut Rng::new(context.rng_seed(index)));
        }
        let mask = resize_mask(&mask, self.size, self.size);
        Ok((to_normalised_tensor(&img), mask_tensor(&mask)?))
    }
}

/// The PixelWise head with one output, BCE, IoU of class 1.
pub fn binary_head(
    request: &HeadRequest,
    names: [&'static str; 2],
) -> Result<HeadBox, PluginError> {
    if request.num_outputs != 1 {
        return Err(PluginError::invalid_input(format!(
            "a binary pixel-wise head has one output, not {}",
            request.num_outputs
        )));
    }
    Ok(DenseHead::pixel(request, Loss::Binary, Scoring::Binary { names })?.boxed())
}
