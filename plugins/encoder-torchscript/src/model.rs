//! A TorchScript module run the way virb's tasks need it: eval mode, no gradients, the input
//! renormalised and resized as the options say, the output checked against the contract (a tensor
//! `[N, D]`, or a dict with `embedding` `[N, D]` and pyramid levels `[N, C, h, w]`).
use crate::error::{reason, TorchScriptError};
use crate::options::{Resolved, KNOWN_OUTPUTS};
use std::{
    collections::{BTreeMap, HashMap},
    io::Read,
    path::Path,
    sync::{Mutex, MutexGuard},
};
use tch::{CModule, Device, IValue, Kind, Tensor};

/// Per-sample shapes of a model's outputs, by virb name.
pub type Shapes = Vec<(String, Vec<i64>)>;

/// A loaded TorchScript encoder.
pub struct TorchScriptModel {
    module: CModule,
    path: String,
    device: Device,
    options: Resolved,
    /// `(scale, shift)` `[1, 3, 1, 1]` on the device, from [`Resolved::affine`].
    affine: Option<(Tensor, Tensor)>,
    /// The width (dimension 1) of each output, from the first batch or probe that gave it.
    widths: Mutex<BTreeMap<String, i64>>,
    /// Probe results by input `(height, width)`.
    probed: Mutex<HashMap<(i64, i64), Shapes>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Converts a 4-D tensor to channels-last strides (same shape, NHWC memory order).
fn to_channels_last(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

/// Whether `path` is a `torch.save` checkpoint: the legacy pickle format, or a zip archive with
/// `data.pkl` but no TorchScript `code/` folder.
fn is_checkpoint(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 2];
    if file.read_exact(&mut magic).is_err() {
        return false;
    }
    if magic == [0x80, 0x02] {
        return true;
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(archive) = zip::ZipArchive::new(file) else {
        return false;
    };
    let names: Vec<&str> = archive.file_names().collect();
    names.iter().any(|n| n.ends_with("data.pkl")) && !names.iter().any(|n| n.contains("/code/"))
}

/// A value's kind in words, for errors.
fn describe(v: &IValue) -> String {
    match v {
        IValue::None => "None".into(),
        IValue::Tensor(t) => format!("a tensor of shape {:?}", t.size()),
        IValue::Double(_) | IValue::Int(_) => "a number".into(),
        IValue::Bool(_) => "a bool".into(),
        IValue::Tuple(items) | IValue::GenericList(items) => {
            let kind = if matches!(v, IValue::Tuple(_)) {
                "tuple"
            } else {
                "list"
            };
            let shown: Vec<String> = items.iter().take(4).map(describe).collect();
            let more = if items.len() > 4 { ", ..." } else { "" };
            format!(
                "a {kind} of {} values ({}{more})",
                items.len(),
                shown.join(", ")
            )
        }
        IValue::TensorList(items) => format!("a list of {} tensors", items.len()),
        IValue::IntList(_) | IValue::DoubleList(_) | IValue::BoolList(_) => {
            "a list of numbers".into()
        }
        IValue::String(_) => "a string".into(),
        IValue::StringList(_) => "a list of strings".into(),
        IValue::GenericDict(_) => "a dict".into(),
        IValue::Object(_) => "an object".into(),
        IValue::Device(_) => "a device".into(),
        _ => "a value of a kind virb does not read".into(),
    }
}

impl TorchScriptModel {
    /// Loads `path` onto `device` in eval mode (parameters converted to channels-last if asked).
    pub fn load(path: &Path, device: Device, options: Resolved) -> Result<Self, TorchScriptError> {
        let shown = path.display().to_string();
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            if is_checkpoint(path) {
                TorchScriptError::Checkpoint {
                    path: shown.clone(),
                }
            } else {
                TorchScriptError::NotTorchScript {
                    path: shown.clone(),
                    reason: reason(&e),
                }
            }
        })?;
        module.f_set_eval()?;
        if options.channels_last {
            let params = module.named_parameters()?;
            tch::no_grad(|| -> Result<(), tch::TchError> {
                for (_, mut p) in params {
                    if p.dim() == 4 {
                        let cl = to_channels_last(&p)?;
                        p.f_set_data(&cl)?;
                    }
                }
                Ok(())
            })?;
        }
        let affine = match options.affine {
            None => None,
            Some((scale, shift)) => {
                let column = |v: [f64; 3]| -> Result<Tensor, tch::TchError> {
                    Tensor::f_from_slice(&v[..])?
                        .f_to_kind(Kind::Float)?
                        .f_reshape([1, 3, 1, 1])?
                        .f_to_device(device)
                };
                Some((column(scale)?, column(shift)?))
            }
        };
        Ok(TorchScriptModel {
            module,
            path: shown,
            device,
            options,
            affine,
            widths: Mutex::new(BTreeMap::new()),
            probed: Mutex::new(HashMap::new()),
        })
    }

    /// The device the module lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// ImageNet-normalised images `[N, 3, H, W]` as the model wants them.
    fn prepare(&self, images: &Tensor) -> Result<Tensor, TorchScriptError> {
        let s = images.size();
        if s.len() != 4 || s[1] != 3 {
            return Err(TorchScriptError::Tensor(format!(
                "a TorchScript encoder takes images [N, 3, H, W], got {s:?}"
            )));
        }
        let mut x = images.f_to_device(self.device)?.f_to_kind(Kind::Float)?;
        if let Some((scale, shift)) = &self.affine {
            x = shift.f_addcmul(&x, scale)?;
        }
        if let Some(side) = self.options.input_size {
            if s[2] != side || s[3] != side {
                x = x.f_internal_upsample_bilinear2d_aa([side, side], false, None, None)?;
            }
        }
        if self.options.channels_last {
            x = to_channels_last(&x)?;
        }
        Ok(x)
    }

    /// The module's forward pass, without gradients, and without TorchScript's graph optimizer:
    /// the profiling executor would run the first calls of every new input shape (a task's
    /// last batch, augmented sizes) several times slower while it profiles and re-specialises
    /// the graph, to end up with the same kernels on a CPU. The setting is per thread; libtorch's
    /// default is restored after the call.
    fn run(&self, x: Tensor) -> Result<IValue, TorchScriptError> {
        let shape = x.size();
        tch::jit::f_set_graph_executor_optimize(false)?;
        let out = tch::no_grad(|| self.module.forward_is(&[IValue::Tensor(x)]));
        tch::jit::f_set_graph_executor_optimize(true)?;
        out.map_err(|e| TorchScriptError::Forward {
            path: self.path.clone(),
            shape,
            reason: reason(&e),
            resized: self.options.input_size.is_some(),
        })
    }

    /// The virb name of a model output key, or `None` when a mapping replaces it.
    fn virb_name(&self, key: String) -> Option<String> {
        let map = &self.options.outputs;
        if let Some((virb, _)) = map.iter().find(|(_, k)| *k == key) {
            return Some(virb.clone());
        }
        if map.iter().any(|(virb, _)| *virb == key) {
            return None;
        }
        Some(key)
    }

    /// Checks a forward pass's result for a batch of `batch` and returns the outputs virb knows
    /// (float32, contiguous), recording or checking their widths.
    fn outputs(
        &self,
        value: IValue,
        batch: i64,
    ) -> Result<Vec<(String, Tensor)>, TorchScriptError> {
        let bad = |what: String| TorchScriptError::Output {
            path: self.path.clone(),
            what,
        };
        let raw: Vec<(String, Tensor)> = match value {
            IValue::Tensor(t) => vec![("embedding".to_string(), t)],
            IValue::GenericDict(pairs) => {
                let mut raw = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let key = match k {
                        IValue::String(s) => s,
                        other => {
                            return Err(bad(format!("a dict with {} as a key", describe(&other))))
                        }
                    };
                    match v {
                        IValue::Tensor(t) => raw.push((key, t)),
                        other => {
                            return Err(bad(format!(
                                "a dict whose `{key}` is {}",
                                describe(&other)
                            )))
                        }
                    }
                }
                raw
            }
            other => return Err(bad(describe(&other))),
        };
        let keys: Vec<String> = raw.iter().map(|(k, _)| format!("`{k}`")).collect();
        let named: Vec<(String, Tensor)> = raw
            .into_iter()
            .filter_map(|(k, t)| self.virb_name(k).map(|n| (n, t)))
            .filter(|(n, _)| KNOWN_OUTPUTS.contains(&n.as_str()))
            .collect();
        if !named.iter().any(|(n, _)| n == "embedding") {
            return Err(bad(format!(
                "a dict without `embedding` (keys: {})",
                keys.join(", ")
            )));
        }
        let mut widths = locked(&self.widths);
        let mut out = Vec::with_capacity(named.len());
        for (name, t) in named {
            let shape = t.size();
            let (dims, expected) = if name == "embedding" {
                (2, "[N, D]: pool or flatten it in the exported module")
            } else {
                (4, "[N, C, h, w]")
            };
            if shape.len() != dims || shape[0] != batch {
                return Err(TorchScriptError::Shape {
                    path: self.path.clone(),
                    name,
                    shape,
                    batch,
                    expected,
                });
            }
            let first = *widths.entry(name.clone()).or_insert(shape[1]);
            if first != shape[1] {
                return Err(TorchScriptError::Width {
                    path: self.path.clone(),
                    name,
                    first,
                    now: shape[1],
                    shape,
                });
            }
            out.push((name, t.f_to_kind(Kind::Float)?.f_contiguous()?));
        }
        Ok(out)
    }

    /// Runs the model on `images` `[N, 3, H, W]` (ImageNet-normalised) and returns the `wanted`
    /// outputs in order.
    pub fn forward(
        &self,
        images: &Tensor,
        wanted: &[&str],
    ) -> Result<Vec<(String, Tensor)>, TorchScriptError> {
        let batch = images.size().first().copied().unwrap_or(0);
        let x = self.prepare(images)?;
        let mut outs = self.outputs(self.run(x)?, batch)?;
        let available = outs
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        wanted
            .iter()
            .map(|w| {
                let pos = outs.iter().position(|(n, _)| n == w).ok_or_else(|| {
                    TorchScriptError::Missing {
                        path: self.path.clone(),
                        name: w.to_string(),
                        available: available.clone(),
                    }
                })?;
                Ok(outs.swap_remove(pos))
            })
            .collect()
    }

    /// Per-sample shapes of every output for `height` x `width` inputs, from one forward pass on a
    /// batch of two zero images (once per size).
    pub fn output_shapes(&self, height: i64, width: i64) -> Result<Shapes, TorchScriptError> {
        if let Some(shapes) = locked(&self.probed).get(&(height, width)) {
            return Ok(shapes.clone());
        }
        let probe = Tensor::f_zeros([2, 3, height, width], (Kind::Float, self.device))?;
        let x = self.prepare(&probe)?;
        let outs = self.outputs(self.run(x)?, 2)?;
        let shapes: Shapes = outs
            .iter()
            .map(|(n, t)| (n.clone(), t.size()[1..].to_vec()))
            .collect();
        locked(&self.probed).insert((height, width), shapes.clone());
        Ok(shapes)
    }
}
