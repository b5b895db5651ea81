//! Reports of virb results: what `virb-host report` does.
//!
//! [`run`] reads every `<out>/<experiment>/<job>-<config>/results.json` (schema
//! [`SCHEMA`]), chooses one training config per (experiment, job) with [`select`] /
//! [`select_eval_only`], and writes into `<out>/report` (or [`ReportOptions::dest`]):
//!
//! - `results.csv`: one row per (experiment, job): the selected config, the rule that chose it,
//!   the test metric (mean, std over repeats), the number of configs, the status;
//! - `table.csv`: experiments x jobs, the selected test metric;
//! - `results.md`: the same table for humans (`0.8123 ± 0.0100`, `†` on test-selected cells),
//!   each job's metric and direction, the selected configs, the warnings;
//! - `imagenet_vs_<job>.png`: each job against the Imagenet job across experiments, with a
//!   least-squares line, Pearson r and Spearman ρ;
//! - `heatmap.png`: experiments x jobs, coloured per job from worst to best.
//!
//! Every file is written atomically (a temporary file in the same folder, then a rename).
//! A `results.json` that cannot be used is skipped with a warning, never fatal.

mod canvas;
mod model;
mod plot;
mod record;
mod select;
mod tables;

pub use record::{load, EncoderInfo, Loaded, Record, TaskInfo, Validation, RESULTS_FILE, SCHEMA};
pub use select::{select, select_eval_only, SelectedBy, Selection};

use model::Model;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the report folder inside `--out` when [`ReportOptions::dest`] is not given.
pub const DEFAULT_DEST: &str = "report";

/// What to report on and where to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOptions {
    /// The folder `virb-host run --out` wrote results into.
    pub out: PathBuf,
    /// Where to write the report; `None`: `<out>/report`.
    pub dest: Option<PathBuf>,
    /// Whether to draw the PNG plots.
    pub plots: bool,
}

impl ReportOptions {
    /// Options for reporting on `out` into `<out>/report`, with plots.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        ReportOptions {
            out: out.into(),
            dest: None,
            plots: true,
        }
    }

    /// The folder the report is written into.
    pub fn dest_dir(&self) -> PathBuf {
        self.dest
            .clone()
            .unwrap_or_else(|| self.out.join(DEFAULT_DEST))
    }
}

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportSummary {
    /// The folder the report was written into.
    pub dest: PathBuf,
    /// Files written, in the order written.
    pub written: Vec<PathBuf>,
    /// Stale `imagenet_vs_*.png` from an earlier report, removed because their plot was not
    /// drawn this time.
    pub removed: Vec<PathBuf>,
    /// Skipped files, diverged configs, plots not drawn, ...; one line each.
    pub warnings: Vec<String>,
    /// `results.json` files found.
    pub files_found: usize,
    /// Of them, skipped (unreadable, wrong schema, duplicate).
    pub files_skipped: usize,
    /// Experiments (table rows).
    pub experiments: usize,
    /// Jobs (table columns).
    pub jobs: usize,
    /// (experiment, job) pairs with a selected config.
    pub selected: usize,
    /// Of them, selected by the test metric (flagged `†`).
    pub test_selected: usize,
    /// (experiment, job) pairs with results but none selectable (all diverged).
    pub unselectable: usize,
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The output folder cannot be listed.
    #[error(
        "cannot read the results folder {}: {source} (results are written there by `virb-host run --out {}`)",
        out.display(),
        out.display()
    )]
    ReadOut {
        /// The folder.
        out: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No usable `results.json` under the output folder.
    #[error(
        "no results under {}: found {found} results.json file(s) in <experiment>/<job>-<config>/ folders, none usable{}; `virb-host run --out {}` writes them",
        out.display(),
        if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join("; ")) },
        out.display()
    )]
    NoResults {
        /// The folder searched.
        out: PathBuf,
        /// Number of `results.json` files found.
        found: usize,
        /// Why each found file was skipped.
        skipped: Vec<String>,
    },
    /// A report file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file (or folder) being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let outcome = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome.map_err(err)
}

/// `imagenet_vs_<job>.png` with the job name reduced to `[A-Za-z0-9._-]`.
fn scatter_file_name(job: &str) -> String {
    let safe: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("imagenet_vs_{safe}.png")
}

fn direction(higher_is_better: bool) -> &'static str {
    if higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    }
}

/// Draws `imagenet_vs_<job>.png` for each job; returns (file name, PNG) pairs and warnings.
fn scatter_plots(m: &Model<'_>, warnings: &mut Vec<String>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(ii) = m.imagenet else {
        warnings.push(format!(
            "no imagenet_vs_*.png: no results of a job with task `{}`",
            model::IMAGENET_TASK
        ));
        return out;
    };
    let inet = &m.jobs[ii];
    let mut names = BTreeSet::new();
    for (ji, job) in m.jobs.iter().enumerate() {
        if ji == ii {
            continue;
        }
        let mut file = scatter_file_name(&job.name);
        if !names.insert(file.clone()) {
            file = scatter_file_name(&format!("{}_{ji}", job.name));
            names.insert(file.clone());
        }
        let mut any_test = false;
        let points: Vec<plot::Point> = m
            .experiments
            .iter()
            .enumerate()
            .filter_map(|(ei, exp)| {
                let x = m.cell(ei, ii)?.selection.as_ref()?;
                let y = m.cell(ei, ji)?.selection.as_ref()?;
                let test = x.selected_by.is_test() || y.selected_by.is_test();
                any_test |= test;
                Some(plot::Point {
                    label: format!("{exp}{}", if test { tables::TEST_MARK } else { "" }),
                    x: x.value,
                    y: y.value,
                    x_std: x.record.test_std(),
                    y_std: y.record.test_std(),
                })
            })
            .collect();
        if points.len() < 2 {
            warnings.push(format!(
                "{file} not drawn: {} experiment(s) have results for both `{}` and `{}`, 2 needed",
                points.len(),
                inet.name,
                job.name
            ));
            continue;
        }
        let spec = plot::Scatter {
            title: format!("{} vs {}", job.name, inet.name),
            x_desc: format!(
                "{}: {} ({})",
                inet.name,
                inet.metric,
                direction(inet.higher_is_better)
            ),
            y_desc: format!(
                "{}: {} ({})",
                job.name,
                job.metric,
                direction(job.higher_is_better)
            ),
            note: {
                let mut notes = Vec::new();
                if points
                    .iter()
                    .any(|p| p.x_std.is_some() || p.y_std.is_some())
                {
                    notes.push("error bars: ± sample std over repeats".to_string());
                }
                if any_test {
                    notes.push(format!(
                        "{} a config selected by its test metric (no validation metric for every config)",
                        tables::TEST_MARK
                    ));
                }
                (!notes.is_empty()).then(|| notes.join("; "))
            },
            points,
        };
        match plot::scatter(&spec) {
            Ok(png) => out.push((file, png)),
            Err(e) => warnings.push(format!("{file} not drawn: {}", e.0)),
        }
    }
    out
}

fn heatmap_plot(m: &Model<'_>) -> Result<Vec<u8>, plot::PlotError> {
    let cells = plot::heat_cells(m);
    let any_test = m.cells.values().any(|c| {
        c.selection
            .as_ref()
            .is_some_and(|s| s.selected_by.is_test())
    });
    let mut notes =
        vec!["↑ higher is better, ↓ lower is better; cells show the raw test metric".to_string()];
    if any_test {
        notes.push(format!(
            "{} config selected by its test metric (not every config has a validation metric)",
            tables::TEST_MARK
        ));
    }
    let hm = plot::Heatmap {
        rows: m.experiments.clone(),
        cols: m
            .jobs
            .iter()
            .map(|j| format!("{} {}", j.name, if j.higher_is_better { "↑" } else { "↓" }))
            .collect(),
        cells,
        notes,
    };
    plot::heatmap(&hm)
}

/// Writes the report of the results under `opts.out` (see the crate documentation).
///
/// Fails when `opts.out` cannot be read, holds no usable `results.json`, or a report file cannot
/// be written; a bad `results.json` or a plot that cannot be drawn is only a warning.
pub fn run(opts: &ReportOptions) -> Result<ReportSummary, ReportError> {
    let loaded = load(&opts.out)?;
    if loaded.records.is_empty() {
        return Err(ReportError::NoResults {
            out: opts.out.clone(),
            found: loaded.files,
            skipped: loaded.warnings,
        });
    }
    let mut warnings = loaded.warnings.clone();
    let m = Model::build(&loaded.records);
    warnings.extend(m.warnings.iter().cloned());

    let dest = opts.dest_dir();
    std::fs::create_dir_all(&dest).map_err(|source| ReportError::Write {
        path: dest.clone(),
        source,
    })?;
    let mut written = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
        let path = dest.join(name);
        write_atomic(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    write("results.csv", tables::results_csv(&m).as_bytes())?;
    write("table.csv", tables::table_csv(&m).as_bytes())?;

    let mut plots = Vec::new();
    let mut removed = Vec::new();
    if opts.plots {
        for (name, png) in scatter_plots(&m, &mut warnings) {
            write(&name, &png)?;
            plots.push(name);
        }
        match heatmap_plot(&m) {
            Ok(png) => {
                write("heatmap.png", &png)?;
                plots.push("heatmap.png".into());
            }
            Err(e) => warnings.push(format!("heatmap.png not drawn: {}", e.0)),
        }
        // A scatter plot from an earlier report that was not drawn now would be stale.
        if let Ok(entries) = std::fs::read_dir(&dest) {
            let mut stale: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("imagenet_vs_") && n.ends_with(".png"))
                .filter(|n| !plots.contains(n))
                .map(|n| dest.join(n))
                .collect();
            stale.sort();
            for path in stale {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed.push(path),
                    Err(e) => warnings.push(format!(
                        "{} is stale (its plot was not drawn now) but cannot be removed: {e}",
                        path.display()
                    )),
                }
            }
        }
    }
    let mut md = tables::markdown(&m, &warnings);
    if !plots.is_empty() {
        md.push_str("\n## Plots\n\n");
        for p in &plots {
            md.push_str(&format!("![{p}]({p})\n\n"));
        }
    }
    write("results.md", md.as_bytes())?;

    let selected = m.cells.values().filter(|c| c.selection.is_some()).count();
    Ok(ReportSummary {
        dest,
        written,
        removed,
        files_found: loaded.files,
        files_skipped: loaded.skipped,
        experiments: m.experiments.len(),
        jobs: m.jobs.len(),
        selected,
        test_selected: m
            .cells
            .values()
            .filter(|c| {
                c.selection
                    .as_ref()
                    .is_some_and(|s| s.selected_by.is_test())
            })
            .count(),
        unselectable: m.cells.len() - selected,
        warnings,
    })
}
