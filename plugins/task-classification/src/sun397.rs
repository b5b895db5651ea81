//! `SUN397`: 397 scene categories.
//!
//! Layout: `<data>/SUN397/train/<class>/*.jpg` and `<data>/SUN397/test/<class>/*.jpg`, flat class
//! folders (the official archive nests them as `a/abbey/...`; flatten them and make the split).
use crate::folder::FolderSpec;

/// The task's description.
pub const SPEC: FolderSpec = FolderSpec {
    name: "SUN397",
    dir: "SUN397",
    train: "train",
    test: "test",
    extensions: &["jpg"],
    fixture_classes: &[
        "abbey", "airplane_cabin", "airport_terminal", "alley", "amphitheater", "amusement_arcade",
        "amusement_park", "anechoic_chamber",
    ],
    how_to_get: "download SUN397.tar.gz, flatten the nested category folders and split them into train/ and test/",
};

virb_plugin_kit::register_task!(crate::folder::FolderTask(&SPEC));
