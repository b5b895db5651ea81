//! The fixture generator: a small data set in the task's real layout, with a signal a head can
//! learn (each class is a shape in its own colour, jittered in place, size and brightness, on a
//! noisy grey background).
use crate::ppm::{self, Rgb};
use std::path::Path;
use virb_plugin_api::{FixtureRequest, PluginError};

/// The class folders the generator writes, in order.
pub const CLASSES: [&str; 6] = ["disc", "square", "hbar", "vbar", "cross", "ring"];
const COLOURS: [[f32; 3]; 6] = [
    [220.0, 40.0, 40.0],
    [40.0, 200.0, 60.0],
    [50.0, 70.0, 230.0],
    [230.0, 210.0, 40.0],
    [200.0, 50.0, 210.0],
    [40.0, 210.0, 220.0],
];

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Whether pixel (x, y), in units of the image side centred on the shape, is inside `class`'s
/// shape of radius `r`.
fn inside(class: usize, x: f32, y: f32, r: f32) -> bool {
    let (ax, ay) = (x.abs(), y.abs());
    match class {
        0 => x * x + y * y <= r * r,
        1 => ax <= r * 0.8 && ay <= r * 0.8,
        2 => ax <= r && ay <= r * 0.3,
        3 => ax <= r * 0.3 && ay <= r,
        4 => (ax <= r && ay <= r * 0.25) || (ax <= r * 0.25 && ay <= r),
        _ => {
            let d = (x * x + y * y).sqrt();
            d <= r && d >= r * 0.6
        }
    }
}

/// Draws one image of `class`.
fn draw(class: usize, size: usize, rng: &mut Rng) -> Rgb {
    let colour = COLOURS[class % COLOURS.len()];
    let brightness = 0.8 + 0.4 * rng.unit();
    let r = 0.25 + 0.1 * rng.unit();
    let cx = 0.5 + (rng.unit() - 0.5) * 0.2;
    let cy = 0.5 + (rng.unit() - 0.5) * 0.2;
    let mut data = Vec::with_capacity(size * size * 3);
    for py in 0..size {
        for px in 0..size {
            let x = (px as f32 + 0.5) / size as f32 - cx;
            let y = (py as f32 + 0.5) / size as f32 - cy;
            let noise = (rng.unit() - 0.5) * 30.0;
            for c in colour {
                let v = if inside(class, x, y, r) {
                    c * brightness + noise
                } else {
                    120.0 + noise
                };
                data.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    Rgb {
        width: size,
        height: size,
        data,
    }
}

/// Writes the fixture below `<data_root>/<data_dir>`; returns what was written, in one line.
pub fn write(request: &FixtureRequest, data_dir: &str) -> Result<String, PluginError> {
    let classes = request.classes_up_to(crate::TASK, CLASSES.len() as u32)? as usize;
    let root = Path::new(request.data_root.as_str()).join(data_dir);
    let size = request.image_size as usize;
    let mut rng = Rng(request.seed);
    let mut written = 0;
    for (split, per_class) in request.per_split() {
        for (class, name) in CLASSES.iter().enumerate().take(classes) {
            let dir = root.join(split.as_str()).join(name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| PluginError::data(format!("cannot create {}: {e}", dir.display())))?;
            for i in 0..per_class {
                let file = dir.join(format!("{i:04}.ppm"));
                std::fs::write(&file, ppm::encode(&draw(class, size, &mut rng))).map_err(|e| {
                    PluginError::data(format!("cannot write {}: {e}", file.display()))
                })?;
                written += 1;
            }
        }
    }
    Ok(format!(
        "{written} images of {classes} classes ({size}x{size} PPM) in {}",
        root.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_differ_and_the_generator_is_deterministic() {
        let a = draw(0, 32, &mut Rng(1));
        assert_eq!(a, draw(0, 32, &mut Rng(1)));
        assert_ne!(a, draw(0, 32, &mut Rng(2)));
        // The centre pixel is the class colour (red for the disc, blue for hbar).
        let centre = (16 * 32 + 16) * 3;
        assert!(
            a.data[centre] > 150 && a.data[centre + 2] < 100,
            "{:?}",
            &a.data[centre..centre + 3]
        );
        let b = draw(2, 32, &mut Rng(1));
        assert!(b.data[centre + 2] > 150 && b.data[centre] < 100);
    }
}
