//! The table a run prints at its end: one row per (experiment, job, config).

/// A row of the final table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Experiment.
    pub experiment: String,
    /// Job.
    pub job: String,
    /// Config.
    pub config: String,
    /// `metric=value` or `FAILED`.
    pub metric: String,
    /// Value, formatted.
    pub value: String,
    /// Where the result is, or the error.
    pub note: String,
    /// Whether this config is the one selected for its job.
    pub selected: bool,
}

/// The note's prefix of a result found complete, not made by this run.
pub(crate) const DONE_EARLIER: &str = "done earlier: ";

/// The rows as an identical rerun would show them: every result done earlier.
pub(crate) fn as_rerun(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            if !r.note.starts_with(DONE_EARLIER) {
                r.note = format!("{DONE_EARLIER}{}", r.note);
            }
            r
        })
        .collect()
}

/// Formats rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let header = ["experiment", "job", "config", "metric", "value", "result"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.experiment.clone(),
                r.job.clone(),
                if r.selected {
                    format!("{} *", r.config)
                } else {
                    r.config.clone()
                },
                r.metric.clone(),
                r.value.clone(),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.len());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        cols.iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.as_str())
            .collect(),
    ));
    for row in &cells {
        out.push('\n');
        out.push_str(&line(row.iter().map(|s| s.as_str()).collect()));
    }
    out
}

/// Rows of cells as lines with aligned columns (two spaces apart, trailing blanks trimmed).
pub fn align(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(c, &w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
}
