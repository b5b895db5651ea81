//! Which config of a job is reported: chosen on the validation split when the job has one,
//! never on test unless there is nothing else (and then it says so).
//!
//! `<out>/<experiment>/<job>.selection.json` records the choice, the rule that made it and every
//! candidate's validation and test values; `virb-host report` applies the same rule.
use crate::outdir::{results_file, selection_file, write_json};
use std::path::Path;
use virb_records::ResultRecord;

/// Chooses among the complete results of `<out>/<experiment>/<job>-<config>` for the job's
/// current `configs` (results of configs since removed from the file do not compete) and writes
/// the selection file; returns the selected config's name (None when none is complete).
pub fn write_selection(
    out: &Path,
    experiment: &str,
    job: &str,
    configs: &[&String],
) -> std::io::Result<Option<String>> {
    let exp_dir = out.join(experiment);
    let prefix = format!("{job}-");
    let mut records: Vec<ResultRecord> = std::fs::read_dir(&exp_dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            ResultRecord::read(&results_file(&e.path()))
                .ok()
                .filter(|r| {
                    r.job == job
                        && r.evaluated_head.is_none()
                        && configs.iter().any(|c| **c == r.config)
                })
        })
        .collect();
    records.sort_by(|a, b| a.config.cmp(&b.config));
    let refs: Vec<&ResultRecord> = records.iter().collect();
    let Some(sel) = virb_report::select(&refs) else {
        return Ok(None);
    };
    let candidates: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "config": r.config,
                "status": r.status,
                "validation": r.validation_value(),
                "test": r.test_value(),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "schema": "virb.selection/1",
        "experiment": experiment,
        "job": job,
        "selected_config": sel.record.config,
        "selected_by": sel.selected_by.as_str(),
        "reason": sel.reason,
        "metric": sel.record.primary_metric,
        "higher_is_better": sel.record.higher_is_better,
        "validation": sel.record.validation_value(),
        "test": sel.record.test_value(),
        "test_std": sel.record.test_std(),
        "candidates": candidates,
    });
    write_json(&selection_file(out, experiment, job), &doc)?;
    Ok(Some(sel.record.config.clone()))
}
