//! Drawing for the fixture data sets: a textured grey background with saturated coloured shapes,
//! each shape's pixels labelled with its class, so a mask is the set of pixels of a colour — a
//! signal that even a frozen random encoder's pyramid carries.
use std::path::Path;
use virb_plugin_api::PluginError;
use virb_plugin_kit::draw::{hue_to_rgb, Rng};

/// An image being drawn and its label map (one value per pixel, as the data set stores it).
pub struct Canvas {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// RGB, row-major.
    pub rgb: Vec<u8>,
    /// Stored label value per pixel.
    pub label: Vec<u8>,
}

impl Canvas {
    /// A noisy grey background (blotches of a few pixels and per-pixel noise) labelled `label`.
    pub fn background(width: u32, height: u32, label: u8, rng: &mut Rng) -> Self {
        let base = 90.0 + 50.0 * rng.uniform();
        let cell = 4;
        let cols = width.div_ceil(cell) as usize;
        let blotches: Vec<f32> = (0..cols * height.div_ceil(cell) as usize)
            .map(|_| (rng.uniform() - 0.5) * 50.0)
            .collect();
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            for x in 0..width {
                let b = blotches[(y / cell) as usize * cols + (x / cell) as usize];
                for _ in 0..3 {
                    let v = base + b + (rng.uniform() - 0.5) * 20.0;
                    rgb.push(v.clamp(0.0, 255.0) as u8);
                }
            }
        }
        Canvas {
            width,
            height,
            rgb,
            label: vec![label; (width * height) as usize],
        }
    }

    /// Paints the pixels where `inside(x, y)` with `colour` (RGB in [0, 1], with a little noise)
    /// and labels them `label`.
    pub fn paint(
        &mut self,
        colour: [f32; 3],
        label: u8,
        rng: &mut Rng,
        inside: impl Fn(f32, f32) -> bool,
    ) {
        for y in 0..self.height {
            for x in 0..self.width {
                if !inside(x as f32 + 0.5, y as f32 + 0.5) {
                    continue;
                }
                let i = (y * self.width + x) as usize;
                self.label[i] = label;
                for (c, k) in colour.iter().enumerate() {
                    let v = k * 210.0 + 25.0 + (rng.uniform() - 0.5) * 24.0;
                    self.rgb[i * 3 + c] = v.clamp(0.0, 255.0) as u8;
                }
            }
        }
    }

    /// A random axis-aligned rectangle with sides between `min` and `max` times the image's
    /// height, its centre anywhere in the image (clipped at the borders), so that shapes are
    /// not more likely in the middle: masks of other images then carry no positional prior.
    pub fn rect(&mut self, colour: [f32; 3], label: u8, min: f32, max: f32, rng: &mut Rng) {
        let (w, h) = (self.width as f32, self.height as f32);
        let rw = h * (min + (max - min) * rng.uniform());
        let rh = h * (min + (max - min) * rng.uniform());
        let x0 = rng.uniform() * w - rw / 2.0;
        let y0 = rng.uniform() * h - rh / 2.0;
        self.paint(colour, label, rng, |x, y| {
            x >= x0 && x < x0 + rw && y >= y0 && y < y0 + rh
        });
    }

    /// A random ellipse with semi-axes between `min` and `max` times the image's height, its
    /// centre anywhere in the image (clipped at the borders); returns its centre and semi-axes.
    pub fn ellipse(
        &mut self,
        colour: [f32; 3],
        label: u8,
        min: f32,
        max: f32,
        rng: &mut Rng,
    ) -> (f32, f32, f32, f32) {
        let (w, h) = (self.width as f32, self.height as f32);
        let ax = h * (min + (max - min) * rng.uniform());
        let ay = h * (min + (max - min) * rng.uniform());
        let cx = rng.uniform() * w;
        let cy = rng.uniform() * h;
        self.paint(colour, label, rng, |x, y| {
            let (dx, dy) = ((x - cx) / ax, (y - cy) / ay);
            dx * dx + dy * dy <= 1.0
        });
        (cx, cy, ax, ay)
    }

    /// Sets the label (not the colour) of the pixels where `inside(x, y)` to `label`.
    pub fn relabel(&mut self, label: u8, inside: impl Fn(f32, f32) -> bool) {
        for y in 0..self.height {
            for x in 0..self.width {
                if inside(x as f32 + 0.5, y as f32 + 0.5) {
                    self.label[(y * self.width + x) as usize] = label;
                }
            }
        }
    }

    /// Writes the image as a PNG or JPEG (by extension) and the labels as a grey PNG.
    pub fn save(&self, image: &Path, label: &Path) -> Result<(), PluginError> {
        if image.extension().is_some_and(|e| e == "jpg") {
            virb_plugin_kit::draw::write_jpeg(image, self.width, self.height, &self.rgb)?;
        } else {
            virb_plugin_kit::draw::write_png(image, self.width, self.height, &self.rgb)?;
        }
        write_grey_png(label, self.width, self.height, &self.label)
    }
}

/// The colour of fixture class `k` of `n` (evenly spaced saturated hues).
pub fn class_colour(k: u32, n: u32) -> [f32; 3] {
    hue_to_rgb(k as f32 / n.max(1) as f32)
}

/// Writes an 8-bit single-channel PNG, creating parent folders.
pub fn write_grey_png(
    path: &Path,
    width: u32,
    height: u32,
    data: &[u8],
) -> Result<(), PluginError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            PluginError::data(format!("cannot create folder {}: {e}", parent.display()))
        })?;
    }
    ::image::save_buffer(path, data, width, height, ::image::ExtendedColorType::L8)
        .map_err(|e| PluginError::data(format!("cannot write {}: {e}", path.display())))
}
