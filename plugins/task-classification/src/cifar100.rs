//! `CIFAR-100`: 32x32 images in 100 fine classes, from the Python pickle files of
//! `cifar-100-python.tar.gz`.
//!
//! Layout: `<data>/cifar-100/train` and `<data>/cifar-100/test` (the extracted
//! `cifar-100-python` folder, renamed), optionally `<data>/cifar-100/meta` for class names. Each
//! file is a pickled dict read by key name (`data`: uint8 `[N, 3072]`, channel-planar;
//! `fine_labels`), not by key position as ViRB did. Images are upscaled to `image_size` with the
//! same bilinear filter as every task, then normalised.
use std::path::{Path, PathBuf};
use virb_checkpoint::pickle::{self, Value};
use virb_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RString, RVec},
    },
    guard, Dataset, DatasetBox, DatasetMeta, DatasetRequest, FixtureRequest, HeadBox, HeadRequest,
    PluginError, Sample, SampleContext, Split, Task, TaskInfo, Tensor,
};
use virb_plugin_kit::{
    draw,
    heads::ClassifierHead,
    image::{resize_square, to_normalised_tensor, Rgb},
};

/// The task.
pub struct Cifar100;

const NAME: &str = "CIFAR-100";
const DIR: &str = "cifar-100";
const LAYOUT: &str =
    "cifar-100/{train,test} (the cifar-100-python pickle files) + optional cifar-100/meta";
const PIXELS: usize = 3 * 32 * 32;

fn split_file(root: &Path, split: Split) -> PathBuf {
    root.join(DIR).join(split.as_str())
}

fn load_pickle(path: &Path) -> Result<Value, PluginError> {
    let bytes = std::fs::read(path).map_err(|e| {
        PluginError::data(format!("{NAME}: cannot read {}: {e}", path.display())).with_help(
            format!(
                "expected {LAYOUT}; extract cifar-100-python.tar.gz and rename the folder to {DIR}"
            ),
        )
    })?;
    let mut pos = 0;
    pickle::read(&bytes, &mut pos).map_err(|e| {
        PluginError::data(format!(
            "{NAME}: {} is not a readable pickle: {e}",
            path.display()
        ))
    })
}

/// Pixels `[N * 3072]` and fine labels of one split file.
fn read_split(path: &Path) -> Result<(Vec<u8>, Vec<i64>), PluginError> {
    let root = load_pickle(path)?;
    let bad = |what: &str| PluginError::data(format!("{NAME}: {}: {what}", path.display()));
    let (shape, dtype, data) = root
        .get("data")
        .and_then(Value::as_ndarray)
        .ok_or_else(|| bad("no `data` array (expected a uint8 numpy array [N, 3072])"))?;
    if dtype != "u1"
        || shape.len() != 2
        || shape[1] != PIXELS as i64
        || data.len() != shape[0] as usize * PIXELS
    {
        return Err(bad(&format!(
            "`data` is a {dtype} array of shape {shape:?}; expected uint8 [N, 3072]"
        )));
    }
    let Some(Value::List(labels)) = root.get("fine_labels") else {
        return Err(bad("no `fine_labels` list"));
    };
    let labels = labels
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Int(l) if *l >= 0 => Ok(*l),
            other => Err(bad(&format!("label {i} is {other:?}, not a class index"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if labels.len() != shape[0] as usize {
        return Err(bad(&format!(
            "{} labels for {} images",
            labels.len(),
            shape[0]
        )));
    }
    if labels.is_empty() {
        return Err(bad("the split is empty"));
    }
    Ok((data, labels))
}

/// Class names from `meta` (`fine_label_names`), else the indices of both splits' labels.
fn class_names(root: &Path, labels: &[i64], other: &Path) -> Result<Vec<String>, PluginError> {
    let meta = root.join(DIR).join("meta");
    if meta.is_file() {
        let m = load_pickle(&meta)?;
        if let Some(Value::List(names)) = m.get("fine_label_names") {
            return names
                .iter()
                .map(|n| {
                    n.as_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    PluginError::data(format!("{NAME}: {}: bad fine_label_names", meta.display()))
                });
        }
    }
    let (_, other_labels) = read_split(other)?;
    let max = labels
        .iter()
        .chain(&other_labels)
        .copied()
        .max()
        .unwrap_or(0);
    Ok((0..=max).map(|i| i.to_string()).collect())
}

struct CifarSplit {
    pixels: Vec<u8>,
    labels: Vec<i64>,
    classes: Vec<String>,
    image_size: u32,
    source: String,
}

impl Dataset for CifarSplit {
    fn meta(&self) -> RResult<DatasetMeta, PluginError> {
        guard(|| {
            Ok(DatasetMeta {
                len: self.labels.len() as u64,
                num_outputs: self.classes.len() as u32,
                class_names: self
                    .classes
                    .iter()
                    .map(|c| RString::from(c.as_str()))
                    .collect::<RVec<_>>(),
                source: self.source.as_str().into(),
            })
        })
    }

    fn get(&self, index: u64, _context: SampleContext) -> RResult<Sample, PluginError> {
        guard(|| {
            let i = index as usize;
            let planar = self
                .pixels
                .get(i * PIXELS..(i + 1) * PIXELS)
                .ok_or_else(|| {
                    PluginError::invalid_input(format!("sample {index} out of range"))
                })?;
            let mut rgb = vec![0u8; PIXELS];
            for p in 0..1024 {
                for c in 0..3 {
                    rgb[p * 3 + c] = planar[c * 1024 + p];
                }
            }
            let img = resize_square(
                Rgb {
                    width: 32,
                    height: 32,
                    pixels: rgb,
                },
                self.image_size,
            )?;
            Ok(Sample {
                input: Tensor::new(to_normalised_tensor(&img)),
                target: Tensor::new(tch::Tensor::from(self.labels[i])),
            })
        })
    }
}

impl Task for Cifar100 {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| {
            Ok(virb_plugin_kit::dataset::classification_info(
                NAME,
                "classification",
                DIR,
                LAYOUT,
                1,
            ))
        })
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let split = request.split()?;
            let root = Path::new(request.data_root.as_str());
            let path = split_file(root, split);
            let (pixels, labels) = read_split(&path)?;
            let other = split_file(root, split.other());
            let classes = class_names(root, &labels, &other)?;
            if let Some(bad) = labels.iter().find(|l| **l as usize >= classes.len()) {
                return Err(PluginError::data(format!(
                    "{NAME}: {} has label {bad} but only {} classes are named",
                    path.display(),
                    classes.len()
                )));
            }
            Ok(DatasetBox::from_value(
                CifarSplit {
                    pixels,
                    labels,
                    classes,
                    image_size: request.image_size,
                    source: path.display().to_string(),
                },
                TD_Opaque,
            ))
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| Ok(ClassifierHead::new(&request)?.boxed()))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let classes = request.classes_up_to(NAME, 100)?;
            let mut rng = draw::Rng::new(request.seed);
            let dir = root.join(DIR);
            std::fs::create_dir_all(&dir)
                .map_err(|e| PluginError::data(format!("cannot create {}: {e}", dir.display())))?;
            let write = |path: &Path, v: &Value| {
                std::fs::write(path, pickle::dumps(v))
                    .map_err(|e| PluginError::data(format!("cannot write {}: {e}", path.display())))
            };
            let mut total = [0usize; 2];
            for (k, (split, per_class)) in request.per_split().into_iter().enumerate() {
                let mut data = Vec::new();
                let mut labels = Vec::new();
                for i in 0..per_class * classes {
                    let class = i % classes;
                    let rgb = draw::class_image(class, classes, 32, 32, &mut rng);
                    for c in 0..3 {
                        data.extend(rgb.chunks_exact(3).map(|px| px[c]));
                    }
                    labels.push(Value::Int(class as i64));
                }
                total[k] = labels.len();
                let n = labels.len() as i64;
                let dict = Value::Dict(vec![
                    (
                        Value::Str("filenames".into()),
                        Value::List((0..n).map(|i| Value::Str(format!("img_{i}.png"))).collect()),
                    ),
                    (
                        Value::Str("batch_label".into()),
                        Value::Str(format!("{} batch", split.as_str())),
                    ),
                    (
                        Value::Str("fine_labels".into()),
                        Value::List(labels.clone()),
                    ),
                    (Value::Str("coarse_labels".into()), Value::List(labels)),
                    (
                        Value::Str("data".into()),
                        pickle::ndarray_u8(&[n, PIXELS as i64], data),
                    ),
                ]);
                write(&split_file(root, split), &dict)?;
            }
            let names = (0..classes)
                .map(|c| Value::Str(format!("class_{c:02}")))
                .collect();
            write(
                &dir.join("meta"),
                &Value::Dict(vec![(
                    Value::Str("fine_label_names".into()),
                    Value::List(names),
                )]),
            )?;
            Ok(RString::from(format!(
                "{NAME}: {classes} classes, {} train + {} test images in {}",
                total[0],
                total[1],
                dir.display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(Cifar100);
