use super::*;
use crate::cityscapes::{augment, read_split, remap, Cityscapes, CLASSES};
use crate::dense::{Mask, IGNORE};
use virb_plugin_kit::{draw::Rng, image::Rgb};

#[test]
fn remap_follows_the_reference_table() {
    let table = [
        (7, 1),
        (8, 2),
        (11, 3),
        (12, 4),
        (13, 5),
        (17, 6),
        (19, 7),
        (20, 8),
        (21, 9),
        (22, 10),
        (23, 11),
        (24, 12),
        (25, 13),
        (26, 14),
        (27, 15),
        (28, 16),
        (31, 17),
        (32, 18),
        (33, 19),
    ];
    for (id, class) in table {
        assert_eq!(remap(id), Some(class), "id {id}");
    }
    for void in [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 255] {
        assert_eq!(remap(void), Some(0), "id {void}");
    }
    assert_eq!(remap(34), None);
    assert_eq!(remap(254), None);
    assert_eq!(CLASSES[14], "car");
}

#[test]
fn fixture_layout_reads_with_remapped_targets() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&Cityscapes, dir.path(), 3, 2, 2, 32);
    assert_eq!(read_split(dir.path(), Split::Train).unwrap().len(), 6);
    let test = open(&Cityscapes, dir.path(), Split::Test, 32);
    let meta = test.meta().into_result().unwrap();
    assert_eq!((meta.len, meta.num_outputs), (6, 20));
    let mut sizes = std::collections::BTreeSet::new();
    for i in 0..6 {
        let (input, target) = sample(&test, i, SampleContext::PLAIN);
        let s = input.size();
        assert_eq!(target.size(), s[1..].to_vec());
        sizes.insert(s);
        let v = values(&target);
        // Road, the fixture's car/person/building ids remapped, void ignored; never class 0.
        assert!(v.contains(&1) && v.contains(&255), "{v:?}");
        assert!(v.iter().all(|c| [1, 3, 12, 14, 255].contains(c)), "{v:?}");
    }
    assert_eq!(sizes.len(), 2, "test images of two sizes: {sizes:?}");
    // Training reads are crops of the requested side, and a function of (seed, epoch, index).
    let train = open(&Cityscapes, dir.path(), Split::Train, 32);
    let (a, ta) = sample(&train, 1, train_context(0));
    let (b, tb) = sample(&train, 1, train_context(0));
    let (c, _) = sample(&train, 1, train_context(1));
    assert_eq!(a.size(), vec![3, 32, 32]);
    assert_eq!(ta.size(), vec![32, 32]);
    assert!(a.equal(&b) && ta.equal(&tb));
    assert!(!a.equal(&c));
}

/// A 4-quadrant image whose colour encodes the class, left and right distinguishable.
fn quadrants(w: u32, h: u32) -> (Rgb, Mask) {
    let colours = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]];
    let mut pixels = Vec::new();
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let q = usize::from(x >= w / 2) + 2 * usize::from(y >= h / 2);
            pixels.extend_from_slice(&colours[q]);
            data.push(q as u8 + 1);
        }
    }
    (
        Rgb {
            width: w,
            height: h,
            pixels,
        },
        Mask {
            width: w,
            height: h,
            data,
        },
    )
}

#[test]
fn augmentation_keeps_image_and_mask_aligned() {
    let mean = virb_plugin_kit::image::IMAGENET_MEAN;
    let std = virb_plugin_kit::image::IMAGENET_STD;
    let colours = [
        [1.0f32, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
    ];
    let mut flipped = 0;
    for seed in 0..12 {
        let (img, mask) = quadrants(80, 60);
        let (input, m) = augment(img, mask, &mut Rng::new(seed), 48).unwrap();
        assert_eq!(input.size(), vec![3, 48, 48]);
        let px: Vec<f32> = Vec::try_from(&input.flatten(0, -1)).unwrap();
        let at =
            |c: usize, x: u32, y: u32| px[c * 48 * 48 + (y * 48 + x) as usize] * std[c] + mean[c];
        let label = |x: u32, y: u32| m.data[(y * 48 + x) as usize];
        for y in 1..47 {
            for x in 1..47 {
                let l = label(x, y);
                let uniform = (0..3).all(|dy| (0..3).all(|dx| label(x + dx - 1, y + dy - 1) == l));
                if l == IGNORE {
                    assert!(
                        (0..3).all(|c| (at(c, x, y) - mean[c]).abs() < 1e-5),
                        "padding is the mean colour"
                    );
                } else if uniform {
                    let want = colours[usize::from(l) - 1];
                    for (c, w) in want.iter().enumerate() {
                        assert!(
                            (at(c, x, y) - w).abs() < 0.05,
                            "seed {seed} ({x}, {y}) class {l}"
                        );
                    }
                }
            }
        }
        // The left half of the original has odd classes: an even class at the left end of a
        // row and an odd one at its right end means the pair was flipped.
        let (left, right) = (label(0, 0), label(47, 0));
        if left != IGNORE && right != IGNORE && left % 2 == 0 && right % 2 == 1 {
            flipped += 1;
        }
    }
    assert!(flipped > 0, "no flipped crop in 12 draws");
}

#[test]
fn crop_pads_only_past_the_scaled_image() {
    // Scaled at most 2x, a 20x10 image never fills a 64-pixel crop.
    let (img, mask) = quadrants(20, 10);
    let (input, m) = augment(img, mask, &mut Rng::new(3), 64).unwrap();
    assert_eq!(m.data[64 * 64 - 1], IGNORE);
    assert_ne!(m.data[0], IGNORE, "the crop starts inside the image");
    assert_eq!(input.double_value(&[0, 63, 63]), 0.0);
    // A large image is never padded.
    for seed in 0..8 {
        let (img, mask) = quadrants(200, 200);
        let (_, m) = augment(img, mask, &mut Rng::new(seed), 64).unwrap();
        assert!(!m.data.contains(&IGNORE), "seed {seed}");
    }
}

#[test]
fn bad_labels_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&Cityscapes, dir.path(), 2, 1, 1, 32);
    let pairs = read_split(dir.path(), Split::Test).unwrap();
    // A class id outside Cityscapes' ids.
    grey_png(&pairs[0].mask, 64, 32, 40);
    // A mask of another size than its image.
    grey_png(&pairs[1].mask, 30, 20, 7);
    let ds = open(&Cityscapes, dir.path(), Split::Test, 32);
    let e = sample_error(&ds, 0).message.to_string();
    assert!(
        e.contains(&pairs[0].mask.display().to_string()) && e.contains("value 40"),
        "{e}"
    );
    let e = sample_error(&ds, 1).message.to_string();
    assert!(e.contains("64x32") && e.contains("30x20"), "{e}");
    assert!(
        e.contains(&pairs[1].image.display().to_string())
            && e.contains(&pairs[1].mask.display().to_string()),
        "{e}"
    );
    // A missing label names the image and the label it expected.
    std::fs::remove_file(&pairs[0].mask).unwrap();
    let e = open_error(&Cityscapes, dir.path(), Split::Test)
        .message
        .to_string();
    assert!(
        e.contains("has no mask") && e.contains(&pairs[0].mask.display().to_string()),
        "{e}"
    );
    // A label without its image.
    std::fs::remove_file(&pairs[1].image).unwrap();
    grey_png(&pairs[0].mask, 64, 32, 7);
    let e = open_error(&Cityscapes, dir.path(), Split::Test)
        .message
        .to_string();
    assert!(
        e.contains("has no image") && e.contains(&pairs[1].image.display().to_string()),
        "{e}"
    );
}
