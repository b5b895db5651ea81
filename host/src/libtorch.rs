//! libtorch at run time: the allocator's settings, where libtorch was loaded from, CUDA
//! availability, device choice.
use std::path::PathBuf;

/// Keeps large CPU allocations in glibc's heap instead of fresh `mmap`s. libtorch allocates
/// every gradient and temporary with `malloc`; above glibc's default threshold (128 KiB, rising
/// to at most 32 MiB) each one is a new mapping whose pages fault in on first touch and are
/// unmapped on free. A pixel-wise head's 75 M-parameter conv made every training step map,
/// fault and unmap gigabytes: measured on the THORDepth test fixture (ResNet-50, 8 images of
/// 65 px, 32 Adam steps, 2 cores), training took 110 s, 65% of it in the kernel, and 28 s with
/// these settings (the same as `MALLOC_MMAP_THRESHOLD_=4G MALLOC_TRIM_THRESHOLD_=16G
/// MALLOC_TOP_PAD_=1G`). Freed memory is then kept for reuse rather than returned at once.
/// Set `VIRB_DEFAULT_MALLOC=1` to keep glibc's defaults.
pub fn tune_allocator() {
    if std::env::var_os("VIRB_DEFAULT_MALLOC").is_some() {
        return;
    }
    // SAFETY: mallopt only changes the allocator's thresholds; it is safe to call at any time
    // (glibc takes its own lock). A refused value (return 0) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Returns the heap's free memory to the system (`malloc_trim`): with [`tune_allocator`]'s
/// thresholds, what earlier phases freed (the survey's and the datasets' listings of a
/// 1.28 M-sample split, the encoding's buffers) would otherwise stay resident through training.
/// Called between phases, never per step.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel (glibc takes its lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

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

/// This host's libtorch as `major.minor`.
pub fn host_minor() -> String {
    virb_plugin_api::Version::parse(virb_plugin_api::LIBTORCH_VERSION)
        .map(|v| format!("{}.{}", v.major, v.minor))
        .unwrap_or_else(|| virb_plugin_api::LIBTORCH_VERSION.to_string())
}

/// ` (this virb-host's is <torch folder>)`, when known.
pub fn host_location() -> String {
    loaded_lib_dir()
        .and_then(|lib| {
            lib.parent()
                .map(|d| format!(" (this virb-host's is {})", d.display()))
        })
        .unwrap_or_default()
}

/// Whether a loader error names a missing symbol of libtorch's C++ namespaces (`c10`, `at`,
/// `torch`, `caffe2`; functions, vtables, type infos).
pub fn missing_symbol(text: &str) -> bool {
    text.split("undefined symbol: ")
        .nth(1)
        .is_some_and(|symbol| {
            let inner = ["_ZNK", "_ZN", "_ZTVN", "_ZTIN", "_ZTSN"]
                .iter()
                .find_map(|p| symbol.strip_prefix(p))
                .unwrap_or("");
            ["3c10", "2at", "5torch", "6caffe2"]
                .iter()
                .any(|ns| inner.starts_with(ns))
        })
}

#[cfg(test)]
mod tests {
    use super::missing_symbol;

    #[test]
    fn missing_libtorch_symbols_are_recognised() {
        let error = |s: &str| format!("/p/libx.so: undefined symbol: {s}");
        for s in [
            "_ZN3c1010TensorImpl17set_requires_gradEb",
            "_ZNK2at10TensorBase5printEv",
            "_ZTVN5torch8autograd12AutogradMetaE",
        ] {
            assert!(missing_symbol(&error(s)), "{s}");
        }
        assert!(!missing_symbol(&error("_ZN4core3fmt5writeE")));
        assert!(!missing_symbol(
            "/p/libx.so: cannot open shared object file"
        ));
    }
}
