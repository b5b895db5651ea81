//! Folder-per-class data sets: `<data>/<dir>/<split>/<class>/*.<ext>`, the layout of ViRB's
//! ImageNet, SUN397, EuroSAT, DTD and Pets loaders. Class indices are the sorted class folders of
//! each split; the host refuses a job whose two splits have different classes (ViRB silently
//! misaligned them).
use std::path::{Path, PathBuf};
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

/// What distinguishes one folder-per-class task from another.
pub struct FolderSpec {
    /// Task type name.
    pub name: &'static str,
    /// Folder below the data root.
    pub dir: &'static str,
    /// Sub-folder of the training split.
    pub train: &'static str,
    /// Sub-folder of the test split.
    pub test: &'static str,
    /// Image file extensions, matched exactly (ImageNet's are upper-case `.JPEG`).
    pub extensions: &'static [&'static str],
    /// Class folder names the fixture generator uses (real names of the data set).
    pub fixture_classes: &'static [&'static str],
    /// Where the user gets the data and how to arrange it.
    pub how_to_get: &'static str,
}

impl FolderSpec {
    fn layout(&self) -> String {
        format!(
            "{}/{{{},{}}}/<class>/*.{}",
            self.dir,
            self.train,
            self.test,
            self.extensions.join("|")
        )
    }

    fn split_dir(&self, root: &Path, split: Split) -> PathBuf {
        root.join(self.dir).join(match split {
            Split::Train => self.train,
            Split::Test => self.test,
            // Unreachable in practice: a split this plugin does not know arrives as an error from
            // `DatasetRequest::split()`. Treated like the test split.
            _ => self.test,
        })
    }
}

/// A folder-per-class classification task.
pub struct FolderTask(pub &'static FolderSpec);

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PluginError::data(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

impl Task for FolderTask {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| {
            Ok(classification_info(
                self.0.name,
                "classification",
                self.0.dir,
                &self.0.layout(),
                1,
            ))
        })
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let spec = self.0;
            let root = Path::new(request.data_root.as_str());
            let dir = spec.split_dir(root, split);
            if !dir.is_dir() {
                return Err(PluginError::data(format!(
                    "{}: {} split folder {} not found",
                    spec.name,
                    split.as_str(),
                    dir.display()
                ))
                .with_help(format!(
                    "expected {} under {}; {}; or run `virb-host fixtures {} {}` for a small synthetic one",
                    spec.layout(),
                    root.display(),
                    spec.how_to_get,
                    spec.name,
                    root.display()
                )));
            }
            let mut classes = Vec::new();
            let mut items = Vec::new();
            let mut empty = Vec::new();
            for class_dir in sorted_entries(&dir)?.into_iter().filter(|p| p.is_dir()) {
                let label = classes.len() as i64;
                let name = class_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let before = items.len();
                for file in sorted_entries(&class_dir)? {
                    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
                    if file.is_file() && spec.extensions.contains(&ext) {
                        items.push((file, label));
                    }
                }
                // An empty class folder would silently become a class no sample has (and shift
                // nothing, but make the head one output wider than the data).
                if items.len() == before {
                    empty.push(class_dir.display().to_string());
                }
                classes.push(name);
            }
            if !empty.is_empty() && !items.is_empty() {
                return Err(PluginError::data(format!(
                    "{}: {} class folder(s) with no *.{} images: {}",
                    spec.name,
                    empty.len(),
                    spec.extensions.join("|"),
                    empty.join(", ")
                ))
                .with_help(
                    "remove the empty class folders (from both splits) or put their images back",
                ));
            }
            if items.is_empty() {
                return Err(PluginError::data(format!(
                    "{}: no images in {} (looked for {}/<class>/*.{})",
                    spec.name,
                    dir.display(),
                    dir.display(),
                    spec.extensions.join("|")
                ))
                .with_help(format!("expected layout: {}", spec.layout())));
            }
            ImageList::single(
                items,
                classes,
                request.image_size,
                dir.display().to_string(),
            )
            .boxed(spec.name)
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| Ok(ClassifierHead::new(&request)?.boxed()))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let spec = self.0;
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(spec.name, spec.fixture_classes.len() as u32)?;
            let mut rng = draw::Rng::new(request.seed);
            let size = request.image_size.max(8);
            let ext = spec.extensions[0];
            let mut counts = [0u32; 2];
            for (count, (split, per_class)) in request.per_split().into_iter().enumerate() {
                let dir = spec.split_dir(root, split);
                for (class, name) in spec
                    .fixture_classes
                    .iter()
                    .take(classes as usize)
                    .enumerate()
                {
                    for i in 0..per_class {
                        let w = size + rng.below(size as u64 / 2 + 1) as u32;
                        let h = size * 3 / 4 + rng.below(size as u64 / 2 + 1) as u32;
                        let pixels = draw::class_image(class as u32, classes, w, h, &mut rng);
                        let file = dir.join(name).join(format!("{name}_{i:04}.{ext}"));
                        draw::write_jpeg(&file, w, h, &pixels)?;
                        counts[count] += 1;
                    }
                }
            }
            Ok(RString::from(format!(
                "{}: {classes} classes, {} train + {} test images in {}",
                spec.name,
                counts[0],
                counts[1],
                root.join(spec.dir).display()
            )))
        })
    }
}
