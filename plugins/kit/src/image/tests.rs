#![allow(clippy::unwrap_used, clippy::needless_range_loop)]
use super::*;
use ::image::{codecs::jpeg::JpegEncoder, ExtendedColorType};

/// A photo-like image: smooth gradients, a few shapes, pseudo-random texture.
fn photo(width: u32, height: u32) -> Rgb {
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    let mut state = 12345u32;
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
            let inside = (fx - 0.4).powi(2) + (fy - 0.5).powi(2) < 0.04 || (fx > 0.7 && fy < 0.3);
            for c in 0..3 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let noise = ((state >> 16) % 24) as f32 - 12.0;
                let base = match c {
                    0 => 200.0 * fx + 30.0,
                    1 => 180.0 * fy + 40.0 * (fx * 9.0).sin() + 40.0,
                    _ => 120.0 * (fx + fy) + 10.0,
                };
                let v = if inside { 240.0 - base * 0.5 } else { base } + noise;
                pixels.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    Rgb {
        width,
        height,
        pixels,
    }
}

fn write_jpeg(path: &Path, data: &[u8], width: u32, height: u32, colour: ExtendedColorType) {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode(data, width, height, colour)
        .unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A [`photo`] written as an RGB JPEG at quality 90.
fn write_photo(path: &Path, width: u32, height: u32) {
    let src = photo(width, height);
    write_jpeg(path, &src.pixels, width, height, ExtendedColorType::Rgb8);
}

/// Mean absolute difference of two equally long pixel buffers, in 8-bit levels.
fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .sum::<f64>()
        / a.len() as f64
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("virb-kit-image-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn lut_normalisation_equals_the_formula() {
    let lut = normalisation_lut();
    for c in 0..3 {
        for v in 0..256 {
            let exact = (v as f64 / 255.0 - IMAGENET_MEAN[c] as f64) / IMAGENET_STD[c] as f64;
            assert!(
                (lut[c][v] as f64 - exact).abs() < 1e-6,
                "channel {c} value {v}"
            );
        }
    }
    // And the tensor is laid out as planes, [3, H, W].
    let img = Rgb {
        width: 2,
        height: 1,
        pixels: vec![0, 128, 255, 10, 20, 30],
    };
    let t = to_normalised_tensor(&img);
    assert_eq!(t.size(), [3, 1, 2]);
    let got = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    let want: Vec<f32> = [(0, 0), (0, 3), (1, 1), (1, 4), (2, 2), (2, 5)]
        .iter()
        .map(|&(c, i)| (img.pixels[i] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
        .collect();
    assert_eq!(got, want);
}

#[test]
fn jpeg_reduction_keeps_both_sides_at_least_the_target() {
    assert_eq!(jpeg_reduction(1600, 1200, 224), 4); // 400x300
    assert_eq!(jpeg_reduction(500, 375, 224), 1); // 375 < 448
    assert_eq!(jpeg_reduction(1792, 1792, 224), 8);
    assert_eq!(jpeg_reduction(447, 447, 224), 2); // ceil(447 / 2) = 224
    assert_eq!(jpeg_reduction(446, 1000, 224), 1);
}

#[test]
fn large_colour_jpegs_are_decoded_at_reduced_scale_close_to_full_decode_and_resize() {
    let dir = temp_dir("scaled");
    // The reduced image keeps both sides at least 2 x 224 (PIL's reducing_gap=2).
    for (w, h, want) in [(1800, 1800, (450, 450)), (1600, 1200, (800, 600))] {
        let path = dir.join(format!("{w}x{h}.jpg"));
        write_photo(&path, w, h);
        let reduced = load_rgb_at_least(&path, Some(224)).unwrap();
        assert_eq!((reduced.width, reduced.height), want, "{w}x{h}");
        let fast = resize_square(reduced, 224).unwrap();
        let full = resize_square(load_rgb(&path).unwrap(), 224).unwrap();
        let mean = mean_abs_diff(&fast.pixels, &full.pixels);
        assert!(mean < 2.0, "{w}x{h}: mean abs difference {mean} of 255");
        // load_input takes the same path.
        let t = load_input(&path, 224).unwrap();
        assert!(t.equal(&to_normalised_tensor(&fast)));
    }
    // A file too small for any reduction is decoded at full scale.
    let path = dir.join("small.jpg");
    write_photo(&path, 500, 375);
    let img = load_rgb_at_least(&path, Some(224)).unwrap();
    assert_eq!((img.width, img.height), (500, 375));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn grayscale_jpeg_decodes_to_equal_channels_at_both_scales() {
    let dir = temp_dir("gray");
    let path = dir.join("gray.jpg");
    let src = photo(960, 960);
    let luma: Vec<u8> = src.pixels.chunks_exact(3).map(|p| p[1]).collect();
    write_jpeg(&path, &luma, 960, 960, ExtendedColorType::L8);
    for (min_side, want) in [(None, 960), (Some(224), 240)] {
        let img = load_rgb_at_least(&path, min_side).unwrap();
        assert_eq!((img.width, img.height), (want, want));
        assert!(img
            .pixels
            .chunks_exact(3)
            .all(|p| p[0] == p[1] && p[1] == p[2]));
        // Same content: the mean luma is close to the source's.
        let mean =
            |v: &mut dyn Iterator<Item = u8>, n: usize| v.map(f64::from).sum::<f64>() / n as f64;
        let got = mean(
            &mut img.pixels.iter().step_by(3).copied(),
            (want * want) as usize,
        );
        let expected = mean(&mut luma.iter().copied(), luma.len());
        assert!((got - expected).abs() < 2.0, "{got} vs {expected}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn full_scale_jpeg_and_png_match_the_source() {
    // Exact agreement with PIL's decoding is checked against PIL itself (tests/harness/it/reference.rs).
    let dir = temp_dir("full");
    let src = photo(320, 200);
    let jpg = dir.join("a.jpg");
    write_jpeg(&jpg, &src.pixels, 320, 200, ExtendedColorType::Rgb8);
    let png = dir.join("a.png");
    ::image::save_buffer(&png, &src.pixels, 320, 200, ExtendedColorType::Rgb8).unwrap();
    assert_eq!(load_rgb(&png).unwrap().pixels, src.pixels);
    let ours = load_rgb(&jpg).unwrap();
    let theirs = ::image::open(&jpg).unwrap().into_rgb8();
    assert_eq!((ours.width, ours.height), theirs.dimensions());
    // Another decoder (zune-jpeg, in the image crate) rounds the IDCT and upsampling differently.
    let mean = mean_abs_diff(&ours.pixels, theirs.as_raw());
    assert!(
        mean < 1.0,
        "mean abs difference {mean} from the image crate's decoding"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn jpeg_with_a_libjpeg_warning_still_decodes() {
    // A file cut short in its entropy-coded data: libjpeg warns ("premature end of JPEG file") and
    // TurboJPEG fails on warnings; zune-jpeg decodes it leniently (the missing rows grey).
    let dir = temp_dir("warning");
    let path = dir.join("warn.jpg");
    write_photo(&path, 64, 48);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let img = load_rgb(&path).unwrap();
    assert_eq!((img.width, img.height), (64, 48));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn jpeg_declaring_a_huge_size_is_refused_before_decoding() {
    // A 16x16 file whose frame header (SOF0: FF C0, length, precision, height, width) says
    // 30000x30000: 900 M pixels, past PIL's decompression-bomb limit.
    let dir = temp_dir("bomb");
    let path = dir.join("bomb.jpg");
    write_photo(&path, 16, 16);
    let mut bytes = std::fs::read(&path).unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
    std::fs::write(&path, &bytes).unwrap();
    for min_side in [None, Some(224)] {
        let err = format!("{:?}", load_rgb_at_least(&path, min_side).err().unwrap());
        assert!(
            err.contains("bomb.jpg") && err.contains("30000x30000"),
            "{err}"
        );
        assert!(err.contains("decompression-bomb limit"), "{err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn corrupt_jpeg_error_names_the_file() {
    let dir = temp_dir("corrupt");
    let path = dir.join("bad.jpg");
    std::fs::write(&path, b"\xff\xd8\xff\xe0 truncated").unwrap();
    for min_side in [None, Some(8)] {
        let err = load_rgb_at_least(&path, min_side).err().unwrap();
        assert!(format!("{err:?}").contains("bad.jpg"), "{err:?}");
    }
    std::fs::remove_dir_all(dir).ok();
}
