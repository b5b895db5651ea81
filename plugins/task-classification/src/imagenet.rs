//! `Imagenet`: ILSVRC-2012, 1000 classes.
//!
//! Layout: `<data>/imagenet/train/<wnid>/*.JPEG` and `<data>/imagenet/val/<wnid>/*.JPEG` (the
//! validation images re-organised into class folders; extensions upper-case as distributed). The
//! class index is the position of the wnid among the sorted folders: torchvision's order.
use crate::folder::FolderSpec;

/// The task's description.
pub const SPEC: FolderSpec = FolderSpec {
    name: "Imagenet",
    dir: "imagenet",
    train: "train",
    test: "val",
    extensions: &["JPEG"],
    fixture_classes: &[
        "n01440764",
        "n01443537",
        "n01484850",
        "n01491361",
        "n01494475",
        "n01496331",
        "n01498041",
        "n01514668",
    ],
    how_to_get:
        "download ILSVRC-2012 from image-net.org and sort the validation images into wnid folders",
};

virb_plugin_kit::register_task!(crate::folder::FolderTask(&SPEC));
