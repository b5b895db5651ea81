//! `dtd`: the Describable Textures Dataset, 47 texture classes.
//!
//! Layout: `<data>/dtd/train/<class>/*.jpg` and `<data>/dtd/test/<class>/*.jpg` (a user-made
//! split of `dtd-r1.0.1/images/<class>/`).
use crate::folder::FolderSpec;

/// The task's description.
pub const SPEC: FolderSpec = FolderSpec {
    name: "dtd",
    dir: "dtd",
    train: "train",
    test: "test",
    extensions: &["jpg"],
    fixture_classes: &[
        "banded",
        "blotchy",
        "braided",
        "bubbly",
        "bumpy",
        "chequered",
        "cobwebbed",
        "cracked",
    ],
    how_to_get: "download dtd-r1.0.1.tar.gz and split images/<class>/ into train/ and test/",
};

virb_plugin_kit::register_task!(crate::folder::FolderTask(&SPEC));
