//! What the four tasks share about masks: reading label images, checking them against their
//! images, and the geometric operations that keep an image and its mask aligned (resize, flip,
//! crop with padding).
//!
//! Target convention (all four tasks): a sample's target is an `[H, W]` int64 map of class ids,
//! with [`IGNORE`] (255) for pixels that are neither trained on nor scored (Cityscapes' void,
//! padding of a crop past the image, the Pets trimap's boundary). Binary tasks use 0/1/255.
use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::path::Path;
use virb_plugin_api::PluginError;
use virb_plugin_kit::image::{to_normalised_tensor, Rgb};

/// The target id of a pixel that is neither trained on nor scored.
pub const IGNORE: u8 = 255;

/// A decoded label image: raw values, row-major.
pub struct RawMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// One value per pixel, as stored (8- or 16-bit).
    pub values: Vec<u16>,
}

/// A mask of task class ids (or [`IGNORE`]), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// One class id per pixel.
    pub data: Vec<u8>,
}

/// Decodes a single-channel label PNG (8 or 16 bit; grey with alpha, or RGB whose channels are
/// equal, as some tools save grey masks). With `any_channel`, an RGB mask whose channels differ
/// is read as the largest channel (NYU's walkable masks only distinguish zero from non-zero).
pub fn load_mask(path: &Path, any_channel: bool) -> Result<RawMask, PluginError> {
    use ::image::DynamicImage as D;
    let img = ::image::ImageReader::open(path)
        .map_err(|e| {
            PluginError::data(format!("cannot open mask {}: {e}", path.display()))
                .with_help("every image needs its mask file; restore it or remove the image")
        })?
        .with_guessed_format()
        .map_err(|e| PluginError::data(format!("cannot read mask {}: {e}", path.display())))?
        .decode()
        .map_err(|e| {
            PluginError::data(format!("cannot decode mask {}: {e}", path.display()))
                .with_help("the file is corrupt or not an image; replace it")
        })?;
    let (width, height) = (img.width(), img.height());
    let rgb = |px: &mut dyn Iterator<Item = [u16; 3]>| -> Result<Vec<u16>, PluginError> {
        px.map(|[r, g, b]| {
            if r == g && g == b {
                Ok(r)
            } else if any_channel {
                Ok(r.max(g).max(b))
            } else {
                Err(PluginError::data(format!(
                    "mask {} is a colour image (a pixel has RGB {r}, {g}, {b}); expected one class id per pixel",
                    path.display()
                ))
                .with_help("save masks as single-channel (grey) PNGs of class ids, not colour-coded or palette PNGs"))
            }
        })
        .collect()
    };
    let values = match img {
        D::ImageLuma8(b) => b.into_raw().into_iter().map(u16::from).collect(),
        D::ImageLuma16(b) => b.into_raw(),
        D::ImageLumaA8(b) => b.pixels().map(|p| u16::from(p.0[0])).collect(),
        D::ImageLumaA16(b) => b.pixels().map(|p| p.0[0]).collect(),
        D::ImageRgb8(b) => rgb(&mut b.pixels().map(|p| p.0.map(u16::from)))?,
        D::ImageRgba8(b) => rgb(&mut b.pixels().map(|p| [p.0[0], p.0[1], p.0[2]].map(u16::from)))?,
        D::ImageRgb16(b) => rgb(&mut b.pixels().map(|p| p.0))?,
        D::ImageRgba16(b) => rgb(&mut b.pixels().map(|p| [p.0[0], p.0[1], p.0[2]]))?,
        other => {
            return Err(PluginError::data(format!(
                "mask {} has pixel type {:?}; expected an 8- or 16-bit single-channel PNG",
                path.display(),
                other.color()
            )))
        }
    };
    Ok(RawMask {
        width,
        height,
        values,
    })
}

/// Maps raw mask values to class ids with `map` (`None` for a value the task does not know):
/// the error names the file, the value and the values allowed.
pub fn map_mask(
    task: &str,
    path: &Path,
    raw: RawMask,
    map: impl Fn(u16) -> Option<u8>,
    allowed: &str,
) -> Result<Mask, PluginError> {
    let mut table: Vec<Option<u8>> = vec![None; 65536];
    let mut data = Vec::with_capacity(raw.values.len());
    for (i, v) in raw.values.iter().enumerate() {
        let id = match table[*v as usize] {
            Some(id) => id,
            None => {
                let id = map(*v).ok_or_else(|| {
                    PluginError::data(format!(
                        "{task}: mask {} has value {v} at pixel (x {}, y {}), which is not a class id of {task} ({allowed})",
                        path.display(),
                        i as u32 % raw.width.max(1),
                        i as u32 / raw.width.max(1)
                    ))
                    .with_help("check that the file is a label-id mask of this data set")
                })?;
                table[*v as usize] = Some(id);
                id
            }
        };
        data.push(id);
    }
    Ok(Mask {
        width: raw.width,
        height: raw.height,
        data,
    })
}

/// Errors unless the image and its mask have the same size (naming both files and sizes).
pub fn check_same_size(
    task: &str,
    image: &Rgb,
    image_path: &Path,
    mask: &Mask,
    mask_path: &Path,
) -> Result<(), PluginError> {
    if (image.width, image.height) == (mask.width, mask.height) {
        return Ok(());
    }
    Err(PluginError::data(format!(
        "{task}: image {} is {}x{} but its mask {} is {}x{} (width x height)",
        image_path.display(),
        image.width,
        image.height,
        mask_path.display(),
        mask.width,
        mask.height
    ))
    .with_help("a mask must have its image's size; regenerate the mask or remove the pair"))
}

/// Resizes an image to `width` x `height` with the antialiased bilinear filter of
/// [`virb_plugin_kit::image::resize_square`] (PIL's `BILINEAR`).
pub fn resize_rgb(img: Rgb, width: u32, height: u32) -> Result<Rgb, PluginError> {
    if (img.width, img.height) == (width, height) {
        return Ok(img);
    }
    let src = Image::from_vec_u8(img.width, img.height, img.pixels, PixelType::U8x3)
        .map_err(|e| PluginError::data(format!("bad image buffer: {e}")))?;
    let mut dst = Image::new(width.max(1), height.max(1), PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| PluginError::data(format!("cannot resize image: {e}")))?;
    Ok(Rgb {
        width: width.max(1),
        height: height.max(1),
        pixels: dst.into_vec(),
    })
}

/// Nearest-neighbour resize of a mask (PIL's `NEAREST`: source index `floor((i + 0.5) * in /
/// out)`), so that class ids are never interpolated.
pub fn resize_mask(mask: &Mask, width: u32, height: u32) -> Mask {
    let (width, height) = (width.max(1), height.max(1));
    if (mask.width, mask.height) == (width, height) {
        return mask.clone();
    }
    let src = |i: u32, out: u32, len: u32| {
        (((i as f64 + 0.5) * len as f64 / out as f64) as u32).min(len.saturating_sub(1))
    };
    let xs: Vec<usize> = (0..width)
        .map(|x| src(x, width, mask.width) as usize)
        .collect();
    let mut data = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        let row = src(y, height, mask.height) as usize * mask.width as usize;
        data.extend(xs.iter().map(|x| mask.data[row + x]));
    }
    Mask {
        width,
        height,
        data,
    }
}

/// Mirrors an image left to right.
pub fn flip_rgb(img: &mut Rgb) {
    let w = img.width as usize;
    for row in img.pixels.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

/// Mirrors a mask left to right.
pub fn flip_mask(mask: &mut Mask) {
    for row in mask.data.chunks_exact_mut(mask.width as usize) {
        row.reverse();
    }
}

/// A crop window: top-left corner and size. Parts outside the image are padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Window {
    /// A `side` x `side` window drawn uniformly so that it lies inside an image of `width` x
    /// `height`; along a dimension where the image is smaller than `side`, the window starts at
    /// 0 and the rest is padding (right and bottom).
    pub fn random(
        rng: &mut virb_plugin_kit::draw::Rng,
        width: u32,
        height: u32,
        side: u32,
    ) -> Self {
        let x = rng.below(u64::from(width.saturating_sub(side)) + 1) as u32;
        let y = rng.below(u64::from(height.saturating_sub(side)) + 1) as u32;
        Window {
            x,
            y,
            width: side,
            height: side,
        }
    }
}

/// Crops a mask to `w`, filling the padding with [`IGNORE`].
pub fn crop_mask(mask: &Mask, w: Window) -> Mask {
    let mut data = vec![IGNORE; (w.width * w.height) as usize];
    for y in 0..w.height {
        let sy = w.y + y;
        if sy >= mask.height {
            break;
        }
        for x in 0..w.width {
            let sx = w.x + x;
            if sx >= mask.width {
                break;
            }
            data[(y * w.width + x) as usize] = mask.data[(sy * mask.width + sx) as usize];
        }
    }
    Mask {
        width: w.width,
        height: w.height,
        data,
    }
}

/// Normalises an image and crops it to `w`; the padding is 0 after normalisation (the mean
/// colour), which is what the network sees for "no image".
pub fn crop_input(img: &Rgb, w: Window) -> Result<tch::Tensor, PluginError> {
    let full = to_normalised_tensor(img);
    let out = tch::Tensor::f_zeros(
        [3, i64::from(w.height), i64::from(w.width)],
        (tch::Kind::Float, tch::Device::Cpu),
    )?;
    let cw = img.width.saturating_sub(w.x).min(w.width) as i64;
    let ch = img.height.saturating_sub(w.y).min(w.height) as i64;
    if cw > 0 && ch > 0 {
        let src = full
            .f_narrow(1, i64::from(w.y), ch)?
            .f_narrow(2, i64::from(w.x), cw)?;
        out.f_narrow(1, 0, ch)?.f_narrow(2, 0, cw)?.f_copy_(&src)?;
    }
    Ok(out)
}

/// A mask as an `[H, W]` int64 target.
pub fn mask_tensor(mask: &Mask) -> Result<tch::Tensor, PluginError> {
    let data: Vec<i64> = mask.data.iter().map(|&v| i64::from(v)).collect();
    Ok(tch::Tensor::from_slice(&data).f_view([i64::from(mask.height), i64::from(mask.width)])?)
}
