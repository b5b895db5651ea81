//! The arguments of a run, as `run`, `plan` and `slurm submit` take them: parsed by clap,
//! completed from the site defaults (`virb.toml`: a flag wins over a file, a file over the
//! built-in default), and written back as a command line for the workers a run starts (one
//! per device, or one per Slurm array task), so that every worker runs exactly the same run.
use clap::Args;
use std::{ffi::OsString, path::PathBuf};

/// The arguments of a run (`run`, `plan`, `slurm submit`).
#[derive(Args, Clone, Debug)]
pub(crate) struct RunArgs {
    /// Experiment list: YAML mapping experiment name -> weights file.
    #[arg(
        long = "experiment-list",
        alias = "experiment_list",
        value_name = "FILE"
    )]
    pub(crate) experiment_list: PathBuf,
    /// Virb config: YAML mapping job name -> task, training_configs, num_epochs, ...
    #[arg(long = "virb-configs", alias = "virb_configs", value_name = "FILE")]
    pub(crate) virb_configs: PathBuf,
    /// Folder holding the data sets (default: the site config's `paths.data_root`, else `data`).
    #[arg(long = "data-root", alias = "data_root", value_name = "DIR")]
    pub(crate) data_root: Option<PathBuf>,
    /// Folder for results (default: the site config's `paths.out`, else `out`). Several
    /// workers (processes, machines) may share one: each (experiment, job) is claimed by one.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// One device: `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`. Same as
    /// `--devices` with one entry.
    #[arg(long, conflicts_with = "devices")]
    pub(crate) device: Option<String>,
    /// Devices to run on, one worker each, e.g. `all` (every visible CUDA device, else the
    /// CPU), `cuda:0,cuda:1`, `cpu,cpu` (two CPU workers sharing the cores). Default: the site
    /// config's `run.devices`, else `auto` (one device).
    #[arg(long, value_name = "LIST")]
    pub(crate) devices: Option<String>,
    /// libtorch intra-op threads per worker (default: libtorch's choice; with several CPU
    /// workers, the cores divided among them).
    #[arg(long, allow_negative_numbers = true, value_parser = crate::cli::threads)]
    pub(crate) threads: Option<i32>,
    /// Image decoding threads (default: number of CPUs).
    #[arg(long = "decode-workers", allow_negative_numbers = true, value_parser = crate::cli::workers)]
    pub(crate) decode_workers: Option<usize>,
    /// Rerun every config, even those whose results are complete (they are overwritten only
    /// when the new result is written).
    #[arg(long)]
    pub(crate) force: bool,
    /// Neither read nor write the on-disk feature cache.
    #[arg(long = "no-cache")]
    pub(crate) no_cache: bool,
    /// Feature cache folder (default: the site config's `paths.cache_dir`, else
    /// $VIRB_FEATURE_CACHE, else ~/.cache/virb/features).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Minimum seconds between checkpoints of a training pass (0: after every epoch).
    #[arg(
        long = "checkpoint-every",
        default_value_t = 60.0,
        value_name = "SECONDS",
        allow_negative_numbers = true,
        value_parser = crate::cli::seconds
    )]
    pub(crate) checkpoint_every: f64,
    /// Train every job for at most N epochs: a smoke test of a full config (ViRB's all.yaml
    /// asks for 100-250 epochs). Results record the epochs actually run.
    #[arg(long = "max-epochs", value_name = "N", allow_negative_numbers = true, value_parser = crate::cli::epochs)]
    pub(crate) max_epochs: Option<u32>,
    /// Most bytes of features one split may keep when it is encoded once (`pre_encode: true`,
    /// the default): a split over it is encoded live instead, and the run says so. A pixel-wise
    /// task's pyramid is ~4.6 MB per 224-px image. Accepts `8G`, `500M`, `1.5T` or bytes.
    #[arg(long = "cache-budget", value_name = "BYTES", default_value = "8G", value_parser = crate::cli::bytes)]
    pub(crate) cache_budget: u64,
    /// Most bytes of features one split keeps in memory (the training device's memory for
    /// CUDA): a larger split encoded once is read from a memory-mapped, verified cache file
    /// batch by batch instead, keeping the resident set small.
    #[arg(long = "memory-budget", value_name = "BYTES", default_value = "4G", value_parser = crate::cli::bytes)]
    pub(crate) memory_budget: u64,
    /// Print the plan (every experiment, job and config: done, cached, to encode, to train;
    /// samples per split; weights files; feature cache disk) and stop.
    #[arg(long = "dry-run")]
    pub(crate) dry_run: bool,
    /// Run what can run when some experiments or jobs have problems (missing weights, data
    /// folders): without it, a run with any problem lists them all and starts nothing.
    #[arg(long = "keep-going")]
    pub(crate) keep_going: bool,
    /// Only these units of work (repeatable): `EXPERIMENT/JOB`, `EXPERIMENT` (all its jobs) or
    /// `*/JOB` (the job of every experiment).
    #[arg(long, value_name = "EXP/JOB")]
    pub(crate) only: Vec<String>,
    /// Seconds a worker's claim on a unit of work lasts without a heartbeat: a worker that
    /// dies is taken over by another after this long (at once on the same machine). Keep it
    /// well above the clock skew between machines sharing `--out`.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS", allow_negative_numbers = true, value_parser = crate::cli::lease)]
    pub(crate) lease: f64,
    /// Encode a split of more than N samples in shards of about N that the other workers on
    /// the same `--out` help with when they have nothing else to do (default: 16384 with
    /// several devices, else never; 0: never).
    #[arg(long = "shard-samples", value_name = "N", allow_negative_numbers = true, value_parser = crate::cli::shard_samples)]
    pub(crate) shard_samples: Option<usize>,
    /// The type frozen encoders compute in, for each experiment whose encoder takes a
    /// `precision` option and whose entry does not set one: `auto` (the default, or
    /// `$VIRB_PRECISION`): bf16 on a device that computes it natively (a CUDA device of compute
    /// capability 8.0 or later, a CPU with AMX or AVX-512 bf16 instructions), fp32 elsewhere;
    /// or `fp32`, `bf16`, `fp16`. Part of every cache key and result; fine-tuning always
    /// trains in fp32.
    #[arg(long, value_name = "TYPE", value_parser = ["auto", "fp32", "bf16", "fp16"])]
    pub(crate) precision: Option<String>,
}

impl RunArgs {
    /// The command line (after `run`) that runs these arguments again, for a worker. The
    /// site defaults are resolved first, so that a worker on another machine (another
    /// `virb.toml`) runs the same run; `--dry-run` and `--devices` are left for the caller.
    pub(crate) fn to_argv(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            a.push(name.into());
            a.push(value);
        };
        flag("--experiment-list", absolute(&self.experiment_list).into());
        flag("--virb-configs", absolute(&self.virb_configs).into());
        if let Some(d) = &self.data_root {
            flag("--data-root", absolute(d).into());
        }
        if let Some(o) = &self.out {
            flag("--out", absolute(o).into());
        }
        if let Some(t) = self.threads {
            flag("--threads", t.to_string().into());
        }
        if let Some(w) = self.decode_workers {
            flag("--decode-workers", w.to_string().into());
        }
        if let Some(c) = &self.cache_dir {
            flag("--cache-dir", absolute(c).into());
        }
        flag(
            "--checkpoint-every",
            self.checkpoint_every.to_string().into(),
        );
        if let Some(m) = self.max_epochs {
            flag("--max-epochs", m.to_string().into());
        }
        flag("--cache-budget", self.cache_budget.to_string().into());
        flag("--memory-budget", self.memory_budget.to_string().into());
        flag("--lease", self.lease.to_string().into());
        if let Some(n) = self.shard_samples {
            flag("--shard-samples", n.to_string().into());
        }
        if let Some(p) = &self.precision {
            flag("--precision", p.into());
        }
        for o in &self.only {
            flag("--only", o.into());
        }
        if self.force {
            a.push("--force".into());
        }
        if self.no_cache {
            a.push("--no-cache".into());
        }
        if self.keep_going {
            a.push("--keep-going".into());
        }
        a
    }
}

/// `path` made absolute against the working directory (workers may start elsewhere).
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn argv_round_trips() {
        let parsed = Wrap::parse_from([
            "x",
            "--experiment-list",
            "e.yaml",
            "--virb-configs",
            "/abs/v y.yaml",
            "--out",
            "o",
            "--max-epochs",
            "2",
            "--only",
            "a/b",
            "--only",
            "*/c",
            "--force",
            "--keep-going",
            "--lease",
            "30",
            "--cache-budget",
            "1G",
            "--precision",
            "bf16",
        ])
        .run;
        let argv = parsed.to_argv();
        let again = Wrap::parse_from(std::iter::once(OsString::from("x")).chain(argv)).run;
        assert_eq!(again.only, vec!["a/b".to_string(), "*/c".to_string()]);
        assert_eq!(again.virb_configs, PathBuf::from("/abs/v y.yaml"));
        assert!(again.experiment_list.is_absolute() && again.out.is_some_and(|o| o.is_absolute()));
        assert_eq!(again.max_epochs, Some(2));
        assert_eq!(again.precision.as_deref(), Some("bf16"));
        assert!(again.force && again.keep_going && !again.no_cache && !again.dry_run);
        assert_eq!((again.lease, again.cache_budget), (30.0, 1 << 30));
    }
}
