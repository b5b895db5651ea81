//! `virb-host`: evaluates frozen visual encoders by training small heads on downstream tasks.
//! Tasks and encoders come from plugins (`.so` files in the plugin folders).
#![deny(missing_docs)]

mod cli;
mod config;
mod convert;
mod drive;
mod elf;
mod encode;
mod error;
mod features;
mod fixtures;
mod hashing;
mod inspect;
mod libtorch;
mod names;
mod outdir;
mod plan;
mod plugins;
mod preflight;
mod progress;
mod records;
mod runner;
mod selection;
mod splits;
mod store;
mod table;
mod train;
mod yaml_index;

use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};
use virb_plugin_api::{FixtureRequest, LIBTORCH_VERSION, PLUGIN_API_VERSION};

/// Evaluate frozen visual encoders on downstream tasks provided by plugins.
#[derive(Parser)]
#[command(name = "virb-host", version, about, long_about = None)]
struct Cli {
    /// Plugin folder (repeatable). Default: $VIRB_PLUGINS_DIR (`:`-separated), else
    /// <folder of virb-host>/plugins and ~/.local/share/virb/plugins.
    #[arg(long = "plugins-dir", global = true, value_name = "DIR")]
    plugins_dir: Vec<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train and evaluate every job of a virb config for every experiment of an experiment list.
    Run {
        /// Experiment list: YAML mapping experiment name -> weights file.
        #[arg(
            long = "experiment-list",
            alias = "experiment_list",
            value_name = "FILE"
        )]
        experiment_list: PathBuf,
        /// Virb config: YAML mapping job name -> task, training_configs, num_epochs, ...
        #[arg(long = "virb-configs", alias = "virb_configs", value_name = "FILE")]
        virb_configs: PathBuf,
        /// Folder holding the data sets.
        #[arg(long = "data-root", alias = "data_root", default_value = "data")]
        data_root: PathBuf,
        /// Folder for results.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "auto")]
        device: String,
        /// libtorch intra-op threads (default: libtorch's choice).
        #[arg(long, allow_negative_numbers = true, value_parser = cli::threads)]
        threads: Option<i32>,
        /// Image decoding threads (default: number of CPUs).
        #[arg(long = "decode-workers", allow_negative_numbers = true, value_parser = cli::workers)]
        decode_workers: Option<usize>,
        /// Rerun every config, even those whose results are complete (they are overwritten only
        /// when the new result is written).
        #[arg(long)]
        force: bool,
        /// Neither read nor write the on-disk feature cache.
        #[arg(long = "no-cache")]
        no_cache: bool,
        /// Feature cache folder (default: $VIRB_FEATURE_CACHE, else ~/.cache/virb/features).
        #[arg(long = "cache-dir", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Minimum seconds between checkpoints of a training pass (0: after every epoch).
        #[arg(
            long = "checkpoint-every",
            default_value_t = 60.0,
            value_name = "SECONDS",
            allow_negative_numbers = true,
            value_parser = cli::seconds
        )]
        checkpoint_every: f64,
        /// Train every job for at most N epochs: a smoke test of a full config (ViRB's all.yaml
        /// asks for 100-250 epochs). Results record the epochs actually run.
        #[arg(long = "max-epochs", value_name = "N", allow_negative_numbers = true, value_parser = cli::epochs)]
        max_epochs: Option<u32>,
        /// Most bytes of features one split may keep when it is encoded once (`pre_encode: true`,
        /// the default): a split over it is encoded live instead, and the run says so. A pixel-wise
        /// task's pyramid is ~4.6 MB per 224-px image. Accepts `8G`, `500M`, `1.5T` or bytes.
        #[arg(long = "cache-budget", value_name = "BYTES", default_value = "8G", value_parser = cli::bytes)]
        cache_budget: u64,
        /// Most bytes of features one split keeps in memory (the training device's memory for
        /// CUDA): a larger split encoded once is read from a memory-mapped, verified cache file
        /// batch by batch instead, keeping the resident set small.
        #[arg(long = "memory-budget", value_name = "BYTES", default_value = "4G", value_parser = cli::bytes)]
        memory_budget: u64,
    },
    /// Tables (CSV, Markdown) of encoders x tasks and PNG plots from the results in `--out`:
    /// each job's selected config (on validation when the job has a validation split).
    Report {
        /// The folder `virb-host run --out` wrote results into.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Where to write the report (default: <out>/report).
        #[arg(long, value_name = "DIR")]
        dest: Option<PathBuf>,
        /// Tables only, no PNG plots.
        #[arg(long = "no-plots")]
        no_plots: bool,
    },
    /// Show the feature cache's location and size; `--clear` empties it.
    Cache {
        /// Feature cache folder (default: $VIRB_FEATURE_CACHE, else ~/.cache/virb/features).
        #[arg(long = "cache-dir", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Remove every cached split (they are re-encoded when needed).
        #[arg(long)]
        clear: bool,
    },
    /// List plugins found, and files rejected with the reason.
    Plugins,
    /// List the tasks the loaded plugins provide.
    Tasks,
    /// List the encoders the loaded plugins provide.
    Encoders,
    /// Show libtorch, CUDA and the devices virb can use.
    Devices,
    /// Convert a self-supervised project's checkpoint (SwAV, MoCo, PIRL, SimSiam, Exemplar,
    /// humantorch) into a safetensors file of its ResNet trunk under torchvision's names, dropping
    /// every head. Prints what was kept, renamed and dropped.
    Convert {
        /// The checkpoint's layout: swav, moco, pirl, simsiam, exemplar, humantorch, torchvision,
        /// virb; or auto (detect it, and say which).
        #[arg(long, value_name = "LAYOUT")]
        from: String,
        /// The checkpoint (PyTorch zip or legacy format, or safetensors).
        input: PathBuf,
        /// The safetensors file to write (atomically).
        output: PathBuf,
        /// Replace OUTPUT if it exists (otherwise an existing OUTPUT is an error).
        #[arg(long)]
        force: bool,
    },
    /// Show what a weights file holds (format, nesting, tensors with shapes and dtypes, total
    /// parameters, checkpoint layout) and which encoders can load it.
    Inspect {
        /// The weights file.
        weights: PathBuf,
        /// List every tensor (default: the first 40).
        #[arg(long)]
        all: bool,
    },
    /// Write a small synthetic data set in a task's real on-disk layout.
    Fixtures {
        /// Task type (see `virb-host tasks`).
        task: String,
        /// Data root to write under (the task's own folder is created inside).
        data_root: PathBuf,
        /// Number of classes (at least 2; each task has its own maximum).
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = cli::classes)]
        classes: u32,
        /// Training images per class (at least 1).
        #[arg(long = "train-per-class", default_value_t = 12, allow_negative_numbers = true, value_parser = cli::samples)]
        train_per_class: u32,
        /// Test images per class (at least 1).
        #[arg(long = "test-per-class", default_value_t = 8, allow_negative_numbers = true, value_parser = cli::samples)]
        test_per_class: u32,
        /// Approximate image side in pixels (16 to 4096).
        #[arg(long = "image-size", default_value_t = 96, allow_negative_numbers = true, value_parser = cli::image_side)]
        image_size: u32,
        /// Random seed.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = cli::seed)]
        seed: u64,
        /// Replace the task's folder if it exists (otherwise an existing folder is an error: the
        /// new files would mix with the old ones).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    libtorch::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIRB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let dirs = plugins::plugin_dirs(&cli.plugins_dir);
    match cli.command {
        Command::Devices => {
            devices();
            ExitCode::SUCCESS
        }
        Command::Report {
            out,
            dest,
            no_plots,
        } => {
            let opts = virb_report::ReportOptions {
                out,
                dest,
                plots: !no_plots,
            };
            match virb_report::run(&opts) {
                Ok(summary) => {
                    for w in &summary.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!(
                        "report of {} experiment(s) x {} job(s) in {}:",
                        summary.experiments,
                        summary.jobs,
                        summary.dest.display()
                    );
                    for f in &summary.written {
                        println!("  {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Cache { cache_dir, clear } => {
            let cache = match open_cache(cache_dir) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let outcome = if clear {
                cache
                    .clear()
                    .map(|u| format!("feature cache: removed {u} from {}", cache.dir().display()))
            } else {
                cache
                    .usage()
                    .map(|u| format!("feature cache: {u} in {}", cache.dir().display()))
            };
            match outcome {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Plugins => {
            let reg = plugins::Registry::load(dirs);
            print_plugins(&reg);
            ExitCode::SUCCESS
        }
        Command::Tasks => {
            let reg = plugins::Registry::load(dirs);
            warn_rejected(&reg);
            print_tasks(&reg);
            ExitCode::SUCCESS
        }
        Command::Encoders => {
            let reg = plugins::Registry::load(dirs);
            warn_rejected(&reg);
            for e in &reg.encoders {
                let outputs: Vec<String> = e
                    .info
                    .outputs
                    .iter()
                    .map(|o| format!("{}[{}]", o.name, o.channels))
                    .collect();
                println!("{}  ({} {})", e.info.name, e.plugin.name, e.plugin.version);
                println!("  {}", e.info.description);
                println!("  outputs: {}", outputs.join(", "));
                println!("  weights: {}", e.info.weight_formats);
            }
            ExitCode::SUCCESS
        }
        Command::Convert {
            from,
            input,
            output,
            force,
        } => {
            // Reading and copying only: libtorch's worker threads would spin for nothing.
            tch::set_num_threads(1);
            match convert::run(&from, &input, &output, force) {
                Ok(lines) => {
                    lines.iter().for_each(|l| println!("{l}"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Inspect { weights, all } => {
            // Reading, comparing and copying only (the encoders' checks build no network on a
            // worker thread): libtorch's worker threads would spin for nothing.
            tch::set_num_threads(1);
            let reg = plugins::Registry::load(dirs);
            warn_rejected(&reg);
            match inspect::run(&reg, &weights, all) {
                Ok(lines) => {
                    lines.iter().for_each(|l| println!("{l}"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Fixtures {
            task,
            data_root,
            classes,
            train_per_class,
            test_per_class,
            image_size,
            seed,
            force,
        } => {
            let reg = plugins::Registry::load(dirs);
            warn_rejected(&reg);
            let request = FixtureRequest {
                data_root: data_root.to_string_lossy().as_ref().into(),
                classes,
                train_per_class,
                test_per_class,
                image_size,
                seed,
                options_json: "{}".into(),
            };
            match fixtures::write(&reg, &task, &data_root, request, force) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run {
            experiment_list,
            virb_configs,
            data_root,
            out,
            device,
            threads,
            decode_workers,
            force,
            no_cache,
            cache_dir,
            checkpoint_every,
            max_epochs,
            cache_budget,
            memory_budget,
        } => {
            if let Some(n) = threads {
                tch::set_num_threads(n);
            }
            let device = match libtorch::resolve_device(&device) {
                Ok(d) => d,
                Err(e) => return fail(&e),
            };
            let cache = if no_cache {
                None
            } else {
                match open_cache(cache_dir) {
                    Ok(c) => {
                        // Temporary files of writers killed long ago.
                        let _ = c.clean_stale_temps(std::time::Duration::from_secs(24 * 3600));
                        Some(c)
                    }
                    Err(e) => return fail(&format!("{e} (or pass --no-cache)")),
                }
            };
            let reg = plugins::Registry::load(dirs);
            warn_rejected(&reg);
            let opts = plan::RunOptions {
                force,
                cache,
                checkpoint_every: std::time::Duration::from_secs_f64(checkpoint_every),
                max_epochs,
                cache_budget,
                memory_budget,
                experiment_list,
                virb_configs,
                data_root,
                out,
                device,
                decode_workers: decode_workers.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                }),
            };
            eprintln!(
                "virb {}: device {}, {} libtorch thread(s)",
                env!("CARGO_PKG_VERSION"),
                virb_plugin_api::device_name(device),
                tch::get_num_threads()
            );
            match runner::run(&opts, &reg) {
                Ok(summary) => {
                    println!("{}", table::table(&summary.rows));
                    if summary.rows.iter().any(|r| r.selected) {
                        println!("* selected config of its job (see <out>/<experiment>/<job>.selection.json)");
                    }
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
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The feature cache in `dir`, or in the default folder.
fn open_cache(dir: Option<PathBuf>) -> Result<virb_feature_cache::Cache, String> {
    let dir = match dir {
        Some(d) => d,
        None => virb_feature_cache::Cache::default_dir().map_err(|e| e.to_string())?,
    };
    virb_feature_cache::Cache::open(dir).map_err(|e| e.to_string())
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn warn_rejected(reg: &plugins::Registry) {
    for r in &reg.rejected {
        eprintln!(
            "warning: plugin {} rejected: {}",
            r.path.display(),
            r.reason
        );
    }
}

fn print_plugins(reg: &plugins::Registry) {
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

fn print_tasks(reg: &plugins::Registry) {
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

fn devices() {
    let status = libtorch::init_cuda(true);
    println!("virb-host {}", env!("CARGO_PKG_VERSION"));
    println!("plugin-api {PLUGIN_API_VERSION}");
    println!("libtorch {LIBTORCH_VERSION}");
    match libtorch::loaded_lib_dir() {
        Some(d) => println!("libtorch loaded from {}", d.display()),
        None => println!("libtorch location unknown"),
    }
    println!("cpu threads (libtorch): {}", tch::get_num_threads());
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
}
