//! `results.csv`, `table.csv` and `results.md`.
use crate::model::Model;

/// Mark on test-selected values.
pub(crate) const TEST_MARK: &str = "†";

/// A value for humans: 4 decimals (1 from 1000 up).
pub(crate) fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// Same number of decimals as [`fmt_value`] gives `mean`.
fn fmt_std(std: f64, mean: f64) -> String {
    if mean.abs() >= 1000.0 {
        format!("{std:.1}")
    } else {
        format!("{std:.4}")
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// Column names of `results.csv`.
pub(crate) const RESULTS_CSV_HEADER: [&str; 12] = [
    "experiment",
    "job",
    "task",
    "config",
    "selected_by",
    "metric",
    "value",
    "std",
    "repeats",
    "n_configs",
    "status",
    "higher_is_better",
];

/// One row per (experiment, job) that has results. Numbers at full precision.
pub(crate) fn results_csv(m: &Model<'_>) -> String {
    let mut out = csv_line(&RESULTS_CSV_HEADER.map(String::from));
    for (ei, exp) in m.experiments.iter().enumerate() {
        for (ji, job) in m.jobs.iter().enumerate() {
            let Some(cell) = m.cell(ei, ji) else { continue };
            let sel = cell.selection.as_ref();
            let (config, selected_by, value, std, repeats) = match sel {
                Some(s) => (
                    s.record.config.clone(),
                    s.selected_by.as_str().to_string(),
                    s.value.to_string(),
                    s.record
                        .test_std()
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    s.record.repeats.to_string(),
                ),
                None => Default::default(),
            };
            out.push_str(&csv_line(&[
                exp.clone(),
                job.name.clone(),
                job.task.clone(),
                config,
                selected_by,
                sel.map(|s| s.record.primary_metric.clone())
                    .unwrap_or_else(|| job.metric.clone()),
                value,
                std,
                repeats,
                cell.records.len().to_string(),
                cell.status().to_string(),
                sel.map(|s| s.record.higher_is_better)
                    .unwrap_or(job.higher_is_better)
                    .to_string(),
            ]));
        }
    }
    out
}

/// Rows = experiments, columns = jobs, cells = selected test metric (mean), empty when missing.
pub(crate) fn table_csv(m: &Model<'_>) -> String {
    let mut header = vec!["experiment".to_string()];
    header.extend(m.jobs.iter().map(|j| j.name.clone()));
    let mut out = csv_line(&header);
    for (ei, exp) in m.experiments.iter().enumerate() {
        let mut row = vec![exp.clone()];
        row.extend(
            (0..m.jobs.len()).map(|ji| m.value(ei, ji).map(|v| v.to_string()).unwrap_or_default()),
        );
        out.push_str(&csv_line(&row));
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn md_table(header: &[String], align_first_left: bool, rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    let aligns: Vec<&str> = (0..header.len())
        .map(|i| {
            if i == 0 || !align_first_left {
                ":---"
            } else {
                "---:"
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", aligns.join(" | ")));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// The text of a value cell: `0.8123`, `0.8123 ± 0.0100`, `0.8123†`, `diverged`, `—`.
pub(crate) fn md_cell(m: &Model<'_>, ei: usize, ji: usize) -> String {
    let Some(cell) = m.cell(ei, ji) else {
        return "—".into();
    };
    let Some(s) = &cell.selection else {
        return md_escape(cell.status());
    };
    let mut text = fmt_value(s.value);
    if let Some(std) = s.record.test_std() {
        text.push_str(&format!(" ± {}", fmt_std(std, s.value)));
    }
    if s.selected_by.is_test() {
        text.push_str(TEST_MARK);
    }
    text
}

/// The Markdown report.
pub(crate) fn markdown(m: &Model<'_>, warnings: &[String]) -> String {
    let mut out = String::from("# virb results\n\n");
    out.push_str(
        "Test metric of the selected training config per experiment (encoder) and job; \
         mean ± sample std over repeats where a job was repeated.\n\n",
    );
    let mut header = vec!["experiment".to_string()];
    header.extend(m.jobs.iter().map(|j| md_escape(&j.name)));
    let rows: Vec<Vec<String>> = m
        .experiments
        .iter()
        .enumerate()
        .map(|(ei, exp)| {
            let mut row = vec![md_escape(exp)];
            row.extend((0..m.jobs.len()).map(|ji| md_cell(m, ei, ji)));
            row
        })
        .collect();
    out.push_str(&md_table(&header, true, &rows));
    let any_test = m.cells.values().any(|c| {
        c.selection
            .as_ref()
            .is_some_and(|s| s.selected_by.is_test())
    });
    out.push('\n');
    if any_test {
        out.push_str(&format!(
            "{TEST_MARK} config selected by its test metric: not every config of the job has a \
             validation metric, so the best test value was taken (as ViRB did); optimistic.\n\n"
        ));
    }
    let any_missing =
        (0..m.experiments.len()).any(|ei| (0..m.jobs.len()).any(|ji| m.cell(ei, ji).is_none()));
    let any_unselected = m.cells.values().any(|c| c.selection.is_none());
    match (any_missing, any_unselected) {
        (true, true) => {
            out.push_str("— no result; `diverged`: every config diverged (NaN/inf loss).\n\n")
        }
        (true, false) => out.push_str("— no result.\n\n"),
        (false, true) => out.push_str("`diverged`: every config diverged (NaN/inf loss).\n\n"),
        (false, false) => {}
    }

    out.push_str("## Jobs\n\n");
    for job in &m.jobs {
        let metric = if job.metric.is_empty() {
            "(unknown metric)".to_string()
        } else {
            format!("`{}`", md_escape(&job.metric))
        };
        let direction = if job.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let evaluates = match (&job.evaluates, job.eval_only) {
            (Some(e), _) => format!("; eval-only, evaluates the heads of `{}`", md_escape(e)),
            (None, true) => "; eval-only".to_string(),
            (None, false) => String::new(),
        };
        out.push_str(&format!(
            "- **{}** (task {}): {metric}, {direction}{evaluates}\n",
            md_escape(&job.name),
            md_escape(&job.task)
        ));
    }

    out.push_str("\n## Selected configs\n\n");
    out.push_str(
        "Rule: the best validation metric when every config has one; the only config when there \
         is one; else the best test metric (†). Eval-only jobs use the config selected for the \
         job whose heads they evaluate.\n\n",
    );
    let rows: Vec<Vec<String>> = m
        .experiments
        .iter()
        .enumerate()
        .map(|(ei, exp)| {
            let mut row = vec![md_escape(exp)];
            row.extend((0..m.jobs.len()).map(|ji| match m.cell(ei, ji) {
                None => "—".to_string(),
                Some(c) => match &c.selection {
                    Some(s) => format!(
                        "`{}` ({}{}, {} config{})",
                        md_escape(&s.record.config),
                        s.selected_by,
                        if s.selected_by.is_test() {
                            TEST_MARK
                        } else {
                            ""
                        },
                        c.records.len(),
                        if c.records.len() == 1 { "" } else { "s" }
                    ),
                    None => md_escape(c.status()),
                },
            }));
            row
        })
        .collect();
    out.push_str(&md_table(&header, false, &rows));

    if !warnings.is_empty() {
        out.push_str("\n## Warnings\n\n");
        for w in warnings {
            out.push_str(&format!("- {}\n", md_escape(w)));
        }
    }
    out
}
