//! The `--devices` list: which devices a run's workers use, and how many libtorch threads each
//! CPU worker gets.
//!
//! Design choices:
//! - The list is strict: comma-separated, no spaces, no empty entries, lower case. A typo in a
//!   device list would otherwise silently run on fewer devices; each error quotes the entry and
//!   lists the accepted forms (with a hint for `gpu:N`, `CUDA:N`, ...).
//! - `cpu` may repeat (each is one CPU worker); a CUDA device may not (`cuda` is `cuda:0`, so
//!   `cuda,cuda:0` is a repeat). `all` stands alone: every CUDA device libtorch sees, else one
//!   `cpu`.
//! - Checked against what libtorch sees (`cuda_count`, passed in so the parser is testable).
//!   When a CUDA device is missing, the error also says what the NVIDIA driver reports
//!   ([`crate::cuda::probe_with`], without creating contexts): a driver that sees more devices
//!   than libtorch means libtorch's CUDA library is not loaded, which `virb-host devices` explains.

use crate::cuda;

const FORMS: &str = "a comma-separated list (no spaces) of `cpu` (repeatable: one CPU worker \
                     each), `cuda` (= cuda:0), `cuda:N`, or `all` alone (every CUDA device, \
                     else one cpu)";

/// Parses `--devices`: a comma-separated list of `cpu`, `cuda` (= cuda:0), `cuda:N`, or `all`
/// (every visible CUDA device, else one `cpu`); `cpu` may repeat (`cpu,cpu`: two CPU workers);
/// `cuda:N` may not repeat. Checked against what is there: a CUDA device that does not exist is an
/// error naming it, saying how many libtorch sees (and the driver, through cuda::probe) and
/// listing the valid names. Empty entries, spaces, `gpu:0` etc: errors saying the accepted forms.
pub fn parse_devices(spec: &str, cuda_count: usize) -> Result<Vec<tch::Device>, String> {
    parse_with(spec, cuda_count, || cuda::probe_with(false).summary())
}

/// [`parse_devices`] with the driver's account supplied by `driver` (called only for the error
/// about a missing CUDA device).
fn parse_with(
    spec: &str,
    cuda_count: usize,
    driver: impl FnOnce() -> String,
) -> Result<Vec<tch::Device>, String> {
    let err = |what: String| Err(format!("--devices `{spec}`: {what}; expected {FORMS}"));
    if spec.is_empty() {
        return err("the list is empty".into());
    }
    if spec.chars().any(char::is_whitespace) {
        return err("it contains spaces".into());
    }
    // The form of the whole list first, then what exists: a malformed list is reported as such
    // even when it also names a missing device.
    let entries: Vec<&str> = spec.split(',').collect();
    let mut devices = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let device = match *entry {
            "" => return err(format!("entry {} is empty", i + 1)),
            "all" if entries.len() > 1 => {
                return err("`all` cannot be combined with other entries".into())
            }
            "all" => {
                return Ok(if cuda_count == 0 {
                    vec![tch::Device::Cpu]
                } else {
                    (0..cuda_count).map(tch::Device::Cuda).collect()
                })
            }
            "cpu" => tch::Device::Cpu,
            "cuda" => tch::Device::Cuda(0),
            other => match other.strip_prefix("cuda:").and_then(index) {
                Some(n) => tch::Device::Cuda(n),
                None => return err(format!("unknown device `{other}`{}", hint(other))),
            },
        };
        if let tch::Device::Cuda(n) = device {
            if devices.contains(&device) {
                return err(format!("cuda:{n} is listed twice (`cuda` is cuda:0)"));
            }
        }
        devices.push(device);
    }
    let missing = devices.iter().find_map(|d| match d {
        tch::Device::Cuda(n) if *n >= cuda_count => Some(*n),
        _ => None,
    });
    match missing {
        Some(n) => Err(missing_cuda(spec, n, cuda_count, &driver())),
        None => Ok(devices),
    }
}

/// A device index: decimal digits only (no sign, no spaces).
fn index(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// ` (did you mean `cuda:0`?)` for near misses such as `gpu:0`, `CUDA:0`, `Cpu`, `cuda0`.
fn hint(entry: &str) -> String {
    let lower = entry.to_ascii_lowercase();
    let suggestion = if ["cpu", "cuda", "all"].contains(&lower.as_str()) {
        Some(lower)
    } else {
        ["gpu:", "cuda:", "gpu", "cuda"]
            .iter()
            .find_map(|p| lower.strip_prefix(p))
            .and_then(|rest| index(rest.trim_start_matches(':')))
            .map(|n| format!("cuda:{n}"))
            .or_else(|| (lower == "gpu").then(|| "cuda".to_string()))
    };
    suggestion
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// The error for `cuda:n` when libtorch sees `cuda_count` devices.
fn missing_cuda(spec: &str, n: usize, cuda_count: usize, driver: &str) -> String {
    let mut valid: Vec<String> = vec!["cpu".into()];
    if cuda_count > 0 {
        valid.push("cuda".into());
    }
    valid.extend((0..cuda_count).map(|i| format!("cuda:{i}")));
    valid.push("all".into());
    let sees = match cuda_count {
        0 => "no CUDA device".to_string(),
        c => format!("{c} CUDA device(s)"),
    };
    format!(
        "--devices `{spec}`: cuda:{n} does not exist: libtorch sees {sees} ({driver}; \
         `virb-host devices` shows both and why they differ); valid devices: {}",
        valid.join(", ")
    )
}

/// The libtorch threads each worker should use so workers do not oversubscribe the cores:
/// for k CPU workers on n cores, max(1, n / k) each; CUDA workers: unchanged (None).
pub fn threads_per_worker(devices: &[tch::Device], cores: usize) -> Option<i32> {
    let cpu_workers = devices.iter().filter(|d| **d == tch::Device::Cpu).count();
    (cpu_workers > 0).then(|| i32::try_from((cores / cpu_workers).max(1)).unwrap_or(i32::MAX))
}

/// The CPU side of this machine, for `virb-host devices`.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuInfo {
    /// `model name` from `/proc/cpuinfo`, when given.
    pub model: Option<String>,
    /// Cores this process may use (`std::thread::available_parallelism`: affinity, cgroups).
    pub cores: usize,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub memory_bytes: Option<u64>,
    /// The CPU has AVX-512 bf16 instructions (`avx512_bf16`): bf16 matmuls run fast on the CPU.
    pub avx512_bf16: bool,
    /// The CPU has AMX bf16 tiles (`amx_bf16`, Sapphire Rapids and later).
    pub amx_bf16: bool,
}

impl CpuInfo {
    /// `cpu: <model>, <n> cores, <memory> memory, bf16: avx512_bf16 yes, amx_bf16 no`.
    pub fn line(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "cpu: {}, {} cores, {} memory, bf16: avx512_bf16 {}, amx_bf16 {}",
            self.model.as_deref().unwrap_or("unknown model"),
            self.cores,
            self.memory_bytes.map_or("unknown".into(), cuda::gib),
            yes(self.avx512_bf16),
            yes(self.amx_bf16)
        )
    }
}

/// Reads `/proc/cpuinfo` and `/proc/meminfo` (fields unknown where they cannot be read).
pub fn cpu_info() -> CpuInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let flags = field(&cpuinfo, "flags").unwrap_or_default();
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    CpuInfo {
        model: field(&cpuinfo, "model name").map(str::to_string),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: field(&meminfo, "MemTotal").and_then(kib_bytes),
        avx512_bf16: has("avx512_bf16"),
        amx_bf16: has("amx_bf16"),
    }
}

/// The value of the first `key : value` line (the format of `/proc/cpuinfo` and `/proc/meminfo`).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// `24683568 kB` -> bytes.
fn kib_bytes(value: &str) -> Option<u64> {
    let kib: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device::{Cpu, Cuda};

    const DRIVER: &str = "CUDA driver 13.0 reports 2 device(s)";

    fn parse(spec: &str, cuda_count: usize) -> Result<Vec<tch::Device>, String> {
        parse_with(spec, cuda_count, || DRIVER.to_string())
    }

    fn error(spec: &str, cuda_count: usize) -> String {
        match parse(spec, cuda_count) {
            Ok(d) => panic!("`{spec}` with {cuda_count} CUDA device(s) parsed as {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_form_parses_with_two_cuda_devices() {
        assert_eq!(parse("cpu", 2), Ok(vec![Cpu]));
        assert_eq!(parse("cpu,cpu,cpu", 2), Ok(vec![Cpu, Cpu, Cpu]));
        assert_eq!(parse("cuda", 2), Ok(vec![Cuda(0)]));
        assert_eq!(parse("cuda:1", 2), Ok(vec![Cuda(1)]));
        assert_eq!(parse("cuda:1,cuda", 2), Ok(vec![Cuda(1), Cuda(0)]));
        assert_eq!(
            parse("cuda:0,cpu,cuda:1", 2),
            Ok(vec![Cuda(0), Cpu, Cuda(1)])
        );
        assert_eq!(parse("all", 2), Ok(vec![Cuda(0), Cuda(1)]));
    }

    #[test]
    fn without_cuda_only_cpu_and_all_parse() {
        assert_eq!(parse("cpu", 0), Ok(vec![Cpu]));
        assert_eq!(parse("cpu,cpu", 0), Ok(vec![Cpu, Cpu]));
        assert_eq!(parse("all", 0), Ok(vec![Cpu]));
        for spec in ["cuda", "cuda:0", "cpu,cuda:1"] {
            let e = error(spec, 0);
            assert!(
                e.contains("does not exist: libtorch sees no CUDA device"),
                "{e}"
            );
            assert!(e.contains(DRIVER), "{e}");
            assert!(e.ends_with("valid devices: cpu, all"), "{e}");
        }
        assert!(error("cuda", 0).contains("cuda:0 does not exist"));
    }

    #[test]
    fn a_missing_cuda_device_is_named_with_the_valid_ones() {
        let e = error("cuda:0,cuda:2", 2);
        assert!(
            e.starts_with("--devices `cuda:0,cuda:2`: cuda:2 does not exist"),
            "{e}"
        );
        assert!(
            e.contains("libtorch sees 2 CUDA device(s) (CUDA driver 13.0"),
            "{e}"
        );
        assert!(e.contains("`virb-host devices`"), "{e}");
        assert!(
            e.ends_with("valid devices: cpu, cuda, cuda:0, cuda:1, all"),
            "{e}"
        );
    }

    #[test]
    fn the_driver_is_asked_only_for_a_missing_device() {
        let unreachable = || -> String { panic!("driver probed for a valid list") };
        assert_eq!(
            parse_with("cuda:1,cpu", 2, unreachable),
            Ok(vec![Cuda(1), Cpu])
        );
        assert!(parse_with("gpu", 2, unreachable).is_err());
    }

    #[test]
    fn repeated_cuda_devices_are_refused() {
        for (spec, n) in [
            ("cuda,cuda", 0),
            ("cuda,cuda:0", 0),
            ("cuda:1,cpu,cuda:1", 1),
        ] {
            let e = error(spec, 2);
            assert!(
                e.contains(&format!("cuda:{n} is listed twice")),
                "{spec}: {e}"
            );
        }
    }

    #[test]
    fn malformed_lists_say_the_accepted_forms() {
        let cases = [
            ("", "the list is empty"),
            ("cpu,,cuda", "entry 2 is empty"),
            (",cpu", "entry 1 is empty"),
            ("cpu,", "entry 2 is empty"),
            ("cpu, cuda", "contains spaces"),
            (" cpu", "contains spaces"),
            ("all,cpu", "`all` cannot be combined"),
            ("cuda:0,all", "`all` cannot be combined"),
            ("gpu:0", "unknown device `gpu:0` (did you mean `cuda:0`?)"),
            ("gpu", "unknown device `gpu` (did you mean `cuda`?)"),
            ("CUDA:1", "(did you mean `cuda:1`?)"),
            ("cuda1", "(did you mean `cuda:1`?)"),
            ("CPU", "(did you mean `cpu`?)"),
            ("All", "(did you mean `all`?)"),
            ("cuda:", "unknown device `cuda:`;"),
            ("cuda:-1", "unknown device `cuda:-1`;"),
            ("cuda:+1", "unknown device `cuda:+1`;"),
            ("cuda:x", "unknown device `cuda:x`;"),
            ("mps", "unknown device `mps`;"),
        ];
        for (spec, want) in cases {
            for cuda_count in [0, 2] {
                let e = error(spec, cuda_count);
                assert!(e.contains(want), "`{spec}`: {e}");
                assert!(
                    e.contains("expected a comma-separated list"),
                    "`{spec}`: {e}"
                );
                assert!(e.contains("`cuda:N`"), "`{spec}`: {e}");
            }
        }
    }

    #[test]
    fn cpu_workers_share_the_cores() {
        assert_eq!(threads_per_worker(&[Cpu], 16), Some(16));
        assert_eq!(threads_per_worker(&[Cpu, Cpu], 16), Some(8));
        assert_eq!(threads_per_worker(&[Cpu, Cpu, Cpu], 16), Some(5));
        assert_eq!(threads_per_worker(&[Cpu, Cpu, Cpu], 2), Some(1));
        assert_eq!(threads_per_worker(&[Cpu], 0), Some(1));
        assert_eq!(threads_per_worker(&[Cuda(0), Cpu, Cuda(1)], 16), Some(16));
        assert_eq!(threads_per_worker(&[Cuda(0), Cuda(1)], 16), None);
        assert_eq!(threads_per_worker(&[], 16), None);
    }

    #[test]
    fn proc_files_give_model_memory_and_bf16_flags() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n\
                       flags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1\n";
        assert_eq!(
            field(cpuinfo, "model name"),
            Some("Intel(R) Xeon(R) Platinum 8480+")
        );
        assert_eq!(field(cpuinfo, "vendor_id"), None);
        let meminfo = "MemTotal:       24683568 kB\nMemFree:        19652196 kB\n";
        assert_eq!(
            field(meminfo, "MemTotal").and_then(kib_bytes),
            Some(24683568 * 1024)
        );
        assert_eq!(kib_bytes("12 MB"), None);
        let info = CpuInfo {
            model: field(cpuinfo, "model name").map(str::to_string),
            cores: 16,
            memory_bytes: Some(128 << 30),
            avx512_bf16: true,
            amx_bf16: false,
        };
        assert_eq!(
            info.line(),
            "cpu: Intel(R) Xeon(R) Platinum 8480+, 16 cores, 128.0 GiB memory, \
             bf16: avx512_bf16 yes, amx_bf16 no"
        );
        let here = cpu_info();
        assert!(here.cores >= 1);
        assert!(here.memory_bytes.is_some_and(|b| b > 0), "{here:?}");
    }
}
