//! libtorch at run time: where it was loaded from, CUDA availability, device choice.
use std::path::PathBuf;

/// The folder of the `libtorch_cpu.so` this process loaded (from `/proc/self/maps`).
pub fn loaded_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
}

/// What is known about CUDA in this process.
#[derive(Debug, Clone)]
pub struct CudaStatus {
    /// Whether libtorch reports CUDA as available.
    pub available: bool,
    /// Number of CUDA devices.
    pub device_count: i64,
    /// How `libtorch_cuda.so` was (or was not) loaded.
    pub note: String,
}

/// Loads `libtorch_cuda.so` next to the loaded `libtorch_cpu.so` (the linker's `--as-needed`
/// drops it from the binary, and without it libtorch silently reports no CUDA), then asks
/// libtorch about CUDA. Skipped, cheaply, on machines without NVIDIA device nodes unless `force`.
pub fn init_cuda(force: bool) -> CudaStatus {
    let has_driver_nodes = std::path::Path::new("/dev/nvidiactl").exists();
    let note = if !has_driver_nodes && !force {
        "no NVIDIA driver (/dev/nvidiactl missing); libtorch_cuda.so not loaded".to_string()
    } else {
        match loaded_lib_dir().map(|d| d.join("libtorch_cuda.so")) {
            Some(lib) if lib.exists() => {
                // SAFETY: libtorch_cuda.so is part of the libtorch already loaded; loading it
                // registers CUDA hooks. RTLD_GLOBAL makes its symbols visible to libtorch.
                let opened = unsafe {
                    libloading::os::unix::Library::open(
                        Some(&lib),
                        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                    )
                };
                match opened {
                    Ok(l) => {
                        std::mem::forget(l);
                        format!("loaded {}", lib.display())
                    }
                    Err(e) => format!("cannot load {}: {e}", lib.display()),
                }
            }
            Some(lib) => format!("{} not found (CPU-only libtorch)", lib.display()),
            None => "libtorch_cpu.so location unknown".to_string(),
        }
    };
    let available = tch::Cuda::is_available();
    CudaStatus {
        available,
        device_count: if available {
            tch::Cuda::device_count()
        } else {
            0
        },
        note,
    }
}

/// Resolves `auto`, `cpu`, `cuda`, `cuda:N` into a device, checking CUDA is there when asked for.
pub fn resolve_device(spec: &str) -> Result<tch::Device, String> {
    let wants_cuda = spec != "cpu";
    let status = init_cuda(spec.starts_with("cuda"));
    match spec {
        "auto" => Ok(if status.available {
            tch::Device::Cuda(0)
        } else {
            tch::Device::Cpu
        }),
        _ => {
            let device = virb_plugin_api::parse_device(spec)
                .map_err(|e| format!("--device: {}", e.message))?;
            if wants_cuda && !status.available {
                return Err(format!(
                    "--device {spec}: CUDA is not available ({}); use --device cpu or auto",
                    status.note
                ));
            }
            if let tch::Device::Cuda(n) = device {
                if n as i64 >= status.device_count {
                    return Err(format!(
                        "--device {spec}: only {} CUDA device(s) present",
                        status.device_count
                    ));
                }
            }
            Ok(device)
        }
    }
}
