//! Reading `results.json` files: the fields a report needs, finding the files under `--out`.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::ReportError;

pub use virb_records::{RESULTS_FILE, SCHEMA};

/// One `results.json`: virb's one typed record ([`virb_records::ResultRecord`]), which the host
/// writes and reads back too.
pub type Record = virb_records::ResultRecord;

/// The task of a result.
pub type TaskInfo = virb_records::TaskRecord;

/// The encoder of a result.
pub type EncoderInfo = virb_records::EncoderRecord;

/// Validation metrics of a result (last epoch, mean over repeats).
pub type Validation = virb_records::ValidationRecord;

/// How deep below `--out` results are looked for (`<experiment>/<job>-<config>/results.json` is
/// depth 3); deeper levels are not searched, which also stops symlink loops.
const MAX_DEPTH: usize = 4;

/// The records found under an output folder.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Usable records, sorted by (experiment, job, config).
    pub records: Vec<Record>,
    /// One line per skipped file (and per duplicate), naming the file and why.
    pub warnings: Vec<String>,
    /// Number of `results.json` files found, usable or not.
    pub files: usize,
    /// Number of files skipped.
    pub skipped: usize,
}

/// Finds and reads every `results.json` under `out` (`<out>/<experiment>/<job>-<config>/results.json`),
/// skipping hidden folders and files (`.checkpoints`, `.results.json.tmp-*`).
///
/// A file that cannot be read or parsed, or whose schema is not [`SCHEMA`], is skipped with a
/// warning; so is a second file for the same (experiment, job, config). Fails only when `out`
/// itself cannot be read.
pub fn load(out: &Path) -> Result<Loaded, ReportError> {
    let mut files = Vec::new();
    let mut loaded = Loaded::default();
    let entries = std::fs::read_dir(out).map_err(|source| ReportError::ReadOut {
        out: out.to_owned(),
        source,
    })?;
    walk(entries, 1, &mut files, &mut loaded.warnings);
    files.sort();
    loaded.files = files.len();
    let mut seen: BTreeMap<(String, String, String), PathBuf> = BTreeMap::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                loaded
                    .warnings
                    .push(format!("skipped {}: cannot read it: {e}", path.display()));
                loaded.skipped += 1;
                continue;
            }
        };
        let mut record = match Record::parse(&text) {
            Ok(r) => r,
            Err(why) => {
                loaded
                    .warnings
                    .push(format!("skipped {}: {why}", path.display()));
                loaded.skipped += 1;
                continue;
            }
        };
        let key = (
            record.experiment.clone(),
            record.job.clone(),
            record.config.clone(),
        );
        if let Some(first) = seen.get(&key) {
            loaded.warnings.push(format!(
                "skipped {}: experiment `{}`, job `{}`, config `{}` was already read from {}",
                path.display(),
                key.0,
                key.1,
                key.2,
                first.display()
            ));
            loaded.skipped += 1;
            continue;
        }
        record.path = path.clone();
        seen.insert(key, path);
        loaded.records.push(record);
    }
    loaded.records.sort_by(|a, b| {
        (&a.experiment, &a.job, &a.config).cmp(&(&b.experiment, &b.job, &b.config))
    });
    Ok(loaded)
}

fn walk(
    entries: std::fs::ReadDir,
    depth: usize,
    files: &mut Vec<PathBuf>,
    warnings: &mut Vec<String>,
) {
    let mut dirs = BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: experiments may be linked in; MAX_DEPTH bounds any loop.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                dirs.insert(path);
            }
        } else if meta.is_file() && name == RESULTS_FILE {
            files.push(path);
        }
    }
    for dir in dirs {
        match std::fs::read_dir(&dir) {
            Ok(entries) => walk(entries, depth + 1, files, warnings),
            Err(e) => warnings.push(format!("skipped folder {}: {e}", dir.display())),
        }
    }
}
