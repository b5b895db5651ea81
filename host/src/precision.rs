//! The run's `--precision`: the type frozen encoders compute in. `auto` is bf16 on a device that
//! computes it natively (a CUDA device of compute capability 8.0 or later; a CPU with AMX or
//! AVX-512 bf16 instructions), where it is several times faster than fp32 with the probe's
//! metric within noise, and fp32 elsewhere, where bf16 would be emulated and slower. It is
//! filled into the options of every experiment whose encoder plugin takes a `precision`
//! (plugin-api's `ENCODER_PRECISIONS`) and whose entry sets none, so that it is part of every
//! cache key and result like any option; an entry's own `precision` wins. Fine-tuning loads the
//! entry's options as written (fp32 unless the entry says otherwise).
use crate::config::Experiment;
use crate::plugins::Registry;
use tch::Device;
use virb_plugin_api::{
    abi_stable::std_types::{ROption, RResult, RStr},
    ExtensionCall, ENCODER_PRECISIONS,
};

/// The environment variable that sets the run's precision when `--precision` is not given.
pub(crate) const ENV: &str = "VIRB_PRECISION";

/// The precision `requested` (`auto`, `fp32`, `bf16` or `fp16`) means on `device`.
pub(crate) fn resolve(requested: &str, device: Device) -> Result<String, String> {
    match requested {
        "auto" => Ok(if native_bf16(device) { "bf16" } else { "fp32" }.to_string()),
        "fp32" | "bf16" | "fp16" => Ok(requested.to_string()),
        other => Err(format!(
            "precision `{other}` (from --precision or ${ENV}) is not one of auto, fp32, bf16, fp16"
        )),
    }
}

/// Whether `device` computes bf16 natively.
pub(crate) fn native_bf16(device: Device) -> bool {
    match device {
        Device::Cpu => {
            let cpu = crate::devices::cpu_info();
            cpu.amx_bf16 || cpu.avx512_bf16
        }
        Device::Cuda(i) => match crate::cuda::probe_with(false) {
            crate::cuda::CudaProbe::Devices { devices, .. } => devices
                .iter()
                .find(|d| d.index == i)
                .is_some_and(|d| d.capability.0 >= 8),
            _ => false,
        },
        _ => false,
    }
}

/// The precisions the encoder factory of `exp` takes, if it takes the option at all.
fn precisions(registry: &Registry, exp: &Experiment) -> Option<Vec<String>> {
    let entry = registry.encoder(&exp.encoder).ok()?;
    let call = ExtensionCall::json(serde_json::json!({"encoder": exp.encoder}).to_string());
    match entry
        .factory
        .extension(RStr::from(ENCODER_PRECISIONS), call)
    {
        RResult::ROk(ROption::RSome(reply)) => {
            let v: serde_json::Value = serde_json::from_str(reply.json.as_str()).ok()?;
            Some(
                v["precisions"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Fills `precision` into the options of each experiment whose encoder takes it and whose
/// entry sets none. Returns a note per experiment whose encoder cannot run in `precision`
/// (it keeps its own default).
pub(crate) fn apply(
    experiments: &mut [Experiment],
    registry: &Registry,
    precision: &str,
) -> Vec<String> {
    let mut notes = Vec::new();
    for exp in experiments.iter_mut() {
        if exp.options.get("precision").is_some() || !exp.options.is_object() {
            continue;
        }
        match precisions(registry, exp) {
            Some(p) if p.iter().any(|x| x == precision) => {
                if let Some(options) = exp.options.as_object_mut() {
                    options.insert("precision".into(), precision.into());
                }
            }
            Some(p) => notes.push(format!(
                "experiment `{}`: encoder `{}` does not run in {precision} (it takes {}); it keeps its default",
                exp.name,
                exp.encoder,
                p.join(", ")
            )),
            None if precision != "fp32" => notes.push(format!(
                "experiment `{}`: encoder `{}` has no precision option; it runs as its plugin does",
                exp.name, exp.encoder
            )),
            None => {}
        }
    }
    notes
}
