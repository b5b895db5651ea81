//! Several devices on one machine: one worker process per device, all running the same run on
//! the same `--out` with one run id, each taking units as [`crate::schedule`] says (longest
//! first, claimed, so that every unit is done once and no device idles while work is left).
//!
//! Processes rather than threads: each device gets its own CUDA context and allocator, a worker
//! that crashes (a plugin's abort, the kernel's OOM killer) takes no other down, and the units
//! it held are taken over by the others as soon as it is gone. Each worker's messages are
//! prefixed with its device.
use crate::run_args::RunArgs;
use std::{
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
};
use tch::Device;

/// How the workers ended: per worker, its device and exit status.
pub(crate) struct WorkersOutcome {
    /// `(device, exit code)`; None when killed by a signal.
    pub exits: Vec<(String, Option<i32>)>,
}

/// What starting the workers takes.
pub(crate) struct Launch<'a> {
    /// The run's arguments (each worker gets them, with its own device).
    pub args: &'a RunArgs,
    /// One worker per device.
    pub devices: Vec<Device>,
    /// The plugin folders this process loaded from.
    pub plugin_dirs: Vec<PathBuf>,
}

/// Starts one worker per device and waits for all of them.
pub(crate) fn run_workers(launch: &Launch<'_>, run_id: &str) -> Result<WorkersOutcome, String> {
    let (args, devices, plugin_dirs) = (launch.args, &launch.devices, &launch.plugin_dirs);
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the virb-host binary to start workers: {e}"))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let threads = args
        .threads
        .or_else(|| crate::devices::threads_per_worker(devices, cores));
    let decode = args
        .decode_workers
        .unwrap_or_else(|| (cores / devices.len()).max(1));
    let mut children = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        let name = virb_plugin_api::device_name(*dev);
        let mut argv: Vec<OsString> = Vec::new();
        for d in plugin_dirs {
            argv.push("--plugins-dir".into());
            argv.push(d.into());
        }
        argv.push("run".into());
        argv.extend(args.to_argv());
        argv.push("--devices".into());
        argv.push(name.clone().into());
        if args.threads.is_none() {
            if let Some(t) = threads {
                argv.push("--threads".into());
                argv.push(t.to_string().into());
            }
        }
        if args.shard_samples.is_none() {
            argv.push("--shard-samples".into());
            argv.push(crate::run_cmd::DEFAULT_SHARD_SAMPLES.to_string().into());
        }
        if args.decode_workers.is_none() {
            argv.push("--decode-workers".into());
            argv.push(decode.to_string().into());
        }
        let mut child = Command::new(&exe)
            .args(&argv)
            .env("VIRB_RUN_ID", run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the worker for {name}: {e}"))?;
        let prefix = format!("[worker {i} {name}] ");
        let relay = child.stderr.take().map(|err| {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut e = std::io::stderr().lock();
                    let _ = writeln!(e, "{prefix}{line}");
                }
            })
        });
        children.push((name, child, relay));
    }
    eprintln!(
        "{} worker(s) started ({}), run {run_id}",
        children.len(),
        children
            .iter()
            .map(|(n, c, _)| format!("{n}: pid {}", c.id()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut exits = Vec::new();
    for (name, mut child, relay) in children {
        let status = child.wait().map_err(|e| format!("worker {name}: {e}"))?;
        if let Some(r) = relay {
            let _ = r.join();
        }
        exits.push((name, status.code()));
    }
    Ok(WorkersOutcome { exits })
}
