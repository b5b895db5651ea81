//! Image decoding and the preprocessing every image-level task shares: resize to a square with an
//! antialiased bilinear filter (as PIL's `Image.resize(..., BILINEAR)`, which torchvision's
//! `Resize` uses), scale to [0, 1] and normalise with ImageNet's mean and standard deviation.
//!
//! Fast paths: JPEGs are decoded by libjpeg-turbo (PIL's decoder, linked statically; the pixels
//! are PIL's) straight to RGB; a colour JPEG at least four times the target size in both sides
//! (grayscale: two) is decoded at a reduced scale by [`load_input`] (1/2, 1/4 or 1/8, IDCT
//! scaling, as PIL's `Image.draft`) and the antialiased resize does the rest (see
//! [`load_rgb_at_least`]). Normalisation goes through per-channel lookup tables and writes the
//! tensor's planes in place.
use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::{cell::RefCell, path::Path, sync::OnceLock};
use virb_plugin_api::PluginError;

mod jpeg;
#[cfg(test)]
mod tests;

pub use jpeg::jpeg_reduction;

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

const CORRUPT_HELP: &str =
    "the file is corrupt or not an image; replace or remove it from the split";

fn decode_error(path: &Path, e: impl std::fmt::Display) -> PluginError {
    PluginError::data(format!("cannot decode image {}: {e}", path.display()))
        .with_help(CORRUPT_HELP)
}

/// Decodes an image file (any colour type) to RGB at full resolution. The error names the file.
pub fn load_rgb(path: &Path) -> Result<Rgb, PluginError> {
    load_rgb_at_least(path, None)
}

/// Decodes an image file to RGB, at a reduced scale where that is cheaper and keeps both sides at
/// least `min_side` pixels. JPEGs are decoded with IDCT scaling by 1/2, 1/4 or 1/8, the largest
/// reduction that keeps both sides at least `2 * min_side` (colour: PIL's `reducing_gap=2`, and
/// half-resolution chroma stays at least `min_side`) or `min_side` (grayscale); other formats, and
/// JPEGs where no reduction fits, at full resolution. `None` always decodes at full resolution.
/// The error names the file.
pub fn load_rgb_at_least(path: &Path, min_side: Option<u32>) -> Result<Rgb, PluginError> {
    let bytes = std::fs::read(path)
        .map_err(|e| PluginError::data(format!("cannot open image {}: {e}", path.display())))?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg::decode(&bytes, min_side).map_err(|e| decode_error(path, e))
    } else {
        decode_other(&bytes).map_err(|e| decode_error(path, e))
    }
}

/// PNG and whatever else the `image` crate was built for.
fn decode_other(bytes: &[u8]) -> Result<Rgb, String> {
    let img = ::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    // Free for 8-bit RGB files, a conversion otherwise.
    let rgb = img.into_rgb8();
    Ok(Rgb {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

thread_local! {
    // Keeps its scratch buffers between calls.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes to exactly `size` x `size` (aspect ratio not kept) with an antialiased bilinear filter.
pub fn resize_square(img: Rgb, size: u32) -> Result<Rgb, PluginError> {
    if img.width == size && img.height == size {
        return Ok(img);
    }
    let src = Image::from_vec_u8(img.width, img.height, img.pixels, PixelType::U8x3)
        .map_err(|e| PluginError::data(format!("bad image buffer: {e}")))?;
    let mut dst = Image::new(size, size, PixelType::U8x3);
    RESIZER
        .with_borrow_mut(|r| {
            r.resize(
                &src,
                &mut dst,
                &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            )
        })
        .map_err(|e| PluginError::data(format!("cannot resize image: {e}")))?;
    Ok(Rgb {
        width: size,
        height: size,
        pixels: dst.into_vec(),
    })
}

/// Per-channel tables: `lut[c][v] = (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]` in f32, the
/// same operations in the same order as `ToTensor` + `Normalize`.
pub fn normalisation_lut() -> &'static [[f32; 256]; 3] {
    static LUT: OnceLock<[[f32; 256]; 3]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        lut
    })
}

/// Turns an RGB image into a normalised float32 tensor `[3, H, W]` (torchvision's `ToTensor`
/// followed by `Normalize(IMAGENET_MEAN, IMAGENET_STD)`).
pub fn to_normalised_tensor(img: &Rgb) -> tch::Tensor {
    let plane = (img.width * img.height) as usize;
    assert_eq!(
        img.pixels.len(),
        plane * 3,
        "RGB buffer size does not match its dimensions"
    );
    let lut = normalisation_lut();
    let tensor = tch::Tensor::empty(
        [3, img.height as i64, img.width as i64],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    // SAFETY: a fresh contiguous float32 CPU tensor of 3 * plane elements, owned here and not yet
    // shared; the slice does not outlive this function.
    let data =
        unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<f32>(), plane * 3) };
    let (r, gb) = data.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    for (((px, r), g), b) in img.pixels.chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = lut[0][px[0] as usize];
        *g = lut[1][px[1] as usize];
        *b = lut[2][px[2] as usize];
    }
    tensor
}

/// Decode, resize to `size` x `size`, normalise: the standard image-level input. Large JPEGs are
/// decoded at a reduced scale first (see [`load_rgb_at_least`]), as PIL's `draft` mode does.
pub fn load_input(path: &Path, size: u32) -> Result<tch::Tensor, PluginError> {
    let img = resize_square(load_rgb_at_least(path, Some(size))?, size)?;
    Ok(to_normalised_tensor(&img))
}
