use super::*;
use crate::dense::Mask;
use crate::egohands::{hand_window, read_split, split_of, EgoHands, TEST_VIDEOS, VAL_VIDEOS};
use virb_plugin_kit::draw::Rng;

#[test]
fn the_split_follows_the_fixed_video_masks() {
    let test: Vec<usize> = (0..48)
        .filter(|&i| split_of(i) == Some(Split::Test))
        .collect();
    let none: Vec<usize> = (0..48).filter(|&i| split_of(i).is_none()).collect();
    assert_eq!(test, TEST_VIDEOS.to_vec());
    assert_eq!(none, VAL_VIDEOS.to_vec());
    assert_eq!(
        (0..48)
            .filter(|&i| split_of(i) == Some(Split::Train))
            .count(),
        36
    );
}

#[test]
fn fixture_has_48_videos_and_validation_is_unused() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&EgoHands, dir.path(), 4, 9, 2, 32);
    let videos = crate::pairs::subfolders(&dir.path().join("egohands/images"), "").unwrap();
    assert_eq!(videos.len(), 48);
    let train = read_split(dir.path(), Split::Train).unwrap();
    let test = read_split(dir.path(), Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (36, 8));
    for v in VAL_VIDEOS {
        let name = format!("video_{v:02}");
        assert!(dir
            .path()
            .join("egohands/images")
            .join(&name)
            .join("frame_0000.jpg")
            .is_file());
        assert!(!train
            .iter()
            .chain(&test)
            .any(|p| p.image.to_string_lossy().contains(&name)));
    }
    let ds = open(&EgoHands, dir.path(), Split::Test, 32);
    let (input, target) = sample(&ds, 0, SampleContext::PLAIN);
    assert_eq!(input.size(), vec![3, 32, 56], "full frames in test");
    let v = values(&target);
    assert!(
        v.contains(&0) && v.iter().all(|c| (0..=4).contains(c)),
        "{v:?}"
    );
    let ds = open(&EgoHands, dir.path(), Split::Train, 32);
    for i in 0..36 {
        let (input, target) = sample(&ds, i, train_context(0));
        assert_eq!(input.size(), vec![3, 32, 32]);
        assert!(
            values(&target).iter().any(|c| (1..=4).contains(c)),
            "frame {i}: a crop with a hand"
        );
    }
}

#[test]
fn the_crop_is_redrawn_until_it_holds_a_hand() {
    // Hands in the right half of a wide mask: a single 10-pixel window misses them 45% of the
    // time, eleven draws almost never (the seeds are fixed, so this is deterministic).
    let mut mask = Mask {
        width: 100,
        height: 10,
        data: vec![0; 1000],
    };
    for y in 0..10 {
        for x in 50..100 {
            mask.data[y * 100 + x] = 2;
        }
    }
    let single_misses = (0..50)
        .filter(|&s| crate::dense::Window::random(&mut Rng::new(s), 100, 10, 10).x < 41)
        .count();
    assert!(single_misses > 10, "{single_misses}");
    for seed in 0..50 {
        let w = hand_window(&mask, &mut Rng::new(seed), 10);
        assert!(w.x >= 41, "seed {seed}: window at {}", w.x);
        assert_eq!((w.width, w.height), (10, 10));
    }
}

#[test]
fn bad_masks_and_folders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&EgoHands, dir.path(), 2, 4, 4, 32);
    let pairs = read_split(dir.path(), Split::Test).unwrap();
    grey_png(&pairs[0].mask, 56, 32, 7);
    let ds = open(&EgoHands, dir.path(), Split::Test, 32);
    let e = sample_error(&ds, 0).message.to_string();
    assert!(
        e.contains(&pairs[0].mask.display().to_string()) && e.contains("value 7"),
        "{e}"
    );
    std::fs::remove_dir_all(dir.path().join("egohands/labels/video_05")).unwrap();
    let e = open_error(&EgoHands, dir.path(), Split::Train)
        .message
        .to_string();
    assert!(
        e.contains("video_05") && e.contains("no label folder"),
        "{e}"
    );
}
