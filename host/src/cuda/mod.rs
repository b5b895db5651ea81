//! The CUDA devices as the NVIDIA driver reports them: name, memory, compute capability.
//!
//! libtorch (through `tch`) can count CUDA devices but cannot name them or tell their memory, so
//! this module asks the CUDA driver API directly. The driver library (`libcuda.so.1`, else
//! `libcuda.so`) is opened at run time with `libloading`, never linked: the host must start on
//! machines without any NVIDIA software, where [`probe`] answers [`CudaProbe::NoDriver`].
//!
//! Design choices:
//! - The library is opened once per process and never closed (the driver starts threads of its
//!   own, and libtorch's CUDA runtime loads the same library); each [`probe`] asks afresh, so free
//!   memory is current.
//! - Every `CUresult` is checked; an error names the call, the code and its name
//!   (`cuGetErrorName`), e.g. `cuInit failed: CUDA_ERROR_NO_DEVICE (100)`.
//! - `CUDA_VISIBLE_DEVICES` is applied by the driver itself: indices here are the ones libtorch
//!   uses (`cuda:N`). `cuInit` answering "no device" (e.g. `CUDA_VISIBLE_DEVICES=""`) is a driver
//!   with zero devices, not an error.
//! - Free memory needs a context. [`probe`] retains the device's *primary* context (the one the
//!   CUDA runtime and so libtorch share; it is reference counted, so an existing one is reused),
//!   makes it current only for `cuMemGetInfo_v2`, restores the thread's previous context and
//!   releases it. Creating a context takes a fraction of a second and some device memory while it
//!   lives, so [`probe_with`]`(false)` skips it where only the count matters.
//! - The FFI lives in `driver` (every `unsafe` block); this file holds the plain data, the lines
//!   `virb-host devices` prints, and [`cuda_check`], which compares the driver's devices with
//!   libtorch's and explains a difference (the `--as-needed` linker pitfall among the causes).

mod driver;

/// One CUDA device as the driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaDevice {
    /// The index libtorch uses (`cuda:N`), after `CUDA_VISIBLE_DEVICES`.
    pub index: usize,
    /// The product name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Total device memory in bytes.
    pub total_bytes: u64,
    /// Free device memory in bytes, when it was asked for and could be read.
    pub free_bytes: Option<u64>,
    /// Why free memory is unknown (the failed call and its code), when it was asked for.
    pub free_note: Option<String>,
    /// Compute capability (major, minor), e.g. (9, 0) for `sm_90`.
    pub capability: (i32, i32),
    /// Number of streaming multiprocessors.
    pub multiprocessors: i32,
}

/// What the CUDA driver says about this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum CudaProbe {
    /// No CUDA driver library could be opened; says why (each name tried and the loader's error).
    NoDriver(String),
    /// The driver is there but a call failed; names the call and the code.
    Error(String),
    /// The driver's version (e.g. 12080 for 12.8) and the visible devices (possibly none).
    Devices {
        /// `cuDriverGetVersion`: 1000 * major + 10 * minor.
        driver_version: i32,
        /// The devices, in `cuda:N` order.
        devices: Vec<CudaDevice>,
    },
}

impl CudaProbe {
    /// Number of devices the driver reports (0 without a driver or on error).
    pub fn device_count(&self) -> usize {
        match self {
            CudaProbe::Devices { devices, .. } => devices.len(),
            _ => 0,
        }
    }

    /// One line for messages: `CUDA driver 12.8 reports 2 device(s)` or why it cannot tell.
    pub fn summary(&self) -> String {
        match self {
            CudaProbe::NoDriver(why) => format!("no CUDA driver ({why})"),
            CudaProbe::Error(e) => format!("the CUDA driver failed: {e}"),
            CudaProbe::Devices {
                driver_version,
                devices,
            } => format!(
                "CUDA driver {} reports {} device(s)",
                version_text(*driver_version),
                devices.len()
            ),
        }
    }
}

/// `12080` -> `12.8`, as `cuDriverGetVersion` encodes it.
pub fn version_text(version: i32) -> String {
    format!("{}.{}", version / 1000, (version % 1000) / 10)
}

/// Asks the driver for every visible device, free memory included (see the module docs).
pub fn probe() -> CudaProbe {
    probe_with(true)
}

/// Asks the driver for every visible device; `free_memory` also reads each one's free memory,
/// which creates (or reuses) its primary context.
pub fn probe_with(free_memory: bool) -> CudaProbe {
    driver::query(free_memory)
}

/// Bytes as GiB with one decimal, e.g. `139.8 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// One line per device: `cuda:0  NVIDIA H200  139.8 GiB (139.2 GiB free)  sm_90, 132 SMs`.
pub fn device_line(d: &CudaDevice) -> String {
    let free = match (d.free_bytes, &d.free_note) {
        (Some(f), _) => format!(" ({} free)", gib(f)),
        (None, Some(why)) => format!(" (free unknown: {why})"),
        (None, None) => String::new(),
    };
    format!(
        "cuda:{}  {}  {}{free}  sm_{}{}, {} SMs",
        d.index,
        d.name,
        gib(d.total_bytes),
        d.capability.0,
        d.capability.1,
        d.multiprocessors
    )
}

/// The lines ending `virb-host devices`: whether libtorch can use the CUDA devices the driver
/// reports. The last starts `cuda check: ok`, `none`, `MISMATCH` or `FAILED`; a failure says why
/// and what to do. `libtorch_count` is `tch::Cuda::device_count()` after
/// [`crate::libtorch::init_cuda`], whose note is `libtorch_cuda_note`.
pub fn cuda_check(
    libtorch_count: usize,
    probe: &CudaProbe,
    libtorch_cuda_note: &str,
) -> Vec<String> {
    let driver_count = probe.device_count();
    let driver = probe.summary();
    if libtorch_count > 0 && (driver_count == libtorch_count || driver_count == 0) {
        let also = match probe {
            CudaProbe::Devices { .. } => String::new(),
            _ => format!(" (but {driver})"),
        };
        return vec![format!(
            "cuda check: ok: libtorch uses {libtorch_count} CUDA device(s){also}"
        )];
    }
    if libtorch_count > 0 {
        return vec![format!(
            "cuda check: MISMATCH: libtorch sees {libtorch_count} CUDA device(s), the driver \
             {driver_count}: both apply CUDA_VISIBLE_DEVICES, so another process may have \
             changed the devices between the two queries; run `virb-host devices` again"
        )];
    }
    if driver_count == 0 {
        let why = match probe {
            CudaProbe::Error(_) => format!("{driver}; check `nvidia-smi`"),
            _ => driver,
        };
        return vec![format!("cuda check: none: {why}; virb runs on the CPU")];
    }
    let mut lines = vec![format!(
        "cuda check: FAILED: {driver} but libtorch sees none (libtorch_cuda: {libtorch_cuda_note})"
    )];
    let fix = if libtorch_cuda_note.contains("CPU-only") {
        "this libtorch is a CPU-only build: build and run virb-host against a CUDA build of \
         libtorch (the default Linux `torch==2.11.0` wheel, +cu130), e.g. LIBTORCH or \
         LD_LIBRARY_PATH pointing at its torch/lib"
            .to_string()
    } else if libtorch_cuda_note.starts_with("cannot load") {
        "libtorch_cuda.so is there but did not load (its error is above): its CUDA libraries \
         (the nvidia-* wheels installed beside torch) must be found; run with \
         LD_LIBRARY_PATH=<torch>/lib and check `python3 -c 'import torch; \
         print(torch.cuda.is_available())'` in that environment"
            .to_string()
    } else if libtorch_cuda_note.starts_with("loaded") {
        let driver_cuda = match probe {
            CudaProbe::Devices { driver_version, .. } => {
                format!(
                    "this driver supports CUDA {}",
                    version_text(*driver_version)
                )
            }
            _ => "see `nvidia-smi` for the driver's CUDA version".to_string(),
        };
        format!(
            "libtorch_cuda.so is loaded yet libtorch reports no device: the driver may be too \
             old for this libtorch's CUDA (the torch 2.11 wheel is built for CUDA 13.0; \
             {driver_cuda}); compare with `python3 -c 'import torch; \
             print(torch.version.cuda, torch.cuda.is_available())'`"
        )
    } else {
        "libtorch_cuda.so was not loaded (the linker's --as-needed drops it from the binary; \
         virb-host opens it beside the libtorch_cpu.so it loaded): check that \
         `libtorch loaded from` above is a CUDA build of libtorch"
            .to_string()
    };
    lines.push(format!("  fix: {fix}"));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h200() -> CudaDevice {
        CudaDevice {
            index: 0,
            name: "NVIDIA H200".into(),
            total_bytes: 150_110_011_392,
            free_bytes: Some(149_000_000_000),
            free_note: None,
            capability: (9, 0),
            multiprocessors: 132,
        }
    }

    #[test]
    fn device_lines_show_memory_capability_and_why_free_is_unknown() {
        assert_eq!(
            device_line(&h200()),
            "cuda:0  NVIDIA H200  139.8 GiB (138.8 GiB free)  sm_90, 132 SMs"
        );
        let mut d = h200();
        d.free_bytes = None;
        assert_eq!(
            device_line(&d),
            "cuda:0  NVIDIA H200  139.8 GiB  sm_90, 132 SMs"
        );
        d.free_note =
            Some("cuDevicePrimaryCtxRetain failed: CUDA_ERROR_DEVICE_UNAVAILABLE (46)".into());
        assert!(device_line(&d).ends_with(
            "(free unknown: cuDevicePrimaryCtxRetain failed: CUDA_ERROR_DEVICE_UNAVAILABLE (46))  sm_90, 132 SMs"
        ));
    }

    #[test]
    fn driver_versions_and_summaries_read_like_nvidia_smi() {
        assert_eq!(version_text(12080), "12.8");
        assert_eq!(version_text(13000), "13.0");
        let p = CudaProbe::Devices {
            driver_version: 13000,
            devices: vec![h200(), h200()],
        };
        assert_eq!(p.device_count(), 2);
        assert_eq!(p.summary(), "CUDA driver 13.0 reports 2 device(s)");
        let none = CudaProbe::NoDriver("libcuda.so.1: not found".into());
        assert_eq!(none.device_count(), 0);
        assert!(none.summary().contains("libcuda.so.1"));
    }

    fn driver_with(n: usize) -> CudaProbe {
        let device = |index| CudaDevice {
            index,
            name: "NVIDIA H200".into(),
            total_bytes: 150 << 30,
            free_bytes: None,
            free_note: None,
            capability: (9, 0),
            multiprocessors: 132,
        };
        CudaProbe::Devices {
            driver_version: 12080,
            devices: (0..n).map(device).collect(),
        }
    }

    #[test]
    fn cuda_check_says_whether_libtorch_uses_the_drivers_devices() {
        let ok = cuda_check(2, &driver_with(2), "loaded /t/libtorch_cuda.so");
        assert_eq!(ok, vec!["cuda check: ok: libtorch uses 2 CUDA device(s)"]);
        let no_driver = CudaProbe::NoDriver("libcuda.so.1: not found".into());
        let none = cuda_check(0, &no_driver, "no NVIDIA driver");
        assert_eq!(none.len(), 1);
        assert!(
            none[0].starts_with("cuda check: none: no CUDA driver (libcuda.so.1"),
            "{none:?}"
        );
        assert!(cuda_check(0, &driver_with(0), "x")[0].starts_with("cuda check: none:"));
        let odd = cuda_check(1, &driver_with(2), "loaded x");
        assert!(
            odd[0].starts_with("cuda check: MISMATCH: libtorch sees 1"),
            "{odd:?}"
        );
        let broken = CudaProbe::Error("cuInit failed: CUDA_ERROR_UNKNOWN (999)".into());
        assert!(cuda_check(1, &broken, "loaded x")[0].contains("(but the CUDA driver failed"));
        assert!(cuda_check(0, &broken, "loaded x")[0].contains("check `nvidia-smi`"));
    }

    #[test]
    fn a_failed_cuda_check_says_why_and_how_to_fix_it() {
        let cases = [
            (
                "/t/lib/libtorch_cuda.so not found (CPU-only libtorch)",
                "CPU-only build",
            ),
            (
                "cannot load /t/libtorch_cuda.so: libcudart.so.13: cannot open",
                "did not load",
            ),
            (
                "loaded /t/lib/libtorch_cuda.so",
                "this driver supports CUDA 12.8",
            ),
            ("libtorch_cpu.so location unknown", "--as-needed"),
        ];
        for (note, fix) in cases {
            let lines = cuda_check(0, &driver_with(1), note);
            assert!(lines[0].starts_with("cuda check: FAILED: CUDA driver 12.8 reports 1"));
            assert!(lines[0].contains(note), "{lines:?}");
            assert!(
                lines[1].starts_with("  fix: ") && lines[1].contains(fix),
                "{lines:?}"
            );
        }
    }
}
