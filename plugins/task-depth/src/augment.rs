//! ViRB's training augmentation of THOR's and NYU's images: torchvision's
//! `ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)` then
//! `RandomGrayscale(p=0.2)`, on the 8-bit image after the resize, never on the target.
//!
//! As torchvision does on PIL images: the four operations run in a random order, with factors
//! drawn uniformly from [0.6, 1.4] (hue: a shift of the hue circle in [−0.2, 0.2]); each blends
//! the image with a degenerate one (black; a grey image of the mean luma; the image's luma) with
//! Pillow's `ImageEnhance` arithmetic, truncated back to 8 bits after every operation. Luma is
//! ITU-R 601 (`L = 0.299 R + 0.587 G + 0.114 B`, Pillow's fixed-point rounding). The hue shift
//! works in floating point HSV, where Pillow works in 8-bit HSV: colours may differ by a grey
//! level.
use virb_plugin_kit::{draw::Rng, image::Rgb};

/// Pillow's `convert("L")` of one pixel.
pub(crate) fn luma(px: &[u8]) -> u8 {
    let (r, g, b) = (px[0] as u32, px[1] as u32, px[2] as u32);
    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
}

/// Pillow's `Image.blend(degenerate, image, factor)`: `d + factor * (x - d)`, clipped and
/// truncated.
fn blend(d: u8, x: u8, factor: f32) -> u8 {
    let v = d as f32 + factor * (x as f32 - d as f32);
    v.clamp(0.0, 255.0) as u8
}

fn brightness(img: &mut Rgb, factor: f32) {
    for v in img.pixels.iter_mut() {
        *v = blend(0, *v, factor);
    }
}

fn contrast(img: &mut Rgb, factor: f32) {
    let n = (img.pixels.len() / 3).max(1) as f64;
    let sum: f64 = img.pixels.chunks_exact(3).map(|p| luma(p) as f64).sum();
    let mean = (sum / n + 0.5) as u8;
    for v in img.pixels.iter_mut() {
        *v = blend(mean, *v, factor);
    }
}

fn saturation(img: &mut Rgb, factor: f32) {
    for px in img.pixels.chunks_exact_mut(3) {
        let l = luma(px);
        for v in px.iter_mut() {
            *v = blend(l, *v, factor);
        }
    }
}

/// Shifts the hue of every pixel by `shift` turns.
fn hue(img: &mut Rgb, shift: f32) {
    for px in img.pixels.chunks_exact_mut(3) {
        let [r, g, b] = [px[0], px[1], px[2]].map(|v| v as f32 / 255.0);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        if delta <= 0.0 {
            continue; // grey: no hue to shift
        }
        let h = if max == r {
            ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        } / 6.0;
        let h = (h + shift).rem_euclid(1.0);
        let (s, v) = (delta / max, max);
        let h6 = h * 6.0;
        let sector = (h6.floor() as i32).rem_euclid(6);
        let f = h6 - h6.floor();
        let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        let rgb = match sector {
            0 => [v, t, p],
            1 => [q, v, p],
            2 => [p, v, t],
            3 => [p, q, v],
            4 => [t, p, v],
            _ => [v, p, q],
        };
        for (dst, c) in px.iter_mut().zip(rgb) {
            *dst = (c * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
}

/// `RandomGrayscale`'s conversion: luma in all three channels.
pub fn grayscale(img: &mut Rgb) {
    for px in img.pixels.chunks_exact_mut(3) {
        let l = luma(px);
        px.fill(l);
    }
}

/// Applies `ColorJitter(0.4, 0.4, 0.4, 0.2)` then `RandomGrayscale(0.2)` with draws from `rng`.
pub fn jitter_and_grayscale(img: &mut Rgb, rng: &mut Rng) {
    // torchvision draws the order first, then the four factors.
    let mut order = [0usize, 1, 2, 3];
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let factor = |rng: &mut Rng| 0.6 + 0.8 * rng.uniform();
    let (b, c, s) = (factor(rng), factor(rng), factor(rng));
    let h = -0.2 + 0.4 * rng.uniform();
    for op in order {
        match op {
            0 => brightness(img, b),
            1 => contrast(img, c),
            2 => saturation(img, s),
            _ => hue(img, h),
        }
    }
    if rng.uniform() < 0.2 {
        grayscale(img);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pixels: Vec<u8>) -> Rgb {
        Rgb {
            width: (pixels.len() / 3) as u32,
            height: 1,
            pixels,
        }
    }

    #[test]
    fn enhance_arithmetic_is_pillows() {
        let mut img = image(vec![200, 100, 10, 0, 255, 128]);
        brightness(&mut img, 1.4);
        assert_eq!(img.pixels, [255, 140, 14, 0, 255, 179]);
        let mut img = image(vec![200, 100, 10]);
        saturation(&mut img, 0.0);
        // Pillow: Image.new("RGB", (1, 1), (200, 100, 10)).convert("L") == 120
        assert_eq!(img.pixels, [120, 120, 120]);
        let mut img = image(vec![0, 0, 0, 255, 255, 255]);
        contrast(&mut img, 0.5);
        // The mean luma 127.5 rounds to 128; 128 + 0.5 * (0 - 128) = 64, 128 + 0.5 * 127 = 191.5.
        assert_eq!(img.pixels, [64, 64, 64, 191, 191, 191]);
    }

    #[test]
    fn hue_turns_the_colour_circle() {
        let mut img = image(vec![255, 0, 0, 90, 90, 90]);
        hue(&mut img, 1.0 / 3.0);
        assert_eq!(img.pixels, [0, 255, 0, 90, 90, 90]);
        hue(&mut img, -2.0 / 3.0);
        assert_eq!(img.pixels[..3], [0, 0, 255]);
    }

    #[test]
    fn jitter_is_a_function_of_the_seed() {
        let base: Vec<u8> = (0..300).map(|i| (i * 7 % 256) as u8).collect();
        let run = |seed| {
            let mut img = image(base.clone());
            jitter_and_grayscale(&mut img, &mut Rng::new(seed));
            img.pixels
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        assert_ne!(run(3), base);
    }
}
