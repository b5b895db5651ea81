//! The CUDA driver API through `libloading`: the library opened once, the calls used, and
//! [`query`], which turns their answers into a [`CudaProbe`]. Every `unsafe` call is here, each
//! with its SAFETY reasoning; the signatures are those of `cuda.h`.
use super::{CudaDevice, CudaProbe};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;

const CUDA_SUCCESS: CuResult = 0;
const CUDA_ERROR_NO_DEVICE: CuResult = 100;
const ATTR_MULTIPROCESSOR_COUNT: c_int = 16;
const ATTR_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const ATTR_COMPUTE_CAPABILITY_MINOR: c_int = 76;
const LIBRARY_NAMES: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

/// Asks the driver for every visible device (see [`super::probe_with`]).
pub(super) fn query(free_memory: bool) -> CudaProbe {
    let driver = match driver() {
        Ok(d) => d,
        Err(Missing::NoDriver(why)) => return CudaProbe::NoDriver(why.clone()),
        Err(Missing::Broken(why)) => return CudaProbe::Error(why.clone()),
    };
    match driver.devices(free_memory) {
        Ok(p) => p,
        Err(e) => CudaProbe::Error(e),
    }
}

enum Missing {
    NoDriver(String),
    Broken(String),
}

/// The entry points of the primary-context route to free memory (all present since CUDA 7).
struct ContextFns {
    retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    release: unsafe extern "C" fn(CuDevice) -> CuResult,
    get_current: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    set_current: unsafe extern "C" fn(CuContext) -> CuResult,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult,
}

/// The opened driver library and the functions used, with the C signatures of `cuda.h`.
struct Driver {
    _library: libloading::Library,
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    driver_get_version: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    device_total_mem: unsafe extern "C" fn(*mut usize, CuDevice) -> CuResult,
    device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult,
    get_error_name: Option<unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult>,
    context: Result<ContextFns, String>,
}

fn driver() -> Result<&'static Driver, &'static Missing> {
    static DRIVER: OnceLock<Result<Driver, Missing>> = OnceLock::new();
    DRIVER.get_or_init(Driver::open).as_ref()
}

/// Looks `name` up in `library` as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the `extern "C"` function pointer type of the symbol's C declaration.
unsafe fn symbol<T: Copy>(library: &libloading::Library, name: &str) -> Result<T, String> {
    // SAFETY: the caller guarantees T matches the symbol's C signature; the pointer is copied
    // out and stays valid because the library is never closed (it lives in a static).
    unsafe { library.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| {
            format!("the CUDA driver library lacks `{name}` ({e}); update the NVIDIA driver")
        })
}

impl Driver {
    fn open() -> Result<Driver, Missing> {
        let mut reasons: Vec<String> = Vec::new();
        for name in LIBRARY_NAMES {
            // SAFETY: libcuda's initialisers only register the driver; they run no code that
            // depends on this process's state.
            match unsafe { libloading::Library::new(name) } {
                Ok(library) => return Driver::bind(library).map_err(Missing::Broken),
                Err(e) => {
                    // dlerror's text starts with the file name; keep the reason once.
                    let text = e.to_string();
                    let reason = text.strip_prefix(&format!("{name}: ")).unwrap_or(&text);
                    if !reasons.iter().any(|r| r == reason) {
                        reasons.push(reason.to_string());
                    }
                }
            }
        }
        Err(Missing::NoDriver(format!(
            "cannot open {}: {}",
            LIBRARY_NAMES.join(" or "),
            reasons.join("; ")
        )))
    }

    fn bind(library: libloading::Library) -> Result<Driver, String> {
        let l = &library;
        // SAFETY (every `symbol` call below): each type is the C declaration in cuda.h of the
        // named function (CUresult = int, CUdevice = int, CUcontext = pointer, size_t = usize).
        let context = (|| {
            Ok::<_, String>(ContextFns {
                retain: unsafe { symbol(l, "cuDevicePrimaryCtxRetain")? },
                release: unsafe { symbol(l, "cuDevicePrimaryCtxRelease_v2") }
                    .or_else(|_| unsafe { symbol(l, "cuDevicePrimaryCtxRelease") })?,
                get_current: unsafe { symbol(l, "cuCtxGetCurrent")? },
                set_current: unsafe { symbol(l, "cuCtxSetCurrent")? },
                mem_get_info: unsafe { symbol(l, "cuMemGetInfo_v2")? },
            })
        })();
        Ok(Driver {
            init: unsafe { symbol(l, "cuInit")? },
            driver_get_version: unsafe { symbol(l, "cuDriverGetVersion")? },
            device_get_count: unsafe { symbol(l, "cuDeviceGetCount")? },
            device_get: unsafe { symbol(l, "cuDeviceGet")? },
            device_get_name: unsafe { symbol(l, "cuDeviceGetName")? },
            device_total_mem: unsafe { symbol(l, "cuDeviceTotalMem_v2")? },
            device_get_attribute: unsafe { symbol(l, "cuDeviceGetAttribute")? },
            get_error_name: unsafe { symbol(l, "cuGetErrorName") }.ok(),
            context,
            _library: library,
        })
    }

    /// `Ok(())` for `CUDA_SUCCESS`, else `<call> failed: <NAME> (<code>)`.
    fn check(&self, call: &str, code: CuResult) -> Result<(), String> {
        if code == CUDA_SUCCESS {
            return Ok(());
        }
        Err(format!("{call} failed: {}", self.error_name(code)))
    }

    fn error_name(&self, code: CuResult) -> String {
        let mut text: *const c_char = std::ptr::null();
        let named = self.get_error_name.is_some_and(|f| {
            // SAFETY: cuGetErrorName writes a pointer to a static NUL-terminated string (or
            // leaves it null and returns an error for an unknown code).
            unsafe { f(code, &mut text) == CUDA_SUCCESS && !text.is_null() }
        });
        if named {
            // SAFETY: checked non-null above; the driver's strings are static and NUL-terminated.
            let name = unsafe { CStr::from_ptr(text) }.to_string_lossy();
            format!("{name} ({code})")
        } else {
            format!("CUresult {code}")
        }
    }

    fn devices(&self, free_memory: bool) -> Result<CudaProbe, String> {
        let mut driver_version: c_int = 0;
        // SAFETY: a valid out-pointer; cuDriverGetVersion needs no cuInit.
        self.check("cuDriverGetVersion", unsafe {
            (self.driver_get_version)(&mut driver_version)
        })?;
        // SAFETY: flags must be 0; cuInit may be called any number of times.
        let init = unsafe { (self.init)(0) };
        if init == CUDA_ERROR_NO_DEVICE {
            return Ok(CudaProbe::Devices {
                driver_version,
                devices: Vec::new(),
            });
        }
        self.check("cuInit", init)?;
        let mut count: c_int = 0;
        // SAFETY: a valid out-pointer, after a successful cuInit.
        self.check("cuDeviceGetCount", unsafe {
            (self.device_get_count)(&mut count)
        })?;
        let devices = (0..count.max(0))
            .map(|ordinal| self.device(ordinal, free_memory))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CudaProbe::Devices {
            driver_version,
            devices,
        })
    }

    fn device(&self, ordinal: c_int, free_memory: bool) -> Result<CudaDevice, String> {
        let at = |call: &str| format!("{call} (device {ordinal})");
        let mut dev: CuDevice = 0;
        // SAFETY: a valid out-pointer; ordinal is in [0, cuDeviceGetCount).
        self.check(&at("cuDeviceGet"), unsafe {
            (self.device_get)(&mut dev, ordinal)
        })?;
        let mut name = [0u8; 256];
        // SAFETY: the buffer holds `len` bytes; the driver writes a NUL-terminated name into it.
        self.check(&at("cuDeviceGetName"), unsafe {
            (self.device_get_name)(name.as_mut_ptr().cast(), name.len() as c_int - 1, dev)
        })?;
        let name = CStr::from_bytes_until_nul(&name)
            .map(|c| c.to_string_lossy().trim().to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(&name).to_string());
        let mut total: usize = 0;
        // SAFETY: a valid out-pointer (size_t) and a device handle from cuDeviceGet.
        self.check(&at("cuDeviceTotalMem_v2"), unsafe {
            (self.device_total_mem)(&mut total, dev)
        })?;
        let attribute = |attr: c_int, what: &str| -> Result<i32, String> {
            let mut value: c_int = 0;
            // SAFETY: a valid out-pointer, a valid attribute id and device handle.
            let code = unsafe { (self.device_get_attribute)(&mut value, attr, dev) };
            self.check(&at(&format!("cuDeviceGetAttribute({what})")), code)?;
            Ok(value)
        };
        let capability = (
            attribute(ATTR_COMPUTE_CAPABILITY_MAJOR, "COMPUTE_CAPABILITY_MAJOR")?,
            attribute(ATTR_COMPUTE_CAPABILITY_MINOR, "COMPUTE_CAPABILITY_MINOR")?,
        );
        let multiprocessors = attribute(ATTR_MULTIPROCESSOR_COUNT, "MULTIPROCESSOR_COUNT")?;
        let (free_bytes, free_note) = if free_memory {
            match self.free_bytes(dev) {
                Ok(free) => (Some(free), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        Ok(CudaDevice {
            index: ordinal as usize,
            name,
            total_bytes: total as u64,
            free_bytes,
            free_note,
            capability,
            multiprocessors,
        })
    }

    /// Free memory of `dev` through its primary context; the thread's current context is
    /// restored and the primary context released on every path.
    fn free_bytes(&self, dev: CuDevice) -> Result<u64, String> {
        let c = self.context.as_ref().map_err(Clone::clone)?;
        let mut previous: CuContext = std::ptr::null_mut();
        // SAFETY: a valid out-pointer; a thread without a context gets null.
        self.check("cuCtxGetCurrent", unsafe { (c.get_current)(&mut previous) })?;
        let mut context: CuContext = std::ptr::null_mut();
        // SAFETY: a valid out-pointer and device handle; paired with the release below.
        self.check("cuDevicePrimaryCtxRetain", unsafe {
            (c.retain)(&mut context, dev)
        })?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: `context` was just retained, so it is alive while current; the out-pointers
        // are valid.
        let read = self
            .check("cuCtxSetCurrent", unsafe { (c.set_current)(context) })
            .and_then(|()| {
                self.check("cuMemGetInfo_v2", unsafe {
                    (c.mem_get_info)(&mut free, &mut total)
                })
            });
        // SAFETY: `previous` was current on this thread before (or null), and is still alive:
        // nothing here released it.
        let restored = self.check("cuCtxSetCurrent(previous)", unsafe {
            (c.set_current)(previous)
        });
        // SAFETY: balances the successful retain above; the context is no longer current here.
        let released = self.check("cuDevicePrimaryCtxRelease", unsafe { (c.release)(dev) });
        read.and(restored).and(released).map(|()| free as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe;
    use super::*;

    /// On any machine: the probe answers without panicking, and what it says is consistent with
    /// the NVIDIA device nodes (no driver library and no devices where `/dev/nvidiactl` is absent).
    #[test]
    fn probe_matches_this_machine() {
        let p = probe();
        match &p {
            CudaProbe::NoDriver(why) => assert!(why.contains("libcuda.so.1"), "{why}"),
            CudaProbe::Error(e) => assert!(e.contains("failed") || e.contains("lacks"), "{e}"),
            CudaProbe::Devices { devices, .. } => {
                for (i, d) in devices.iter().enumerate() {
                    assert_eq!(d.index, i);
                    assert!(!d.name.is_empty() && d.total_bytes > 0 && d.multiprocessors > 0);
                    assert!(d.free_bytes.is_some() != d.free_note.is_some());
                }
            }
        }
        if !std::path::Path::new("/dev/nvidiactl").exists() {
            assert_eq!(p.device_count(), 0, "{p:?}");
        }
    }
}
