//! The commands that take a run's arguments: `run` (one worker here, or one per device),
//! `plan` (`run --dry-run`) and `slurm submit`. Each turns the arguments and the site defaults
//! into [`RunOptions`], loads the plugins and surveys the run ([`crate::runner::surveyed`]).
use crate::plan::RunOptions;
use crate::run_args::RunArgs;
use crate::{libtorch, listing, plugins, runner, table};
use std::{path::PathBuf, process::ExitCode};
use tch::Device;

/// Samples per shard of a split's encoding when a run has several devices.
pub(crate) const DEFAULT_SHARD_SAMPLES: usize = 16384;

/// Exit code of a run that could not start (bad arguments or configs, problems).
const SETUP_FAILED: u8 = 2;

/// The run's options and its devices (one worker each).
pub(crate) fn options(
    args: &RunArgs,
    site: &crate::site::Site,
) -> Result<(RunOptions, Vec<Device>), String> {
    let devices = match (&args.device, &args.devices) {
        (Some(one), _) => vec![libtorch::resolve_device(one)?],
        (None, Some(list)) => parse_devices(list)?,
        (None, None) => match &site.devices {
            Some(set) => parse_devices(&set.value)
                .map_err(|e| format!("{e} (`run.devices`, {})", set.source))?,
            None => vec![libtorch::resolve_device("auto")?],
        },
    };
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let cache = if args.no_cache {
        None
    } else {
        let dir = crate::site::pick(args.cache_dir.clone(), &site.cache_dir).map(|s| s.value);
        let c = open_cache(dir).map_err(|e| format!("{e} (or pass --no-cache)"))?;
        // Temporary files of writers killed long ago.
        let _ = c.clean_stale_temps(std::time::Duration::from_secs(24 * 3600));
        Some(c)
    };
    let opts = RunOptions {
        experiment_list: args.experiment_list.clone(),
        virb_configs: args.virb_configs.clone(),
        data_root: crate::site::pick(args.data_root.clone(), &site.data_root)
            .map_or_else(|| PathBuf::from("data"), |s| s.value),
        out: crate::site::pick(args.out.clone(), &site.out)
            .map_or_else(|| PathBuf::from("out"), |s| s.value),
        device: devices.first().copied().unwrap_or(Device::Cpu),
        decode_workers: args.decode_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        force: args.force,
        cache,
        checkpoint_every: std::time::Duration::from_secs_f64(args.checkpoint_every),
        max_epochs: args.max_epochs,
        cache_budget: args.cache_budget,
        memory_budget: args.memory_budget,
        keep_going: args.keep_going,
        only: args.only.clone(),
        lease: std::time::Duration::from_secs_f64(args.lease),
        run_id: crate::schedule::new_run_id(),
        precision: crate::precision::resolve(
            args.precision
                .clone()
                .or_else(|| std::env::var(crate::precision::ENV).ok())
                .as_deref()
                .unwrap_or("auto"),
            devices.first().copied().unwrap_or(Device::Cpu),
        )?,
        shard_samples: match args.shard_samples {
            Some(0) => None,
            Some(n) => Some(n),
            None if devices.len() > 1 => Some(DEFAULT_SHARD_SAMPLES),
            None => None,
        },
    };
    Ok((opts, devices))
}

fn parse_devices(list: &str) -> Result<Vec<Device>, String> {
    let status = libtorch::init_cuda(list.contains("cuda") || list.contains("all"));
    crate::devices::parse_devices(list, status.device_count.max(0) as usize)
        .map_err(|e| format!("--devices: {e}"))
}

/// The feature cache in `dir`, or in the default folder.
pub(crate) fn open_cache(dir: Option<PathBuf>) -> Result<virb_feature_cache::Cache, String> {
    let dir = match dir {
        Some(d) => d,
        None => virb_feature_cache::Cache::default_dir().map_err(|e| e.to_string())?,
    };
    virb_feature_cache::Cache::open(dir).map_err(|e| e.to_string())
}

/// The site defaults, or the error that stops every command that uses them.
pub(crate) fn site() -> Result<crate::site::Site, ExitCode> {
    crate::site::load().map_err(|e| fail(&e.to_string()))
}

/// `virb-host run` (and `plan`, which is `run --dry-run`).
pub(crate) fn run(args: &RunArgs, plugin_flags: &[PathBuf]) -> ExitCode {
    let site = match site() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (opts, devices) = match options(args, &site) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let dirs = plugin_dirs(plugin_flags, &site);
    let reg = plugins::Registry::load(dirs);
    listing::warn_rejected(&reg);
    if args.dry_run {
        let cache_dir = opts.cache.as_ref().map(|c| c.dir().to_path_buf());
        return match runner::surveyed(&opts, &reg, |_, survey| {
            let problems = survey.problems().len();
            crate::plan_print::lines(survey, cache_dir.as_deref())
                .iter()
                .for_each(|l| println!("{l}"));
            problems
        }) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => fail(&e.to_string()),
        };
    }
    let names: Vec<String> = devices
        .iter()
        .map(|d| virb_plugin_api::device_name(*d))
        .collect();
    eprintln!(
        "virb {}: {} {}, {} libtorch thread(s){}",
        env!("CARGO_PKG_VERSION"),
        if devices.len() > 1 {
            "devices"
        } else {
            "device"
        },
        names.join(", "),
        tch::get_num_threads(),
        if devices.len() > 1 { " each" } else { "" }
    );
    let launch = (devices.len() > 1).then(|| crate::workers::Launch {
        args,
        devices: devices.clone(),
        plugin_dirs: plugin_flags.to_vec(),
    });
    match runner::run(&opts, &reg, launch.as_ref()) {
        Ok(summary) => {
            let printed = |rows: &[table::Row]| {
                let mut text = format!("{}\n", table::table(rows));
                if rows.iter().any(|r| r.selected) {
                    text.push_str(
                        "* selected config of its job (see <out>/<experiment>/<job>.selection.json)\n",
                    );
                }
                text
            };
            print!("{}", printed(&summary.rows));
            let complete = summary.failures == 0 && !args.force;
            // An identical rerun finds every result done earlier, and says so.
            let rerun = printed(&table::as_rerun(&summary.rows));
            crate::rerun_stamp::update(&opts, &reg, &rerun, complete);
            if let Some(cache) = &opts.cache {
                match cache.usage() {
                    Ok(u) => eprintln!("feature cache: {u} in {}", cache.dir().display()),
                    Err(e) => eprintln!("feature cache: {e}"),
                }
            }
            if summary.failures > 0 {
                eprintln!(
                    "{} of {} result(s) failed; see the errors above",
                    summary.failures,
                    summary.rows.len()
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            crate::rerun_stamp::update(&opts, &reg, "", false);
            eprintln!("error: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    }
}

/// The plugin folders: those given as flags (else the defaults), then the site config's.
pub(crate) fn plugin_dirs(flags: &[PathBuf], site: &crate::site::Site) -> Vec<plugins::PluginDir> {
    let mut dirs = plugins::plugin_dirs(flags);
    if let Some(extra) = &site.plugins_dir {
        dirs.extend(extra.value.iter().map(|p| plugins::PluginDir {
            path: p.clone(),
            origin: "the site config's paths.plugins_dir",
        }));
    }
    dirs
}

/// Prints `error: <message>`; exit code 2.
pub(crate) fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(SETUP_FAILED)
}
