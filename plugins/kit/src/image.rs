//! Image decoding and the preprocessing every image-level task shares: resize to a square with an
//! antialiased bilinear filter (as PIL's `Image.resize(..., BILINEAR)`, which torchvision's
//! `Resize` uses), scale to [0, 1] and normalise with ImageNet's mean and standard deviation.
use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::path::Path;
use virb_plugin_api::PluginError;

/// ImageNet channel means.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// An 8-bit RGB image, row-major, interleaved.
pub struct Rgb {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes an image file (any colour type) to RGB. The error names the file.
pub fn load_rgb(path: &Path) -> Result<Rgb, PluginError> {
    let reader = ::image::ImageReader::open(path)
        .map_err(|e| PluginError::data(format!("cannot open image {}: {e}", path.display())))?
        .with_guessed_format()
        .map_err(|e| PluginError::data(format!("cannot read image {}: {e}", path.display())))?;
    let img = reader.decode().map_err(|e| {
        PluginError::data(format!("cannot decode image {}: {e}", path.display()))
            .with_help("the file is corrupt or not an image; replace or remove it from the split")
    })?;
    let rgb = img.into_rgb8();
    Ok(Rgb {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

/// Resizes to exactly `size` x `size` (aspect ratio not kept) with an antialiased bilinear filter.
pub fn resize_square(img: Rgb, size: u32) -> Result<Rgb, PluginError> {
    if img.width == size && img.height == size {
        return Ok(img);
    }
    let src = Image::from_vec_u8(img.width, img.height, img.pixels, PixelType::U8x3)
        .map_err(|e| PluginError::data(format!("bad image buffer: {e}")))?;
    let mut dst = Image::new(size, size, PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| PluginError::data(format!("cannot resize image: {e}")))?;
    Ok(Rgb {
        width: size,
        height: size,
        pixels: dst.into_vec(),
    })
}

/// Turns an RGB image into a normalised float32 tensor `[3, H, W]` (torchvision's `ToTensor`
/// followed by `Normalize(IMAGENET_MEAN, IMAGENET_STD)`).
pub fn to_normalised_tensor(img: &Rgb) -> tch::Tensor {
    let plane = (img.width * img.height) as usize;
    let mut data = vec![0f32; plane * 3];
    for (i, px) in img.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    tch::Tensor::from_slice(&data).view([3, img.height as i64, img.width as i64])
}

/// Decode, resize to `size` x `size`, normalise: the standard image-level input.
pub fn load_input(path: &Path, size: u32) -> Result<tch::Tensor, PluginError> {
    let img = resize_square(load_rgb(path)?, size)?;
    Ok(to_normalised_tensor(&img))
}
