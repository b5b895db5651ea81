//! Progress with an ETA on stderr: a bar when stderr is a terminal, plain periodic lines when it
//! is not (CI, Slurm logs, files).
use indicatif::{ProgressBar, ProgressStyle};
use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

/// One unit of work with a known total.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

const LINE_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// Starts a task of `total` units.
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg:40} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.clone());
            bar
        });
        let now = Instant::now();
        Progress {
            label,
            total,
            done: 0,
            start: now,
            last_line: now,
            bar,
        }
    }

    /// Adds `n` finished units; `detail` (e.g. the current loss) is shown with them.
    pub fn inc(&mut self, n: u64, detail: &str) {
        self.done = (self.done + n).min(self.total);
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            if !detail.is_empty() {
                bar.set_message(format!("{} {detail}", self.label));
            }
        } else if self.last_line.elapsed() >= LINE_EVERY && self.done < self.total {
            self.last_line = Instant::now();
            eprintln!("{}", self.line(detail));
        }
    }

    fn line(&self, detail: &str) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if self.done > 0 {
            elapsed / self.done as f64 * (self.total - self.done) as f64
        } else {
            f64::NAN
        };
        let pct = if self.total > 0 {
            100.0 * self.done as f64 / self.total as f64
        } else {
            100.0
        };
        format!(
            "{}: {}/{} ({pct:.0}%) elapsed {} eta {}{}{}",
            self.label,
            self.done,
            self.total,
            fmt_secs(elapsed),
            fmt_secs(eta),
            if detail.is_empty() { "" } else { " " },
            detail
        )
    }

    /// Ends the task, printing a final line.
    pub fn finish(self, detail: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{}: done, {} in {}{}{}",
            self.label,
            self.total,
            fmt_secs(self.start.elapsed().as_secs_f64()),
            if detail.is_empty() { "" } else { ", " },
            detail
        );
    }
}

/// `1h02m03s`, `2m05s`, `4.2s`, `?`.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "?".to_string();
    }
    let whole = s.round() as u64;
    if whole >= 3600 {
        format!(
            "{}h{:02}m{:02}s",
            whole / 3600,
            whole % 3600 / 60,
            whole % 60
        )
    } else if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{s:.1}s")
    }
}
