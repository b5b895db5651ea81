//! `NYUDepth`: per-pixel depth of NYU Depth v2 indoor scenes, in metres.
//!
//! Layout (the project's `nyu.zip`): `nyu/{train,test}/images/<stem>.png` with
//! `nyu/{train,test}/depths/<stem>.tiff` (or `.tif`), paired by stem; an unpaired file is an
//! error naming it. Images are converted to RGB (ViRB did not, and broke on grey or RGBA files);
//! training reads add ColorJitter + RandomGrayscale to the image only.
//!
//! Depth TIFFs: float32/float64 grey, read as metres (what PIL writes for an `F` image); an
//! integer grey TIFF (8/16/32-bit) is multiplied by the task option `integer_depth_scale`
//! (metres per unit, default 0.001: millimetres, as the raw NYU/Kinect depth). 0 is missing
//! depth. The map is resized to the input size valid-weighted ([`data::resize_valid`]): missing
//! depth never blends into valid depth, and a pixel whose filter is mostly missing stays missing.
//! NaN/inf values are masked (they become NaN pixels of the target, excluded from the loss and
//! the metrics) and counted in the metric's details (`non_finite_target_pixels`). Loss: L1 over
//! depth > 0 and finite; metrics over depth in (0.001, 10) m (the usual NYU cap).
use crate::{
    data::{self, DenseDataset, GreyMap, Pair},
    fixture,
    head::{task_info, PixelHead, Scoring, Validity},
};
use std::path::{Path, PathBuf};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    guard, DatasetBox, DatasetRequest, FixtureRequest, HeadBox, HeadRequest, OptionSpec,
    PluginError, Split, Task, TaskInfo,
};

/// The task.
pub struct NyuDepth;

const NAME: &str = "NYUDepth";
const DIR: &str = "nyu";
const LAYOUT: &str =
    "nyu/{train,test}/images/<stem>.png + nyu/{train,test}/depths/<stem>.tiff (float metres)";
const RULE: &str = "NYU pairs images/<stem>.png with depths/<stem>.tiff";
const SCORING: Scoring = Scoring::Metres {
    min: 1e-3,
    max: 10.0,
};
const SCALE_KEY: &str = "integer_depth_scale";

/// Metres per unit of an integer depth TIFF, from the task options.
fn integer_scale(options_json: &str) -> Result<f64, PluginError> {
    let options: serde_json::Value = serde_json::from_str(options_json).map_err(|e| {
        PluginError::invalid_input(format!(
            "{NAME}: task options are not JSON ({e}): {options_json}"
        ))
    })?;
    match options.get(SCALE_KEY) {
        None => Ok(0.001),
        Some(v) => match v.as_f64() {
            Some(s) if s.is_finite() && s > 0.0 => Ok(s),
            _ => Err(PluginError::invalid_input(format!(
                "{NAME}: task option {SCALE_KEY} must be a positive number of metres per unit, not {v}"
            ))
            .with_help("e.g. 0.001 for depth in millimetres")),
        },
    }
}

fn listed(dir: &Path, extensions: &[&str]) -> Result<Vec<(String, PathBuf)>, PluginError> {
    Ok(data::files(dir)?
        .into_iter()
        .filter_map(|p| {
            let ext = p.extension()?.to_string_lossy().to_ascii_lowercase();
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            extensions.contains(&ext.as_str()).then_some((stem, p))
        })
        .collect())
}

/// The pairs of a split, sorted by stem.
pub fn pairs(root: &Path, split: Split) -> Result<Vec<Pair>, PluginError> {
    let base = root.join(DIR).join(split.as_str());
    let (images, depths) = (base.join("images"), base.join("depths"));
    for dir in [&images, &depths] {
        if !dir.is_dir() {
            return Err(data::missing(NAME, dir, LAYOUT, root));
        }
    }
    data::pair_by_key(
        NAME,
        listed(&images, &["png"])?,
        listed(&depths, &["tiff", "tif"])?,
        "depth map",
        RULE,
    )
}

/// Decodes a grey TIFF to metres (floats as they are, integers times `integer_scale`).
pub fn load_tiff(path: &Path, integer_scale: f64) -> Result<GreyMap, PluginError> {
    let bad = |e: &dyn std::fmt::Display| {
        PluginError::data(format!(
            "{NAME}: cannot decode depth map {}: {e}",
            path.display()
        ))
        .with_help("the file is corrupt or not a TIFF; replace or remove its pair")
    };
    let file = std::fs::File::open(path).map_err(|e| {
        PluginError::data(format!(
            "{NAME}: cannot open depth map {}: {e}",
            path.display()
        ))
    })?;
    let mut decoder =
        tiff::decoder::Decoder::new(std::io::BufReader::new(file)).map_err(|e| bad(&e))?;
    let (width, height) = decoder.dimensions().map_err(|e| bad(&e))?;
    match decoder.colortype().map_err(|e| bad(&e))? {
        tiff::ColorType::Gray(_) => {}
        other => {
            return Err(PluginError::data(format!(
                "{NAME}: depth map {} is a {other:?} TIFF; expected one grey channel (float metres or integer units)",
                path.display()
            ))
            .with_help("write the depth as a single-channel float32 TIFF"))
        }
    }
    use tiff::decoder::DecodingResult as D;
    let s = integer_scale;
    let values: Vec<f32> = match decoder.read_image().map_err(|e| bad(&e))? {
        D::F32(v) => v,
        D::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        D::F16(v) => v.into_iter().map(|x| x.to_f32()).collect(),
        D::U8(v) => v.into_iter().map(|x| (f64::from(x) * s) as f32).collect(),
        D::U16(v) => v.into_iter().map(|x| (f64::from(x) * s) as f32).collect(),
        D::U32(v) => v.into_iter().map(|x| (f64::from(x) * s) as f32).collect(),
        D::I8(v) => v.into_iter().map(|x| (f64::from(x) * s) as f32).collect(),
        D::I16(v) => v.into_iter().map(|x| (f64::from(x) * s) as f32).collect(),
        D::I32(v) => v.into_iter().map(|x| (f64::from(x) * s) as f32).collect(),
        _ => {
            return Err(bad(
                &"unsupported sample type (expected float32/64 or 8/16/32-bit integers)",
            ))
        }
    };
    if values.len() != (width as usize) * (height as usize) {
        return Err(bad(&format!(
            "{} values for {width}x{height} pixels",
            values.len()
        )));
    }
    Ok(GreyMap {
        width,
        height,
        values,
    })
}

/// Reads one sample with integer TIFFs scaled by `scale`.
pub fn load(
    pair: &Pair,
    ctx: &data::LoadContext,
    scale: f64,
) -> Result<(tch::Tensor, tch::Tensor), PluginError> {
    let input = data::load_image(&pair.image, ctx.image_size, ctx.augment, true)?;
    let path = pair.target.as_deref().ok_or_else(|| {
        PluginError::invalid_input(format!("{NAME}: {} has no depth map", pair.image.display()))
    })?;
    let map = load_tiff(path, scale)?;
    data::check_same_size(
        NAME,
        &pair.image,
        (input.width, input.height),
        path,
        (map.width, map.height),
    )?;
    let (target, _non_finite) = data::resize_valid(&map, ctx.image_size, |d| d > 0.0)?;
    Ok((input.tensor, target.f_unsqueeze(0)?))
}

impl Task for NyuDepth {
    fn info(&self) -> RResult<TaskInfo, PluginError> {
        guard(|| {
            let option = OptionSpec {
                name: SCALE_KEY.into(),
                help: "metres per unit of an integer depth TIFF (default 0.001, millimetres); float TIFFs are read as metres".into(),
            };
            Ok(task_info(NAME, DIR, LAYOUT, SCORING, vec![option]))
        })
    }

    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let split = request.split()?;
            let scale = integer_scale(request.options_json.as_str())?;
            DenseDataset {
                task: NAME,
                items: pairs(root, split)?,
                image_size: request.image_size,
                outputs: 1,
                source: root.join(DIR).join(split.as_str()).display().to_string(),
                load: Box::new(move |pair, ctx| load(pair, ctx, scale)),
            }
            .boxed()
        })
    }

    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError> {
        guard(|| PixelHead::build(&request, Validity::FinitePositive, SCORING))
    }

    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError> {
        guard(|| {
            let root = Path::new(request.data_root.as_str());
            let (_, per_split) = fixture::counts(&request, NAME)?;
            let size = request.image_size.max(16);
            let mut total = 0;
            for (split, n) in per_split {
                let base = root.join(DIR).join(split.as_str());
                for i in 0..n {
                    let mut rng = fixture::sample_rng(request.seed, split, i);
                    let scene = fixture::ramp_scene(size, &mut rng);
                    let stem = format!("{i:05}");
                    virb_plugin_kit::draw::write_png(
                        &base.join("images").join(format!("{stem}.png")),
                        size,
                        size,
                        &scene.rgb,
                    )?;
                    let mut depth: Vec<f32> = scene.ramp.iter().map(|r| 0.5 + 4.5 * r).collect();
                    // A block of missing depth (0), as Kinect leaves on windows and dark surfaces.
                    let side = (size / 5).max(1);
                    let (x0, y0) = (
                        rng.below((size - side) as u64) as u32,
                        rng.below((size - side) as u64) as u32,
                    );
                    for y in y0..y0 + side {
                        for x in x0..x0 + side {
                            depth[(y * size + x) as usize] = 0.0;
                        }
                    }
                    if i == 0 {
                        // One NaN per split, to exercise the masking (train) and its count (test).
                        depth[(size / 2 * size + size / 2 + 1) as usize] = f32::NAN;
                    }
                    fixture::write_float_tiff(
                        &base.join("depths").join(format!("{stem}.tiff")),
                        size,
                        size,
                        &depth,
                    )?;
                    total += 1;
                }
            }
            Ok(RString::from(format!(
                "{NAME}: {total} image/depth pairs ({size} px, float32 TIFF metres 0.5-5 following the image's brightness ramp, a missing block each, one NaN pixel in {{train,test}}/depths/00000.tiff) in {}",
                root.join(DIR).display()
            )))
        })
    }
}

virb_plugin_kit::register_task!(NyuDepth);

#[cfg(test)]
#[path = "nyu_depth_tests.rs"]
mod tests;
