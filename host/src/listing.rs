//! What the informational commands print (`plugins`, `tasks`, `devices`) and the one-line
//! warnings about refused plugins that every command starts with.
use crate::{libtorch, plugins};
use virb_plugin_api::{LIBTORCH_VERSION, PLUGIN_API_VERSION};

/// Warns, one line each, about the plugin files that were refused.
pub fn warn_rejected(reg: &plugins::Registry) {
    for r in &reg.rejected {
        eprintln!(
            "warning: plugin {} rejected: {}",
            r.path.display(),
            r.reason
        );
    }
}

/// `virb-host plugins`: the plugin folders, what loaded, what was shadowed and what was refused.
pub fn print_plugins(reg: &plugins::Registry) {
    println!("plugin folders (plugin-api {PLUGIN_API_VERSION}, libtorch {LIBTORCH_VERSION}):");
    for d in &reg.dirs {
        let state = if d.path.is_dir() { "" } else { " (missing)" };
        println!("  {} [{}]{state}", d.path.display(), d.origin);
    }
    println!("loaded ({}):", reg.plugins.len());
    for p in &reg.plugins {
        let what = match p.kind {
            virb_plugin_api::PluginKind::Task => "tasks",
            virb_plugin_api::PluginKind::Encoder => "encoders",
        };
        println!(
            "  {:<8} {} {} (plugin-api {}, libtorch {})",
            p.kind.as_str(),
            p.name,
            p.version,
            p.api_version,
            p.libtorch_version
        );
        println!("           {what}: {}", p.provides.join(", "));
        println!("           {}", p.path.display());
    }
    for (name, path) in &reg.shadowed {
        println!(
            "  note: `{name}` from {} ignored; an earlier plugin provides it",
            path.display()
        );
    }
    println!("rejected ({}):", reg.rejected.len());
    for r in &reg.rejected {
        println!("  {}: {}", r.path.display(), r.reason);
        if !r.help.is_empty() {
            println!("    help: {}", r.help);
        }
    }
}

/// `virb-host tasks`: each task with its data folder, layout, metrics and options.
pub fn print_tasks(reg: &plugins::Registry) {
    for t in &reg.tasks {
        let metrics: Vec<String> = t
            .info
            .metrics
            .iter()
            .map(|m| {
                format!(
                    "{} ({})",
                    m.name,
                    if m.higher_is_better {
                        "higher is better"
                    } else {
                        "lower is better"
                    }
                )
            })
            .collect();
        println!(
            "{}  [{}]  ({} {})",
            t.info.name, t.info.family, t.plugin.name, t.plugin.version
        );
        println!("  data:   <data-root>/{}", t.info.data_dir);
        println!("  layout: {}", t.info.layout);
        println!("  metric: {}", metrics.join(", "));
        for o in t.info.options.iter() {
            println!("  option: {}: {}", o.name, o.help);
        }
        #[cfg(feature = "next-minor-test")]
        println!("  describe: {}", describe(t));
    }
}

/// The capability that the test build of plugin-api 0.3.1 adds (see
/// `virb_plugin_api::next_minor`): a plugin that predates it answers "not offered", and the
/// host falls back to saying so.
#[cfg(feature = "next-minor-test")]
fn describe(t: &plugins::TaskEntry) -> String {
    use virb_plugin_api::{abi_stable::std_types::ROption, next_minor, ExtensionCall};
    match t
        .task
        .extension(
            next_minor::TASK_DESCRIBE.into(),
            ExtensionCall::json("null"),
        )
        .into_result()
    {
        Ok(ROption::RSome(reply)) => reply.json.to_string(),
        Ok(ROption::RNone) => format!(
            "not offered by {} (built for plugin-api {})",
            t.plugin.name, t.plugin.api_version
        ),
        Err(e) => format!("failed: {e}"),
    }
}

/// `virb-host devices`: libtorch, the CPU, and every CUDA device as the NVIDIA driver and as
/// libtorch see them. The last line, `cuda check: ok|none|FAILED|MISMATCH: ...`, is meant for
/// scripts (`scripts/gpu-check.sh` greps `^cuda check: ok`).
pub fn devices() {
    use crate::{cuda, devices};
    let status = libtorch::init_cuda(true);
    println!("virb-host {}", env!("CARGO_PKG_VERSION"));
    println!("plugin-api {PLUGIN_API_VERSION}");
    println!("libtorch {LIBTORCH_VERSION}");
    match libtorch::loaded_lib_dir() {
        Some(d) => println!("libtorch loaded from {}", d.display()),
        None => println!("libtorch location unknown"),
    }
    println!("{}", devices::cpu_info().line());
    println!("cpu threads (libtorch): {}", tch::get_num_threads());
    let probe = cuda::probe();
    match &probe {
        cuda::CudaProbe::NoDriver(why) => println!("cuda driver: none ({why})"),
        cuda::CudaProbe::Error(e) => println!("cuda driver: error: {e}"),
        cuda::CudaProbe::Devices {
            driver_version,
            devices,
        } => {
            println!(
                "cuda driver: {} ({} device(s){})",
                cuda::version_text(*driver_version),
                devices.len(),
                std::env::var("CUDA_VISIBLE_DEVICES")
                    .map(|v| format!(", CUDA_VISIBLE_DEVICES={v}"))
                    .unwrap_or_default()
            );
            for d in devices {
                println!("  {}", cuda::device_line(d));
            }
        }
    }
    println!(
        "cuda: {}",
        if status.available {
            "available"
        } else {
            "not available"
        }
    );
    println!("cuda devices: {}", status.device_count);
    println!(
        "cudnn: {}",
        if tch::Cuda::cudnn_is_available() {
            "available"
        } else {
            "not available"
        }
    );
    println!("libtorch_cuda: {}", status.note);
    for line in cuda::cuda_check(status.device_count.max(0) as usize, &probe, &status.note) {
        println!("{line}");
    }
}
