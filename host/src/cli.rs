//! The command line: `virb-host`'s commands and flags, and the parsers of numeric values, each
//! saying what its flag expects, so that `--threads -3` is "expects a positive number of
//! threads" instead of clap's "unexpected argument '-3'" (the flags also accept values that look
//! negative, so that they reach these parsers).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Evaluate frozen visual encoders on downstream tasks provided by plugins.
#[derive(Parser)]
#[command(name = "virb-host", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Plugin folder (repeatable). Default: $VIRB_PLUGINS_DIR (`:`-separated), else
    /// <folder of virb-host>/plugins and ~/.local/share/virb/plugins.
    #[arg(long = "plugins-dir", global = true, value_name = "DIR")]
    pub(crate) plugins_dir: Vec<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

// `Slurm` holds a run's arguments: parsed once, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Train and evaluate every job of a virb config for every experiment of an experiment list.
    Run(crate::run_args::RunArgs),
    /// Print what `run` with the same arguments would do, without doing it (`run --dry-run`).
    Plan(crate::run_args::RunArgs),
    /// Submit a run to Slurm as job arrays, or show a submitted run's progress.
    Slurm {
        #[command(subcommand)]
        command: SlurmCommand,
    },
    /// Show the site defaults (`./virb.toml`, `~/.config/virb/config.toml`) and where each
    /// value comes from.
    Config,
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
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = crate::cli::classes)]
        classes: u32,
        /// Training images per class (at least 1).
        #[arg(long = "train-per-class", default_value_t = 12, allow_negative_numbers = true, value_parser = crate::cli::samples)]
        train_per_class: u32,
        /// Test images per class (at least 1).
        #[arg(long = "test-per-class", default_value_t = 8, allow_negative_numbers = true, value_parser = crate::cli::samples)]
        test_per_class: u32,
        /// Approximate image side in pixels (16 to 4096).
        #[arg(long = "image-size", default_value_t = 96, allow_negative_numbers = true, value_parser = crate::cli::image_side)]
        image_size: u32,
        /// Random seed.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = crate::cli::seed)]
        seed: u64,
        /// Replace the task's folder if it exists (otherwise an existing folder is an error: the
        /// new files would mix with the old ones).
        #[arg(long)]
        force: bool,
    },
}

/// `virb-host slurm ...`.
// `Submit` holds a run's arguments: parsed once, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum SlurmCommand {
    /// Submit the run's pending (experiment, job) units as Slurm job arrays; each array task runs
    /// `virb-host run` as a worker on the shared `--out`. Options not given here come from the
    /// `[slurm]` section of the site config (`virb-host config`).
    Submit {
        /// Slurm partition (`sbatch --partition`).
        #[arg(long)]
        partition: Option<String>,
        /// Slurm account (`sbatch --account`).
        #[arg(long)]
        account: Option<String>,
        /// Generic resources per task, e.g. `gpu:1` (`sbatch --gres`).
        #[arg(long)]
        gres: Option<String>,
        /// Time limit per task, e.g. `12:00:00` (`sbatch --time`).
        #[arg(long)]
        time: Option<String>,
        /// CPUs per task (`sbatch --cpus-per-task`).
        #[arg(long = "cpus-per-task", allow_negative_numbers = true, value_parser = crate::cli::workers)]
        cpus_per_task: Option<usize>,
        /// Memory per task, e.g. `64G` (`sbatch --mem`).
        #[arg(long)]
        mem: Option<String>,
        /// Most array tasks running at once (`--array=0-N%K`).
        #[arg(long = "max-parallel", allow_negative_numbers = true, value_parser = crate::cli::workers)]
        max_parallel: Option<usize>,
        /// Any other `sbatch` option, passed verbatim (repeatable), e.g. `--sbatch-arg=--qos=high`.
        #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
        sbatch_args: Vec<String>,
        /// The run, as `virb-host run` takes it.
        #[command(flatten)]
        run: crate::run_args::RunArgs,
    },
    /// Progress of the runs submitted to `--out`: each unit done, running, failed or pending,
    /// and the Slurm queue.
    Status {
        /// The run's `--out` folder.
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
}

fn integer<T: std::str::FromStr>(s: &str, expects: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expects {expects}, got `{s}`"))
}

fn at_least<T: TryFrom<i128>>(s: &str, min: i128, max: i128, expects: &str) -> Result<T, String> {
    let bad = || format!("expects {expects}, got `{s}`");
    let v: i128 = s.trim().parse().map_err(|_| bad())?;
    if v < min || v > max {
        return Err(bad());
    }
    T::try_from(v).map_err(|_| bad())
}

/// `--threads`: libtorch threads, 1 or more.
pub fn threads(s: &str) -> Result<i32, String> {
    at_least(s, 1, 1024, "a number of threads from 1 to 1024")
}

/// `--decode-workers`: image decoding threads, 1 or more.
pub fn workers(s: &str) -> Result<usize, String> {
    at_least(s, 1, 1024, "a number of decoding threads from 1 to 1024")
}

/// `--max-epochs`: 1 or more.
pub fn epochs(s: &str) -> Result<u32, String> {
    at_least(s, 1, u32::MAX as i128, "a number of epochs of at least 1")
}

/// `--checkpoint-every`: seconds, 0 or more.
pub fn seconds(s: &str) -> Result<f64, String> {
    let expects = "a number of seconds >= 0 (0: after every epoch)";
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expects {expects}, got `{s}`")),
    }
}

/// `--shard-samples`: 0 (never) or a number of samples.
pub fn shard_samples(s: &str) -> Result<usize, String> {
    at_least(s, 0, 1 << 40, "a number of samples (0: never shard)")
}

/// `--lease`: seconds, 1 to a day.
pub fn lease(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (1.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expects a number of seconds from 1 to 86400 (a day), got `{s}`"
        )),
    }
}

/// `fixtures --classes`: 2 or more (each task has its own maximum).
pub fn classes(s: &str) -> Result<u32, String> {
    at_least(
        s,
        2,
        100_000,
        "a number of classes of at least 2 (a classifier needs two)",
    )
}

/// `fixtures --train-per-class`, `--test-per-class`: 1 or more.
pub fn samples(s: &str) -> Result<u32, String> {
    at_least(
        s,
        1,
        100_000,
        "a number of images per class of at least 1 (a split without samples is not a usable data set)",
    )
}

/// `fixtures --image-size`: pixels, 16 to 4096 (the sizes a job's `image_size` accepts).
pub fn image_side(s: &str) -> Result<u32, String> {
    at_least(s, 16, 4096, "an image side from 16 to 4096 pixels")
}

/// `fixtures --seed`: any non-negative integer.
pub fn seed(s: &str) -> Result<u64, String> {
    integer(s, "a non-negative integer")
}

/// A byte count: a number with an optional `K`, `M`, `G` or `T` suffix (powers of 1024; `B`,
/// `iB` and lower case accepted), e.g. `8G`, `1.5T`, `500M`, `4096`.
pub fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok((v * mult as f64) as u64),
        _ => Err(format!(
            "`{s}` is not a size: give bytes or a number with K, M, G or T (e.g. 8G)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flag_says_what_it_expects() {
        assert_eq!(threads("4"), Ok(4));
        assert_eq!(
            threads("-3"),
            Err("expects a number of threads from 1 to 1024, got `-3`".into())
        );
        assert!(threads("0").is_err() && threads("x").is_err());
        assert_eq!(seconds("0"), Ok(0.0));
        assert!(seconds("-1")
            .expect_err("negative")
            .contains("seconds >= 0"));
        assert!(seconds("nan").is_err() && seconds("inf").is_err());
        assert!(classes("0").expect_err("zero").contains("at least 2"));
        assert!(samples("0").is_err() && samples("1").is_ok());
        assert!(image_side("0").is_err() && image_side("16").is_ok());
        assert!(seed("-1").expect_err("negative").contains("non-negative"));
        assert!(workers("99999999999999999999999").is_err());
        assert_eq!(bytes("8G"), Ok(8 << 30));
        assert_eq!(bytes("1.5KiB"), Ok(1536));
        assert_eq!(bytes("500m"), Ok(500 << 20));
        assert_eq!(bytes("4096"), Ok(4096));
        assert!(bytes("-1G").expect_err("negative").contains("not a size"));
        assert!(bytes("lots").is_err());
    }
}
