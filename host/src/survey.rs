//! The whole run surveyed before any work: every experiment's weights file (found, size, hash),
//! every (experiment, job) unit with its splits (samples, cached or not, the disk its features
//! take) and its configs (complete or not), and every problem found on the way, all at once.
//!
//! The survey is what `--dry-run` prints ([`crate::plan_print`]), what `run` refuses to start
//! on while it lists problems (unless `--keep-going`), and what the workers
//! ([`crate::schedule`]) and the Slurm submission divide: units in longest-first order, with an
//! eval-only unit after the units whose heads it evaluates.
use crate::config::{Experiment, JobConfig, VirbConfig};
use crate::error::plugin;
use crate::hashing::hash_json;
use crate::outdir;
use crate::plan::{job_identity, Ctx, ExpCtx, JobPlan};
use crate::plugins::{EncoderEntry, TaskEntry};
use crate::records::complete_result;
use virb_plugin_api::{DatasetMeta, Split};

/// One experiment as surveyed.
pub(crate) struct ExpSurvey<'a> {
    /// The experiment.
    pub exp: &'a Experiment,
    /// Its encoder plugin entry, and the weights' size and SHA-256; or why not.
    pub ready: Result<(&'a EncoderEntry, u64, String), String>,
}

/// One split of a unit as surveyed.
pub(crate) struct SplitSurvey {
    /// Train or test.
    pub split: Split,
    /// Samples found.
    pub samples: u64,
    /// Whether the feature cache holds the split's features.
    pub cached: bool,
    /// About the bytes its features take in the cache (0 when the split is encoded live).
    pub cache_bytes: u64,
}

/// One config of a unit.
pub(crate) struct ConfigSurvey {
    /// Its name.
    pub name: String,
    /// The hash its complete `results.json` carries.
    pub hash: String,
    /// Whether that result is complete (and `--force` is not given).
    pub done: bool,
}

/// One unit of work: an (experiment, job), claimed by one worker at a time.
pub(crate) struct Unit<'a> {
    /// Index into [`Survey::experiments`].
    pub exp: usize,
    /// The job's name.
    pub job_name: &'a str,
    /// The job.
    pub job: &'a JobConfig,
    /// Whether the job evaluates heads that other jobs train (then `sources` names them).
    pub eval_only: bool,
    /// The jobs of the same experiment whose heads it evaluates.
    pub sources: Vec<&'a str>,
    /// Its splits (train and test; test only for eval-only jobs).
    pub splits: Vec<SplitSurvey>,
    /// Its configs (an eval-only job: those of its sources' configs).
    pub configs: Vec<ConfigSurvey>,
    /// Relative cost, for longest-first scheduling (samples x passes over them).
    pub cost: f64,
    /// Why the unit cannot run (its experiment's problem, or its data's).
    pub problem: Option<String>,
}

impl Unit<'_> {
    /// Whether every config is complete.
    pub fn done(&self) -> bool {
        !self.configs.is_empty() && self.configs.iter().all(|c| c.done)
    }
}

/// The surveyed run.
pub(crate) struct Survey<'a> {
    /// Experiments in list order.
    pub experiments: Vec<ExpSurvey<'a>>,
    /// Units, longest first (eval-only units after their sources).
    pub units: Vec<Unit<'a>>,
}

impl Survey<'_> {
    /// Every problem, one line each, in list order.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.experiments {
            if let Err(why) = &e.ready {
                out.push(format!("experiment `{}`: {why}", e.exp.name));
            }
        }
        for u in &self.units {
            if let (Some(p), Ok(_)) = (&u.problem, &self.experiments[u.exp].ready) {
                out.push(format!(
                    "experiment `{}`, job `{}`: {p}",
                    self.experiments[u.exp].exp.name, u.job_name
                ));
            }
        }
        out
    }

    /// `experiment/job` of a unit.
    pub fn label(&self, u: &Unit<'_>) -> String {
        format!("{}/{}", self.experiments[u.exp].exp.name, u.job_name)
    }
}

/// Whether `--only` patterns select `experiment/job` (no patterns: everything).
pub(crate) fn selected(only: &[String], experiment: &str, job: &str) -> bool {
    let matches = |pat: &str, name: &str| pat == "*" || pat == name;
    only.is_empty()
        || only.iter().any(|p| match p.split_once('/') {
            Some((e, j)) => matches(e, experiment) && matches(j, job),
            None => matches(p, experiment),
        })
}

/// Surveys the run: `jobs` in the config's order, eval-only ones last.
pub(crate) fn survey<'a>(
    ctx: &Ctx<'a>,
    experiments: &'a [Experiment],
    virb: &'a VirbConfig,
) -> Survey<'a> {
    let opts = ctx.opts;
    // Only the experiments `--only` selects are looked at (their problems are the run's).
    let exps: Vec<ExpSurvey<'a>> = experiments
        .iter()
        .filter(|exp| virb.jobs.keys().any(|j| selected(&opts.only, &exp.name, j)))
        .map(|exp| ExpSurvey {
            exp,
            ready: check_experiment(ctx, exp),
        })
        .collect();
    let mut units = Vec::new();
    for (ei, es) in exps.iter().enumerate() {
        for (job_name, job) in &virb.jobs {
            if !selected(&opts.only, &es.exp.name, job_name) {
                continue;
            }
            let Ok(task) = ctx.registry.task(&job.task) else {
                continue;
            };
            let source = task.info.evaluates_heads_of.to_string();
            let sources: Vec<&str> = virb
                .jobs
                .iter()
                .filter(|(_, j)| !source.is_empty() && j.task == source)
                .map(|(n, _)| n.as_str())
                .collect();
            let mut unit = Unit {
                exp: ei,
                job_name,
                job,
                eval_only: !source.is_empty(),
                sources,
                splits: Vec::new(),
                configs: Vec::new(),
                cost: 0.0,
                problem: None,
            };
            if let Ok((entry, _, sha)) = &es.ready {
                let ec = ExpCtx {
                    exp: es.exp,
                    entry,
                    weights_sha256: sha.clone(),
                    encoder: std::cell::OnceCell::new(),
                };
                if let Err(e) = survey_unit(ctx, &ec, task, virb, &mut unit) {
                    unit.problem = Some(e);
                }
            }
            units.push(unit);
        }
    }
    // Longest first; an eval-only unit after every unit (of any experiment) so that its
    // sources, which come earlier, are started before it.
    units.sort_by(|a, b| {
        a.eval_only
            .cmp(&b.eval_only)
            .then(b.cost.total_cmp(&a.cost))
    });
    Survey {
        experiments: exps,
        units,
    }
}

/// The weights file exists and is a file, and the encoder is known: its size and hash.
fn check_experiment<'a>(
    ctx: &Ctx<'a>,
    exp: &Experiment,
) -> Result<(&'a EncoderEntry, u64, String), String> {
    let entry = ctx.registry.encoder(&exp.encoder)?;
    let list = ctx.opts.experiment_list.display();
    let meta = std::fs::metadata(&exp.weights).map_err(|e| {
        format!(
            "weights file {} not found ({e}); fix the path in {list}",
            exp.weights.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "weights file {} is {}, not a weights file; fix the path in {list}",
            exp.weights.display(),
            if meta.is_dir() {
                "a folder"
            } else {
                "not a regular file"
            }
        ));
    }
    let cache_dir = ctx.opts.cache.as_ref().map(|c| c.dir());
    let sha =
        crate::hashing::sha256_file_cached(&exp.weights, cache_dir).map_err(|e| e.to_string())?;
    Ok((entry, meta.len(), sha))
}

/// Opens the unit's splits and checks its configs' results.
fn survey_unit(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    virb: &VirbConfig,
    unit: &mut Unit<'_>,
) -> Result<(), String> {
    let job = unit.job;
    let plan = JobPlan {
        name: unit.job_name,
        job,
        task,
        identity: job_identity(ctx, ec, task, job),
    };
    let force = ctx.opts.force;
    let splits: &[Split] = if unit.eval_only {
        &[Split::Test]
    } else {
        &[Split::Train, Split::Test]
    };
    for &split in splits {
        let ds = plan.open_split(ctx, split).map_err(|e| e.to_string())?;
        let meta = plugin(ds.meta()).map_err(|e| e.to_string())?;
        unit.splits
            .push(split_survey(ctx, ec, task, job, split, &meta));
    }
    if unit.eval_only {
        for source in &unit.sources {
            let Some(src) = virb.jobs.get(*source) else {
                continue;
            };
            let Ok(src_task) = ctx.registry.task(&src.task) else {
                continue;
            };
            let src_plan = JobPlan {
                name: source,
                job: src,
                task: src_task,
                identity: job_identity(ctx, ec, src_task, src),
            };
            for (cfg_name, cfg) in &src.training_configs {
                let source_hash = src_plan.config_hash(cfg);
                let hash =
                    hash_json(&serde_json::json!({"job": plan.identity, "source": source_hash}));
                let dir = outdir::result_dir(&ctx.opts.out, &ec.exp.name, unit.job_name, cfg_name);
                unit.configs.push(ConfigSurvey {
                    name: cfg_name.clone(),
                    done: !force && complete_result(&dir, &hash).is_some(),
                    hash,
                });
            }
        }
    } else {
        for (cfg_name, cfg) in &job.training_configs {
            let hash = plan.config_hash(cfg);
            let dir = outdir::result_dir(&ctx.opts.out, &ec.exp.name, unit.job_name, cfg_name);
            unit.configs.push(ConfigSurvey {
                name: cfg_name.clone(),
                done: !force && complete_result(&dir, &hash).is_some(),
                hash,
            });
        }
    }
    unit.cost = cost(task, job, unit);
    Ok(())
}

/// A split's samples, whether the cache has its features and about how much disk they take.
fn split_survey(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    split: Split,
    meta: &DatasetMeta,
) -> SplitSurvey {
    let outputs: Vec<String> = task
        .info
        .required_outputs
        .iter()
        .map(|o| o.to_string())
        .collect();
    let pre = crate::splits::pre_encodes(task, job) && !job.train_encoder;
    let cached = pre
        && ctx.opts.cache.as_ref().is_some_and(|cache| {
            let key = crate::features::cache_key(
                ec.exp,
                ec.entry,
                &ec.weights_sha256,
                task,
                split,
                job,
                &outputs,
                meta,
            );
            cache.has(&key)
        });
    let side = job.image_size.max(1) as u64;
    let per_sample: u64 = ec
        .entry
        .info
        .outputs
        .iter()
        .filter(|o| outputs.iter().any(|w| w == o.name.as_str()))
        .map(|o| {
            let cells = match o.stride {
                s if s > 0 => side.div_ceil(s as u64).pow(2),
                _ => 1,
            };
            o.channels.max(0) as u64 * cells
        })
        .sum::<u64>()
        * task.info.frames.max(1) as u64;
    SplitSurvey {
        split,
        samples: meta.len,
        cached,
        cache_bytes: if pre { per_sample * 2 * meta.len } else { 0 },
    }
}

/// Relative cost of a unit: a pass of the encoder over a sample counts 1; a pass of a
/// pixel-wise head about 3 (its decoder outweighs a ResNet-50), of a pooled head 0.02.
fn cost(task: &TaskEntry, job: &JobConfig, unit: &Unit<'_>) -> f64 {
    let head = if task.info.pixel_wise { 3.0 } else { 0.02 };
    let runs = (unit.configs.iter().filter(|c| !c.done).count() as f64)
        * job.repeats.max(1) as f64
        * job.num_epochs.max(1) as f64;
    unit.splits
        .iter()
        .map(|s| {
            let n = s.samples as f64;
            let encode = if s.cached { 0.0 } else { n };
            match (s.split, job.train_encoder) {
                (Split::Train, true) => runs * n * (3.0 + head),
                (Split::Train, false) => encode + runs * n * head,
                _ => encode + runs / job.num_epochs.max(1) as f64 * n * head,
            }
        })
        .sum()
}
