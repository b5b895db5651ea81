//! The data set: `<data_root>/template-shapes/{train,test}/<class>/*.ppm`, one folder per class,
//! class indices in the sorted order of the folder names.
use crate::ppm;
use std::path::{Path, PathBuf};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RVec},
    guard, Dataset, DatasetMeta, PluginError, Sample, SampleContext, Split, Tensor,
};

/// ImageNet's channel means and standard deviations, as torchvision normalises.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One split: the image files and their class indices.
pub struct FolderDataset {
    files: Vec<(PathBuf, i64)>,
    classes: Vec<String>,
    image_size: i64,
    source: String,
}

/// The class folders of a split, sorted; an error names the folder and the expected layout.
pub fn class_folders(split_dir: &Path) -> Result<Vec<String>, PluginError> {
    let entries = std::fs::read_dir(split_dir).map_err(|e| {
        PluginError::data(format!(
            "data folder {} cannot be read: {e}",
            split_dir.display()
        ))
        .with_help(format!(
            "expected {}; `virb-host fixtures {}` writes a small one",
            crate::LAYOUT,
            crate::TASK
        ))
    })?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| PluginError::data(format!("cannot list {}: {e}", split_dir.display())))?;
        if entry.path().is_dir() {
            classes.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.len() < 2 {
        return Err(PluginError::data(format!(
            "{} holds {} class folder(s); a classification task needs at least 2",
            split_dir.display(),
            classes.len()
        ))
        .with_help(format!("expected {}", crate::LAYOUT)));
    }
    Ok(classes)
}

impl FolderDataset {
    /// Opens `split` below `task_dir`; the other split must have the same class folders.
    pub fn open(task_dir: &Path, split: Split, image_size: u32) -> Result<Self, PluginError> {
        let dir = task_dir.join(split.as_str());
        let classes = class_folders(&dir)?;
        let other_dir = task_dir.join(split.other().as_str());
        let other = class_folders(&other_dir)?;
        if other != classes {
            return Err(PluginError::data(format!(
                "{} has classes {classes:?} but {} has {other:?}",
                dir.display(),
                other_dir.display()
            ))
            .with_help("both splits need one folder per class, with the same names"));
        }
        let mut files = Vec::new();
        for (index, class) in classes.iter().enumerate() {
            let class_dir = dir.join(class);
            let mut found: Vec<PathBuf> = std::fs::read_dir(&class_dir)
                .map_err(|e| {
                    PluginError::data(format!("cannot list {}: {e}", class_dir.display()))
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ppm"))
                .collect();
            if found.is_empty() {
                return Err(PluginError::data(format!(
                    "class folder {} holds no .ppm image",
                    class_dir.display()
                )));
            }
            found.sort();
            files.extend(found.into_iter().map(|p| (p, index as i64)));
        }
        Ok(FolderDataset {
            files,
            classes,
            image_size: i64::from(image_size),
            source: dir.display().to_string(),
        })
    }

    /// The decoded, resized and normalised image `[3, S, S]` of sample `index`, flipped
    /// horizontally when `flip`.
    pub fn input(&self, path: &Path, flip: bool) -> Result<tch::Tensor, PluginError> {
        let image = ppm::read(path)?;
        let (h, w) = (image.height as i64, image.width as i64);
        let pixels = tch::Tensor::f_from_slice(&image.data)?
            .f_reshape([h, w, 3])?
            .f_permute([2, 0, 1])?
            .f_to_kind(tch::Kind::Float)?
            .f_div_scalar(255.0)?
            .f_unsqueeze(0)?;
        let size = [self.image_size, self.image_size];
        let mut x = pixels
            .f_upsample_bilinear2d(size, false, None::<f64>, None::<f64>)?
            .f_squeeze_dim(0)?;
        if flip {
            x = x.f_flip([2])?;
        }
        let mean = tch::Tensor::f_from_slice(&MEAN)?.f_view([3, 1, 1])?;
        let std = tch::Tensor::f_from_slice(&STD)?.f_view([3, 1, 1])?;
        Ok(x.f_sub(&mean)?.f_div(&std)?)
    }
}

impl Dataset for FolderDataset {
    fn meta(&self) -> RResult<DatasetMeta, PluginError> {
        guard(|| {
            Ok(DatasetMeta {
                len: self.files.len() as u64,
                num_outputs: self.classes.len() as u32,
                class_names: self
                    .classes
                    .iter()
                    .map(|c| c.as_str().into())
                    .collect::<RVec<_>>(),
                source: self.source.as_str().into(),
            })
        })
    }

    fn get(&self, index: u64, context: SampleContext) -> RResult<Sample, PluginError> {
        guard(|| {
            let (path, class) = usize::try_from(index)
                .ok()
                .and_then(|i| self.files.get(i))
                .ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "sample {index} requested from a split of {} samples",
                        self.files.len()
                    ))
                })?;
            // Training augmentation (a horizontal flip half the time), drawn from the run's seed,
            // the epoch and the index, so that any number of decoding threads gives the same run.
            let flip = context.augment && context.rng_seed(index) & 1 == 1;
            Ok(Sample {
                input: Tensor::new(self.input(path, flip)?),
                target: Tensor::new(tch::Tensor::from(*class)),
            })
        })
    }
}
