//! The experiments x jobs grid with one selected result per cell.
use crate::record::Record;
use crate::select::{select, select_eval_only, SelectedBy, Selection};
use std::collections::{BTreeMap, BTreeSet};

/// Task name of the job the scatter plots compare against.
pub(crate) const IMAGENET_TASK: &str = "Imagenet";

/// A job (column).
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub name: String,
    pub task: String,
    pub metric: String,
    pub higher_is_better: bool,
    /// The job whose heads it evaluates, for eval-only jobs (when known).
    pub evaluates: Option<String>,
    pub eval_only: bool,
}

/// The results of one (experiment, job).
#[derive(Debug, Clone)]
pub(crate) struct Cell<'a> {
    /// All results of it, in config-name order.
    pub records: Vec<&'a Record>,
    pub selection: Option<Selection<'a>>,
}

impl Cell<'_> {
    /// `ok` when a config was selected, else the status of the results (`diverged`).
    pub fn status(&self) -> &str {
        if self.selection.is_some() {
            return "ok";
        }
        self.records
            .iter()
            .map(|r| r.status.as_str())
            .find(|s| *s != "ok")
            .unwrap_or("no metric")
    }
}

/// The grid.
#[derive(Debug, Clone)]
pub(crate) struct Model<'a> {
    pub experiments: Vec<String>,
    pub jobs: Vec<Job>,
    /// By (experiment index, job index).
    pub cells: BTreeMap<(usize, usize), Cell<'a>>,
    /// Index of the Imagenet job.
    pub imagenet: Option<usize>,
    pub warnings: Vec<String>,
}

impl<'a> Model<'a> {
    pub fn build(records: &'a [Record]) -> Model<'a> {
        let mut warnings = Vec::new();
        let mut groups: BTreeMap<(&str, &str), Vec<&Record>> = BTreeMap::new();
        for r in records {
            groups.entry((&r.experiment, &r.job)).or_default().push(r);
        }
        for g in groups.values_mut() {
            g.sort_by(|a, b| a.config.cmp(&b.config));
        }
        let experiments: Vec<String> = records
            .iter()
            .map(|r| r.experiment.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let job_names: BTreeSet<&str> = records.iter().map(|r| r.job.as_str()).collect();
        let mut jobs: Vec<Job> = job_names
            .iter()
            .map(|name| job_info(name, records, &mut warnings))
            .collect();
        let trained: Vec<String> = jobs
            .iter()
            .filter(|j| !j.eval_only)
            .map(|j| j.name.clone())
            .collect();
        for job in jobs.iter_mut().filter(|j| j.eval_only) {
            job.evaluates = records
                .iter()
                .filter(|r| r.job == job.name)
                .filter_map(Record::evaluated_folder)
                .find_map(|folder| {
                    trained
                        .iter()
                        .filter(|t| {
                            folder
                                .strip_prefix(t.as_str())
                                .is_some_and(|rest| rest.starts_with('-'))
                        })
                        .max_by_key(|t| t.len())
                        .cloned()
                });
        }
        let imagenet_jobs: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.task == IMAGENET_TASK && !j.eval_only)
            .collect();
        let imagenet_name = imagenet_jobs
            .iter()
            .find(|j| j.name == IMAGENET_TASK)
            .or(imagenet_jobs.first())
            .map(|j| j.name.clone());
        if imagenet_jobs.len() > 1 {
            warnings.push(format!(
                "several jobs have task {IMAGENET_TASK} ({}); the plots compare against `{}`",
                imagenet_jobs
                    .iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                imagenet_name.as_deref().unwrap_or_default()
            ));
        }
        // Imagenet first, then the jobs that evaluate its heads, then the rest by name.
        jobs.sort_by_key(|j| {
            let rank = if Some(&j.name) == imagenet_name.as_ref() {
                0
            } else if j.evaluates.is_some() && j.evaluates == imagenet_name {
                1
            } else {
                2
            };
            (rank, j.name.to_lowercase(), j.name.clone())
        });
        let imagenet = imagenet_name.and_then(|n| jobs.iter().position(|j| j.name == n));

        let mut cells = BTreeMap::new();
        for (ei, exp) in experiments.iter().enumerate() {
            let mut selected: Vec<&Record> = Vec::new();
            // Trained jobs first: eval-only jobs follow the configs selected for them.
            for pass_eval in [false, true] {
                for (ji, job) in jobs.iter().enumerate() {
                    if job.eval_only != pass_eval {
                        continue;
                    }
                    let Some(group) = groups.get(&(exp.as_str(), job.name.as_str())) else {
                        continue;
                    };
                    let selection = if job.eval_only {
                        select_eval_only(group, &selected)
                    } else {
                        select(group)
                    };
                    if let Some(s) = &selection {
                        selected.push(s.record);
                        if job.eval_only && s.selected_by != SelectedBy::EvaluatedHead {
                            warnings.push(format!(
                                "experiment `{exp}`, eval-only job `{}`: config `{}` ({})",
                                job.name, s.record.config, s.reason
                            ));
                        }
                    }
                    for r in group.iter().filter(|r| !r.is_ok()) {
                        warnings.push(format!(
                            "experiment `{exp}`, job `{}`, config `{}`: {}{} ({})",
                            job.name,
                            r.config,
                            r.status,
                            r.error
                                .as_deref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default(),
                            r.path.display()
                        ));
                    }
                    cells.insert(
                        (ei, ji),
                        Cell {
                            records: group.clone(),
                            selection,
                        },
                    );
                }
            }
        }
        Model {
            experiments,
            jobs,
            cells,
            imagenet,
            warnings,
        }
    }

    pub fn cell(&self, experiment: usize, job: usize) -> Option<&Cell<'a>> {
        self.cells.get(&(experiment, job))
    }

    /// The selected test value of a cell.
    pub fn value(&self, experiment: usize, job: usize) -> Option<f64> {
        self.cell(experiment, job)?
            .selection
            .as_ref()
            .map(|s| s.value)
    }
}

/// A job's task, metric and direction, from its first `ok` result (else its first result); warns
/// when its results disagree.
fn job_info(name: &str, records: &[Record], warnings: &mut Vec<String>) -> Job {
    let of_job: Vec<&Record> = records.iter().filter(|r| r.job == name).collect();
    let reference = of_job
        .iter()
        .find(|r| r.is_ok() && !r.primary_metric.is_empty())
        .or(of_job.first());
    let metrics: BTreeSet<(&str, bool)> = of_job
        .iter()
        .filter(|r| !r.primary_metric.is_empty())
        .map(|r| (r.primary_metric.as_str(), r.higher_is_better))
        .collect();
    if metrics.len() > 1 {
        warnings.push(format!(
            "job `{name}`: its results disagree on the primary metric ({}); the table mixes them",
            metrics
                .iter()
                .map(|(m, h)| format!("{m} {}", if *h { "higher" } else { "lower" }))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let tasks: BTreeSet<&str> = of_job.iter().map(|r| r.task.name.as_str()).collect();
    if tasks.len() > 1 {
        warnings.push(format!(
            "job `{name}`: its results disagree on the task ({})",
            tasks.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Job {
        name: name.to_string(),
        task: reference.map(|r| r.task.name.clone()).unwrap_or_default(),
        metric: reference
            .map(|r| r.primary_metric.clone())
            .unwrap_or_default(),
        higher_is_better: reference.is_none_or(|r| r.higher_is_better),
        evaluates: None,
        eval_only: of_job.iter().any(|r| r.is_eval_only()),
    }
}
