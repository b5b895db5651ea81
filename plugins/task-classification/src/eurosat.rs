//! `Eurosat`: EuroSAT RGB satellite images, 10 land-use classes.
//!
//! Layout: `<data>/eurosat/train/<class>/*.jpg` and `<data>/eurosat/test/<class>/*.jpg` (the
//! official zip has no split; ViRB used 80 % for training).
use crate::folder::FolderSpec;

/// The task's description.
pub const SPEC: FolderSpec = FolderSpec {
    name: "Eurosat",
    dir: "eurosat",
    train: "train",
    test: "test",
    extensions: &["jpg"],
    fixture_classes: &[
        "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
        "PermanentCrop", "Residential",
    ],
    how_to_get: "download EuroSAT (RGB), convert to .jpg if needed and split each class 80/20 into train/ and test/",
};

virb_plugin_kit::register_task!(crate::folder::FolderTask(&SPEC));
