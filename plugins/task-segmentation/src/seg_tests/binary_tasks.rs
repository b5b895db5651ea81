use super::*;
use crate::nyu_walkable::{self, NyuWalkable};
use crate::pets_detection::{self, PetsDetection};

#[test]
fn pets_targets_are_pet_one_background_zero_boundary_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&PetsDetection, dir.path(), 2, 3, 2, 40);
    let train = pets_detection::read_split(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 6);
    // Trimaps are 1 pet, 2 background, 3 boundary.
    let raw = crate::dense::load_mask(&train[0].mask, false).unwrap();
    let stored: std::collections::BTreeSet<u16> = raw.values.iter().copied().collect();
    assert_eq!(stored, [1, 2, 3].into());
    let ds = open(&PetsDetection, dir.path(), Split::Train, 32);
    let (plain, target) = sample(&ds, 1, SampleContext::PLAIN);
    assert_eq!(plain.size(), vec![3, 32, 32]);
    assert_eq!(target.size(), vec![32, 32]);
    assert_eq!(values(&target), [0, 1, 255].into());
    // Jitter changes the image, never the mask.
    let changed = (0..4).any(|e| {
        let (jittered, t) = sample(&ds, 1, train_context(e));
        assert!(t.equal(&target));
        !jittered.allclose(&plain, 1e-4, 1e-4, false)
    });
    assert!(changed);
    // The mask is resized with nearest neighbour: no values appear that were not stored.
    let ds = open(&PetsDetection, dir.path(), Split::Test, 17);
    let (_, t) = sample(&ds, 0, SampleContext::PLAIN);
    assert!(values(&t).is_subset(&[0, 1, 255].into()));
}

#[test]
fn pets_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&PetsDetection, dir.path(), 2, 2, 1, 32);
    let test = pets_detection::read_split(dir.path(), Split::Test).unwrap();
    grey_png(&test[0].mask, 32, 32, 4);
    let ds = open(&PetsDetection, dir.path(), Split::Test, 32);
    let e = sample_error(&ds, 0).message.to_string();
    assert!(
        e.contains("value 4") && e.contains(&test[0].mask.display().to_string()),
        "{e}"
    );
    std::fs::remove_file(&test[1].mask).unwrap();
    let e = open_error(&PetsDetection, dir.path(), Split::Test)
        .message
        .to_string();
    assert!(
        e.contains("has no trimap") && e.contains(&test[1].mask.display().to_string()),
        "{e}"
    );
}

#[test]
fn nyu_pairs_by_stem_and_reads_non_zero_as_walkable() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&NyuWalkable, dir.path(), 2, 2, 2, 36);
    let pairs = nyu_walkable::read_split(dir.path(), Split::Test).unwrap();
    assert_eq!(pairs.len(), 4);
    assert!(pairs
        .iter()
        .all(|p| p.image.file_name() == p.mask.file_name()));
    let ds = open(&NyuWalkable, dir.path(), Split::Test, 36);
    let (input, target) = sample(&ds, 0, SampleContext::PLAIN);
    assert_eq!(input.size(), vec![3, 36, 36]);
    assert_eq!(values(&target), [0, 1].into());
    // A mask of another size; then an unpaired mask.
    grey_png(&pairs[1].mask, 10, 10, 0);
    let e = sample_error(&ds, 1).message.to_string();
    assert!(e.contains("48x36") && e.contains("10x10"), "{e}");
    std::fs::remove_file(&pairs[1].image).unwrap();
    let e = open_error(&NyuWalkable, dir.path(), Split::Test)
        .message
        .to_string();
    assert!(
        e.contains("has no image") && e.contains(&pairs[1].image.display().to_string()),
        "{e}"
    );
}

#[test]
fn tasks_describe_their_heads() {
    use crate::cityscapes::Cityscapes;
    use crate::egohands::EgoHands;
    let names = |t: &dyn Fn() -> virb_plugin_api::TaskInfo| -> (Vec<String>, Vec<String>, bool) {
        let i = t();
        assert_eq!(i.family.as_str(), "segmentation");
        assert!(i.pixel_wise && i.encodable);
        (
            i.required_outputs.iter().map(|s| s.to_string()).collect(),
            i.metrics.iter().map(|m| m.name.to_string()).collect(),
            i.wants_encoder_state,
        )
    };
    let deeplab = (
        vec!["block1".to_string(), "block3".into()],
        vec!["miou".to_string(), "pixel_accuracy".into()],
        true,
    );
    assert_eq!(names(&|| Cityscapes.info().into_result().unwrap()), deeplab);
    assert_eq!(names(&|| EgoHands.info().into_result().unwrap()), deeplab);
    let pixel: Vec<String> = ["conv", "block1", "block2", "block3", "block4"]
        .map(String::from)
        .to_vec();
    let binary = (
        pixel,
        vec!["iou".to_string(), "pixel_accuracy".into()],
        false,
    );
    assert_eq!(
        names(&|| PetsDetection.info().into_result().unwrap()),
        binary
    );
    assert_eq!(names(&|| NyuWalkable.info().into_result().unwrap()), binary);
    let registered: Vec<String> = virb_plugin_kit::registry::registered_tasks()
        .iter()
        .map(|t| t.info().into_result().unwrap().name.to_string())
        .collect();
    assert_eq!(
        registered,
        [
            "CityscapesSemanticSegmentation",
            "EgoHands",
            "NYUWalkable",
            "Pets-Detection"
        ]
    );
}
