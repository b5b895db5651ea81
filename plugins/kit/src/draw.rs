//! Drawing helpers for fixture data sets: images with a signal a head can learn.
use std::path::Path;
use virb_plugin_api::PluginError;

/// A small deterministic random generator (SplitMix64), so fixtures are identical everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Converts a hue in [0, 1) at full saturation and value to RGB in [0, 1].
pub fn hue_to_rgb(h: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let x = 1.0 - (h6 % 2.0 - 1.0).abs();
    match h6 as u32 {
        0 => [1.0, x, 0.0],
        1 => [x, 1.0, 0.0],
        2 => [0.0, 1.0, x],
        3 => [0.0, x, 1.0],
        4 => [x, 0.0, 1.0],
        _ => [1.0, 0.0, x],
    }
}

/// Draws an image for class `class` of `classes`: a class-specific hue and stripe orientation,
/// with random phase, brightness and pixel noise so no two images are alike.
pub fn class_image(class: u32, classes: u32, width: u32, height: u32, rng: &mut Rng) -> Vec<u8> {
    let hue = class as f32 / classes.max(1) as f32;
    let base = hue_to_rgb(hue);
    let angle = std::f32::consts::PI * (class % 4) as f32 / 4.0;
    let (dx, dy) = (angle.cos(), angle.sin());
    let period = 6.0 + (class % 3) as f32 * 4.0;
    let phase = rng.uniform() * period;
    let brightness = 0.75 + 0.25 * rng.uniform();
    let mut out = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let t = (x as f32 * dx + y as f32 * dy + phase) / period;
            let stripe = if (t.floor() as i64) % 2 == 0 {
                1.0
            } else {
                0.45
            };
            for c in base {
                let noise = (rng.uniform() - 0.5) * 0.2;
                let v = (c * stripe * brightness + 0.1 + noise).clamp(0.0, 1.0);
                out.push((v * 255.0) as u8);
            }
        }
    }
    out
}

/// Writes an RGB buffer as a JPEG (quality 90), creating parent folders.
pub fn write_jpeg(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<(), PluginError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            PluginError::data(format!("cannot create folder {}: {e}", parent.display()))
        })?;
    }
    let file = std::fs::File::create(path)
        .map_err(|e| PluginError::data(format!("cannot create {}: {e}", path.display())))?;
    let mut writer = std::io::BufWriter::new(file);
    ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, 90)
        .encode(rgb, width, height, ::image::ExtendedColorType::Rgb8)
        .map_err(|e| PluginError::data(format!("cannot write {}: {e}", path.display())))
}

/// Draws `count` discs of `colour` (RGB in [0, 1]) at random positions on a dim background of the
/// same colour; a
/// disc's radius is `radius` pixels, or the next one of `first_radii` for the first discs.
pub fn discs_image(
    width: u32,
    height: u32,
    count: u32,
    radius: f32,
    first_radii: &[f32],
    colour: [f32; 3],
    rng: &mut Rng,
) -> Vec<u8> {
    // A dim version of the disc colour as background.
    let mut out: Vec<u8> = (0..width * height)
        .flat_map(|_| colour.map(|c| (c * 70.0 + 50.0) as u8))
        .collect();
    for k in 0..count {
        let r = first_radii.get(k as usize).copied().unwrap_or(radius);
        let cx = r + rng.uniform() * (width as f32 - 2.0 * r).max(1.0);
        let cy = r + rng.uniform() * (height as f32 - 2.0 * r).max(1.0);
        for y in 0..height {
            for x in 0..width {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                if dx * dx + dy * dy <= r * r {
                    let i = ((y * width + x) * 3) as usize;
                    for c in 0..3 {
                        out[i + c] = (colour[c] * 230.0 + 20.0) as u8;
                    }
                }
            }
        }
    }
    out
}

/// Writes an RGB buffer as a PNG, creating parent folders.
pub fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<(), PluginError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            PluginError::data(format!("cannot create folder {}: {e}", parent.display()))
        })?;
    }
    ::image::save_buffer(path, rgb, width, height, ::image::ExtendedColorType::Rgb8)
        .map_err(|e| PluginError::data(format!("cannot write {}: {e}", path.display())))
}

/// Writes `text` to `path`, creating parent folders.
pub fn write_text(path: &Path, text: &str) -> Result<(), PluginError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            PluginError::data(format!("cannot create folder {}: {e}", parent.display()))
        })?;
    }
    std::fs::write(path, text)
        .map_err(|e| PluginError::data(format!("cannot write {}: {e}", path.display())))
}

/// A pair of frames seen by a camera that moved: both are `size` x `size` views of one random
/// striped scene; `motion` (0 ahead, 1 turn left, 2 turn right, 3 look up, 4 look down, others
/// cycle) moves the second view (closer, or shifted by a quarter of the frame). The second view
/// is also tinted with the motion's hue so that even a random encoder's features separate the
/// classes.
pub fn motion_pair(motion: u32, motions: u32, size: u32, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let big = size * 2;
    let scene = class_image(rng.below(8) as u32, 8, big, big, rng);
    let shift = (size / 4) as i64;
    let crop = |x0: i64, y0: i64, side: u32| -> Vec<u8> {
        let mut out = Vec::with_capacity((size * size * 3) as usize);
        for y in 0..size {
            for x in 0..size {
                let sx = (x0 + (x as i64 * side as i64) / size as i64).clamp(0, big as i64 - 1);
                let sy = (y0 + (y as i64 * side as i64) / size as i64).clamp(0, big as i64 - 1);
                let i = ((sy as u32 * big + sx as u32) * 3) as usize;
                out.extend_from_slice(&scene[i..i + 3]);
            }
        }
        out
    };
    let c = (size / 2) as i64;
    let a = crop(c, c, size);
    let b = match motion % 5 {
        0 => crop(c + shift, c + shift, size / 2),
        1 => crop(c - shift, c, size),
        2 => crop(c + shift, c, size),
        3 => crop(c, c - shift, size),
        _ => crop(c, c + shift, size),
    };
    let tint = hue_to_rgb(motion as f32 / motions.max(1) as f32);
    let b = b
        .chunks_exact(3)
        .flat_map(|px| [0, 1, 2].map(|k| (px[k] as f32 * 0.6 + tint[k] * 255.0 * 0.4) as u8))
        .collect();
    (a, b)
}
