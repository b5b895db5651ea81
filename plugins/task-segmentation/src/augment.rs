//! The photometric training augmentation of Pets-Detection and NYUWalkable (reference §3.1):
//! torchvision's `ColorJitter(brightness 0.4, contrast 0.4, saturation 0.4, hue 0.2)` (factors
//! drawn uniformly in [0.6, 1.4], a hue shift in [-0.2, 0.2], the four operations in a random
//! order) then `RandomGrayscale(p = 0.2)` with ITU-R 601 luma. Image only: masks are untouched.
//!
//! The operations follow PIL's definitions on 8-bit images (each result clamped to [0, 255]):
//! brightness blends with black, contrast with the image's mean luma, saturation with the
//! pixel's luma; hue rotates the HSV hue. The random numbers come from the kit's seeded [`Rng`],
//! not from torch's generator, so values differ from torchvision's for a given seed while the
//! distribution is the same.
use virb_plugin_kit::{draw::Rng, image::Rgb};

fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn rgb_to_hsv([r, g, b]: [f32; 3]) -> [f32; 3] {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d <= 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    let s = if max <= 0.0 { 0.0 } else { d / max };
    [h, s, max]
}

fn hsv_to_rgb([h, s, v]: [f32; 3]) -> [f32; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn apply(img: &mut Rgb, f: impl Fn([f32; 3]) -> [f32; 3]) {
    for px in img.pixels.chunks_exact_mut(3) {
        let out = f([px[0] as f32, px[1] as f32, px[2] as f32]);
        for c in 0..3 {
            px[c] = out[c].round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Multiplies brightness by `factor`.
pub fn brightness(img: &mut Rgb, factor: f32) {
    apply(img, |p| p.map(|v| v * factor));
}

/// Blends with the image's mean luma (`factor` 0 gives a flat grey image, 1 the image).
pub fn contrast(img: &mut Rgb, factor: f32) {
    let n = (img.pixels.len() / 3).max(1) as f32;
    let mean = img
        .pixels
        .chunks_exact(3)
        .map(|p| luma([p[0] as f32, p[1] as f32, p[2] as f32]).round())
        .sum::<f32>()
        / n;
    let mean = mean.round();
    apply(img, |p| p.map(|v| mean + factor * (v - mean)));
}

/// Blends with each pixel's luma (`factor` 0 gives the greyscale image).
pub fn saturation(img: &mut Rgb, factor: f32) {
    apply(img, |p| {
        let l = luma(p);
        p.map(|v| l + factor * (v - l))
    });
}

/// Rotates the hue by `shift` turns (in [-0.5, 0.5]).
pub fn hue(img: &mut Rgb, shift: f32) {
    apply(img, |p| {
        let [h, s, v] = rgb_to_hsv(p.map(|c| c / 255.0));
        hsv_to_rgb([h + shift, s, v]).map(|c| c * 255.0)
    });
}

/// Replaces every pixel by its luma in all three channels.
pub fn grayscale(img: &mut Rgb) {
    apply(img, |p| [luma(p); 3]);
}

/// ColorJitter(0.4, 0.4, 0.4, 0.2) then RandomGrayscale(0.2), drawn from `rng`: first the order
/// of the four operations, then their factors (brightness, contrast, saturation, hue), then the
/// grayscale coin.
pub fn jitter_and_grayscale(img: &mut Rgb, rng: &mut Rng) {
    let mut order = [0usize, 1, 2, 3];
    for i in (1..4).rev() {
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

    fn img(pixels: Vec<u8>) -> Rgb {
        Rgb {
            width: (pixels.len() / 3) as u32,
            height: 1,
            pixels,
        }
    }

    #[test]
    fn hsv_round_trip_and_hue_shift() {
        for p in [[1.0, 0.0, 0.0], [0.2, 0.5, 0.9], [0.3, 0.3, 0.3]] {
            let back = hsv_to_rgb(rgb_to_hsv(p));
            for c in 0..3 {
                assert!((back[c] - p[c]).abs() < 1e-5, "{p:?} -> {back:?}");
            }
        }
        // A third of a turn moves red to green.
        let mut red = img(vec![255, 0, 0]);
        hue(&mut red, 1.0 / 3.0);
        assert_eq!(red.pixels, vec![0, 255, 0]);
    }

    #[test]
    fn operations_match_pil_definitions() {
        let mut a = img(vec![100, 200, 50]);
        brightness(&mut a, 1.5);
        assert_eq!(a.pixels, vec![150, 255, 75]);
        let mut g = img(vec![100, 200, 50]);
        grayscale(&mut g);
        let l = (0.299f32 * 100.0 + 0.587 * 200.0 + 0.114 * 50.0).round() as u8;
        assert_eq!(g.pixels, vec![l, l, l]);
        let mut s = img(vec![100, 200, 50]);
        saturation(&mut s, 0.0);
        assert_eq!(s.pixels, vec![l, l, l]);
        let mut c = img(vec![0, 0, 0, 255, 255, 255]);
        contrast(&mut c, 0.0);
        assert_eq!(c.pixels, vec![128; 6]);
    }

    #[test]
    fn jitter_is_a_function_of_the_seed() {
        let base: Vec<u8> = (0..300).map(|i| (i * 7 % 256) as u8).collect();
        let run = |seed| {
            let mut a = img(base.clone());
            jitter_and_grayscale(&mut a, &mut Rng::new(seed));
            a.pixels
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
