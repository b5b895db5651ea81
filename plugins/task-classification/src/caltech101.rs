//! `CalTech-101`: 101 object categories plus background, split by ViRB's JSON lists.
//!
//! Layout: `<data>/caltech-101/<category>/*.jpg` (the extracted `101_ObjectCategories`, renamed)
//! plus `<data>/caltech-101/caltech101_train.json` and `caltech101_test.json`, each a JSON array
//! of `"<category>/<file>.jpg"` paths. The class is the category folder (ViRB took it from the
//! file name by mistake); class indices are the sorted categories of both lists, so they agree
//! between the splits. Nothing is downloaded.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, PluginError, Split,
    Task, TaskInfo,
};
use virb_plugin_kit::{
    dataset::{classification_info, ImageList},
    draw,
    heads::ClassifierHead,
};

/// The task.
pub struct CalTech101;

const NAME: &str = "CalTech-101";
const DIR: &str = "caltech-101";
const LAYOUT: &str = "caltech-101/<category>/*.jpg + caltech-101/caltech101_{train,test}.json (JSON arrays of \"<category>/<file>.jpg\")";

/// Real CalTech-101 category names, used by the fixture generator.
const CATEGORIES: [&str; 12] = [
    "accordion",
    "airplanes",
    "anchor",
    "ant",
    "barrel",
    "bass",
    "beaver",
    "binocular",
    "bonsai",
    "brain",
    "brontosaurus",
    "buddha",
];

fn list_path(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("caltech101_{}.json", split.as_str()))
}

/// Reads a split list: relative image paths, each starting with its category folder.
fn read_list(dir: &Path, split: Split) -> Result<Vec<(String, String)>, PluginError> {
    let path = list_path(dir, split);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let other = match split {
            Split::Train => "caltech101_test.json",
            Split::Test => "caltech101_train.json",
            // Unreachable in practice: a split this plugin does not know arrives as an error from
            // `DatasetRequest::split()`. Treated like the test split.
            _ => "caltech101_train.json",
        };
        PluginError::data(format!("{NAME}: cannot read split file {}: {e}", path.display()))
            .with_help(format!(
                "write a JSON array of \"<category>/<file>.jpg\" paths relative to {} (ViRB's lists are \
                 https://prior-datasets.s3.us-east-2.amazonaws.com/ViRB/caltech101_{}.json); {other} is needed too",
                dir.display(),
                split.as_str()
            ))
    })?;
    let entries: Vec<String> = serde_json::from_str(&text).map_err(|e| {
        PluginError::data(format!(
            "{NAME}: split file {} is not a JSON array of strings: {e}",
            path.display()
        ))
    })?;
    entries
        .into_iter()
        .map(|entry| {
            let rel = entry
                .trim_start_matches("data/")
                .trim_start_matches("caltech-101/")
                .to_string();
            match rel.split_once('/') {
                Some((category, file)) if !category.is_empty() && !file.is_empty() => {
                    Ok((category.to_string(), rel.clone()))
                }
                _ => Err(PluginError::data(format!(
                    "{NAME}: entry \"{entry}\" in {} is not \"<category>/<file>\"",
                    path.display()
                ))),
            }
        })
        .collect()
}

impl Task for CalTech101 {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| Ok(classification_info(NAME, "classification", DIR, LAYOUT, 1)))
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let dir = Path::new(request.data_root.as_str()).join(DIR);
            if !dir.is_dir() {
                return Err(PluginError::data(format!(
                    "{NAME}: data folder {} not found",
                    dir.display()
                ))
                .with_help(format!(
                    "expected {LAYOUT} under {}; extract 101_ObjectCategories there as caltech-101, or run \
                     `virb-host fixtures {NAME} {}` for a small synthetic one",
                    request.data_root, request.data_root
                )));
            }
            let this = read_list(&dir, split)?;
            let other_split = split.other();
            let other = read_list(&dir, other_split)?;
            let classes: Vec<String> = this
                .iter()
                .chain(other.iter())
                .map(|(c, _)| c.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let source = list_path(&dir, split).display().to_string();
            if this.is_empty() {
                return Err(PluginError::data(format!(
                    "{NAME}: split file {source} lists no images"
                )));
            }
            let mut items = Vec::with_capacity(this.len());
            let mut missing = Vec::new();
            for (category, rel) in this {
                let path = dir.join(&rel);
                if !path.is_file() {
                    missing.push(path.display().to_string());
                    continue;
                }
                let label = classes.binary_search(&category).unwrap_or(0) as i64;
                items.push((path, label));
            }
            if let Some(first) = missing.first() {
                return Err(PluginError::data(format!(
                    "{NAME}: {} image(s) listed in {source} do not exist, first {first}",
                    missing.len()
                ))
                .with_help(format!("expected layout: {LAYOUT}")));
            }
            ImageList::single(items, classes, request.image_size, source).boxed(NAME)
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| Ok(ClassifierHead::new(&request)?.boxed()))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let classes = request.classes_up_to(NAME, CATEGORIES.len() as u32)?;
            let dir = Path::new(request.data_root.as_str()).join(DIR);
            let mut rng = draw::Rng::new(request.seed);
            let mut lists: [Vec<String>; 2] = [Vec::new(), Vec::new()];
            let size = request.image_size.max(8);
            for (class, category) in CATEGORIES.iter().take(classes as usize).enumerate() {
                let total = request.train_per_class + request.test_per_class;
                for i in 0..total {
                    // CalTech images vary in size and aspect; so do these.
                    let w = size + rng.below(size as u64 / 2 + 1) as u32;
                    let h = size * 3 / 4 + rng.below(size as u64 / 2 + 1) as u32;
                    let pixels = draw::class_image(class as u32, classes, w, h, &mut rng);
                    let rel = format!("{category}/image_{:04}.jpg", i + 1);
                    draw::write_jpeg(&dir.join(&rel), w, h, &pixels)?;
                    lists[usize::from(i >= request.train_per_class)].push(rel);
                }
            }
            for (split, list) in [Split::Train, Split::Test].into_iter().zip(&lists) {
                let path = list_path(&dir, split);
                let text = serde_json::to_string_pretty(list)
                    .map_err(|e| PluginError::data(format!("cannot encode split list: {e}")))?;
                std::fs::write(&path, text).map_err(|e| {
                    PluginError::data(format!("cannot write {}: {e}", path.display()))
                })?;
            }
            Ok(RString::from(format!(
                "{NAME}: {classes} categories, {} train + {} test images in {}",
                lists[0].len(),
                lists[1].len(),
                dir.display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(CalTech101);
