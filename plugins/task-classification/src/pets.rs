//! `Pets`: Oxford-IIIT Pets, 37 breeds.
//!
//! Layout: `<data>/pets/train/<breed>/*.jpg` and `<data>/pets/test/<breed>/*.jpg` (the official
//! `images.tar.gz` is flat, with the breed as the file name without its trailing `_<n>`; sort the
//! images into breed folders and split them).
use crate::folder::FolderSpec;

/// The task's description.
pub const SPEC: FolderSpec = FolderSpec {
    name: "Pets",
    dir: "pets",
    train: "train",
    test: "test",
    extensions: &["jpg"],
    fixture_classes: &[
        "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau",
        "Maine_Coon", "Persian",
    ],
    how_to_get: "download images.tar.gz, move each image into a folder named after its breed and split them into train/ and test/",
};

virb_plugin_kit::register_task!(crate::folder::FolderTask(&SPEC));
