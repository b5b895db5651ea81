//! Drawing and writing helpers for this plugin's fixture data sets.
//!
//! The signal: a smooth random field `r` in [0, 1] across the image (three plane waves of random
//! direction, frequency and phase: ramps and gentle hills that differ per image); the image's
//! brightness follows it (with a faint random tint and pixel noise), and the target is a function
//! of it (depth = a scaled `r`). A frozen random ResNet's pyramid carries brightness at every
//! level, so the PixelWise head can learn it; two images' fields are nearly uncorrelated, so
//! shuffling the target files among the images leaves nothing to learn beyond the mean map (a
//! single ramp per image left a chance correlation between shuffled pairs of similar
//! orientation).
use std::path::Path;
use virb_plugin_api::{PluginError, Split};
use virb_plugin_kit::draw::{hue_to_rgb, Rng};

/// A drawn scene: the ramp and the image that shows it.
pub struct Ramp {
    /// Side of the square image.
    pub size: u32,
    /// `size * size` values in [0, 1], row-major.
    pub ramp: Vec<f32>,
    /// `size * size * 3` bytes.
    pub rgb: Vec<u8>,
}

/// The random generator of sample `index` of `split`: the same files whichever task of a shared
/// folder (`taskonomy/`) writes them.
pub fn sample_rng(seed: u64, split: Split, index: u32) -> Rng {
    let split = match split {
        Split::Train => 1u64,
        _ => 2,
    };
    Rng::new(seed ^ (split << 40) ^ (u64::from(index).wrapping_mul(0x9E37_79B9)))
}

/// Draws a scene (see the module's documentation): `r` is a sum of three plane waves of 0.4 to
/// 1.2 cycles per image side in random directions and phases, scaled to [0, 1].
pub fn ramp_scene(size: u32, rng: &mut Rng) -> Ramp {
    let waves: Vec<(f32, f32, f32, f32)> = (0..3)
        .map(|_| {
            let angle = rng.uniform() * std::f32::consts::TAU;
            let freq = std::f32::consts::TAU * (0.4 + 0.8 * rng.uniform());
            (
                angle.cos() * freq,
                angle.sin() * freq,
                rng.uniform() * std::f32::consts::TAU,
                0.5 + 0.5 * rng.uniform(),
            )
        })
        .collect();
    let tint = hue_to_rgb(rng.uniform());
    let s = size.max(2) as f32 - 1.0;
    let raw: Vec<f32> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32 / s, (i / size) as f32 / s);
            waves
                .iter()
                .map(|(kx, ky, phase, amp)| amp * (kx * x + ky * y + phase).sin())
                .sum()
        })
        .collect();
    let (lo, hi) = raw
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = (hi - lo).max(1e-6);
    let ramp: Vec<f32> = raw.iter().map(|v| (v - lo) / span).collect();
    let mut rgb = Vec::with_capacity(ramp.len() * 3);
    for &r in &ramp {
        let grey = 0.12 + 0.76 * r;
        for t in tint {
            let noise = (rng.uniform() - 0.5) * 0.06;
            let v = (grey * (0.8 + 0.2 * t) + noise).clamp(0.0, 1.0);
            rgb.push((v * 255.0 + 0.5) as u8);
        }
    }
    Ramp { size, ramp, rgb }
}

fn create_parent(path: &Path) -> Result<(), PluginError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            PluginError::data(format!("cannot create folder {}: {e}", parent.display()))
        })?;
    }
    Ok(())
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> PluginError {
    PluginError::data(format!("cannot write {}: {e}", path.display()))
}

/// Writes 8-bit grey values as a JPEG (quality 95).
pub fn write_grey_jpeg(path: &Path, size: u32, grey: &[u8]) -> Result<(), PluginError> {
    create_parent(path)?;
    let file = std::fs::File::create(path).map_err(|e| write_error(path, e))?;
    let mut writer = std::io::BufWriter::new(file);
    ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, 95)
        .encode(grey, size, size, ::image::ExtendedColorType::L8)
        .map_err(|e| write_error(path, e))
}

/// Writes 16-bit grey values as a PNG.
pub fn write_grey_png16(path: &Path, size: u32, grey: &[u16]) -> Result<(), PluginError> {
    create_parent(path)?;
    let img = ::image::ImageBuffer::<::image::Luma<u16>, _>::from_raw(size, size, grey.to_vec())
        .ok_or_else(|| write_error(path, "buffer size does not match the image size"))?;
    img.save(path).map_err(|e| write_error(path, e))
}

/// Writes float32 grey values (NaN allowed) as an uncompressed TIFF, as PIL saves an `F` image.
pub fn write_float_tiff(
    path: &Path,
    width: u32,
    height: u32,
    values: &[f32],
) -> Result<(), PluginError> {
    create_parent(path)?;
    let file = std::fs::File::create(path).map_err(|e| write_error(path, e))?;
    let mut encoder = tiff::encoder::TiffEncoder::new(std::io::BufWriter::new(file))
        .map_err(|e| write_error(path, e))?;
    encoder
        .write_image::<tiff::encoder::colortype::Gray32Float>(width, height, values)
        .map_err(|e| write_error(path, e))
}

/// Writes 16-bit grey values as an uncompressed TIFF.
pub fn write_u16_tiff(
    path: &Path,
    width: u32,
    height: u32,
    values: &[u16],
) -> Result<(), PluginError> {
    create_parent(path)?;
    let file = std::fs::File::create(path).map_err(|e| write_error(path, e))?;
    let mut encoder = tiff::encoder::TiffEncoder::new(std::io::BufWriter::new(file))
        .map_err(|e| write_error(path, e))?;
    encoder
        .write_image::<tiff::encoder::colortype::Gray16>(width, height, values)
        .map_err(|e| write_error(path, e))
}

/// Samples per split and the number of folders they are spread over, from a fixture request:
/// `classes` folders (THOR's `<dir>`, Taskonomy's `<building>`) of `*_per_class` samples each.
pub fn counts(
    request: &virb_plugin_api::FixtureRequest,
    task: &str,
) -> Result<(u32, [(Split, u32); 2]), PluginError> {
    let folders = request.classes_up_to(task, 64)?;
    let per = request.per_split().map(|(split, n)| (split, n * folders));
    Ok((folders, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_spans_zero_to_one_and_shows_in_the_image() {
        let scene = ramp_scene(16, &mut Rng::new(1));
        let (lo, hi) = scene
            .ramp
            .iter()
            .fold((1.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo.abs() < 1e-6 && (hi - 1.0).abs() < 1e-6);
        // Brightness increases with the ramp.
        let grey = |i: usize| {
            scene.rgb[3 * i..3 * i + 3]
                .iter()
                .map(|&v| v as f32)
                .sum::<f32>()
        };
        let (imin, imax) = (0..256).fold((0, 0), |(a, b), i| {
            (
                if scene.ramp[i] < scene.ramp[a] { i } else { a },
                if scene.ramp[i] > scene.ramp[b] { i } else { b },
            )
        });
        assert!(grey(imax) > grey(imin) + 300.0);
    }
}
