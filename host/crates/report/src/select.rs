//! Choosing one training config per (experiment, job).
use crate::record::Record;
use std::fmt;

/// The rule that chose a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectedBy {
    /// Best validation metric: every usable config has one.
    Validation,
    /// The only usable config: nothing to choose.
    OnlyConfig,
    /// Best test metric, because not every config has a validation metric. This is what ViRB did;
    /// the number is optimistic and reports flag it.
    Test,
    /// Eval-only result: the config whose head was selected for the job it evaluates.
    EvaluatedHead,
}

impl SelectedBy {
    /// The name used in tables: `validation`, `only config`, `test`, `evaluated head`.
    pub fn as_str(self) -> &'static str {
        match self {
            SelectedBy::Validation => "validation",
            SelectedBy::OnlyConfig => "only config",
            SelectedBy::Test => "test",
            SelectedBy::EvaluatedHead => "evaluated head",
        }
    }

    /// Whether the choice looked at the test metric it reports (flagged in tables).
    pub fn is_test(self) -> bool {
        self == SelectedBy::Test
    }
}

impl fmt::Display for SelectedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The config chosen for one (experiment, job).
#[derive(Debug, Clone, PartialEq)]
pub struct Selection<'a> {
    /// The chosen result.
    pub record: &'a Record,
    /// The rule that chose it.
    pub selected_by: SelectedBy,
    /// Its primary test metric (mean over repeats).
    pub value: f64,
    /// One sentence saying why, for logs and reports.
    pub reason: String,
}

/// Whether `a` beats `b` (strictly: a tie keeps the earlier one).
fn better(a: f64, b: f64, higher_is_better: bool) -> bool {
    if higher_is_better {
        a > b
    } else {
        a < b
    }
}

/// The selectable configs: `ok`, with a primary test metric, in config-name order.
fn candidates<'a>(configs: &[&'a Record]) -> Vec<&'a Record> {
    let mut c: Vec<&Record> = configs
        .iter()
        .copied()
        .filter(|r| r.is_ok() && r.test_value().is_some())
        .collect();
    c.sort_by(|a, b| a.config.cmp(&b.config));
    c
}

/// The first best record by `key` (`None` values never win).
fn best<'a>(c: &[&'a Record], key: impl Fn(&Record) -> Option<f64>) -> Option<(&'a Record, f64)> {
    let mut best: Option<(&Record, f64)> = None;
    for r in c {
        let Some(v) = key(r) else { continue };
        match best {
            Some((_, b)) if !better(v, b, r.higher_is_better) => {}
            _ => best = Some((r, v)),
        }
    }
    best
}

fn unusable_note(configs: &[&Record], usable: usize) -> String {
    let n = configs.len() - usable.min(configs.len());
    if n == 0 {
        String::new()
    } else {
        let diverged = configs.iter().filter(|r| r.status == "diverged").count();
        format!(" ({n} other config(s) not usable, {diverged} diverged)")
    }
}

/// Chooses one config among the results of one (experiment, job).
///
/// Among the `ok` results that have a primary test metric:
/// 1. if every one has a primary validation metric: the best validation value
///    (respecting `higher_is_better`; ties go to the first in config-name order), [`SelectedBy::Validation`];
/// 2. else if there is exactly one: it, [`SelectedBy::OnlyConfig`];
/// 3. else the best test value, [`SelectedBy::Test`] (ViRB's rule; optimistic, flagged in tables).
///
/// `None` when no result is usable (all diverged, or none given). The returned
/// [`Selection::value`] is always the test metric.
pub fn select<'a>(configs: &[&'a Record]) -> Option<Selection<'a>> {
    let c = candidates(configs);
    let first = *c.first()?;
    let metric = &first.primary_metric;
    let note = unusable_note(configs, c.len());
    if c.iter().all(|r| r.validation_value().is_some()) {
        let (r, v) = best(&c, Record::validation_value)?;
        return Some(Selection {
            record: r,
            selected_by: SelectedBy::Validation,
            value: r.test_value()?,
            reason: format!(
                "best validation {metric} ({v}) of {} config(s){note}",
                c.len()
            ),
        });
    }
    if c.len() == 1 {
        return Some(Selection {
            record: first,
            selected_by: SelectedBy::OnlyConfig,
            value: first.test_value()?,
            reason: format!("the only config{note}"),
        });
    }
    let (r, v) = best(&c, Record::test_value)?;
    let without = c.iter().filter(|r| r.validation_value().is_none()).count();
    Some(Selection {
        record: r,
        selected_by: SelectedBy::Test,
        value: v,
        reason: format!(
            "best TEST {metric} of {} configs: {without} of them have no validation {metric}{note}",
            c.len()
        ),
    })
}

/// Chooses among the results of an eval-only job (such as Imagenetv2, which evaluates Imagenet
/// heads) of one experiment.
///
/// `selected` holds the records already selected for the other jobs of the experiment. The
/// result whose `evaluated_head` folder is `<job>-<config>` of one of them, with that `config`, is
/// chosen ([`SelectedBy::EvaluatedHead`]); otherwise the rule of [`select`] applies.
pub fn select_eval_only<'a>(configs: &[&'a Record], selected: &[&Record]) -> Option<Selection<'a>> {
    let c = candidates(configs);
    for r in &c {
        let Some(folder) = r.evaluated_folder() else {
            continue;
        };
        let head = selected.iter().find(|s| {
            s.experiment == r.experiment
                && !s.is_eval_only()
                && s.config == r.config
                && folder
                    .strip_prefix(s.job.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some()
        });
        if let Some(s) = head {
            return Some(Selection {
                record: r,
                selected_by: SelectedBy::EvaluatedHead,
                value: r.test_value()?,
                reason: format!(
                    "evaluates the head selected for job `{}` (config `{}`)",
                    s.job, s.config
                ),
            });
        }
    }
    let mut fallback = select(configs)?;
    fallback.reason = format!(
        "no result evaluates the head selected for its job; {}",
        fallback.reason
    );
    Some(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(config: &str, test: Option<f64>, val: Option<f64>) -> Record {
        let mut v = json!({
            "schema": crate::SCHEMA, "experiment": "E", "job": "J", "config": config,
            "task": {"name": "J"}, "primary_metric": "acc", "higher_is_better": true,
            "test_metrics": {"acc": test},
        });
        if let Some(val) = val {
            v["validation"] = json!({"fraction": 0.1, "size": 10, "metrics": {"acc": val}});
        }
        Record::parse(&v.to_string()).expect("record")
    }

    #[test]
    fn validation_decides_and_the_value_is_the_test_metric() {
        let (a, b, c) = (
            rec("a", Some(0.9), Some(0.5)),
            rec("b", Some(0.7), Some(0.8)),
            rec("c", Some(0.8), Some(0.6)),
        );
        let s = select(&[&c, &a, &b]).expect("selection");
        assert_eq!(s.record.config, "b");
        assert_eq!(s.selected_by, SelectedBy::Validation);
        assert_eq!(s.value, 0.7);
        assert_eq!(s.reason, "best validation acc (0.8) of 3 config(s)");
    }

    #[test]
    fn ties_go_to_the_first_config_name() {
        let (a, b) = (
            rec("a", Some(0.1), Some(0.5)),
            rec("b", Some(0.9), Some(0.5)),
        );
        assert_eq!(select(&[&b, &a]).expect("selection").record.config, "a");
        let (a, b) = (rec("a", Some(0.5), None), rec("b", Some(0.5), None));
        let s = select(&[&b, &a]).expect("selection");
        assert_eq!(
            (s.record.config.as_str(), s.selected_by),
            ("a", SelectedBy::Test)
        );
    }

    #[test]
    fn lower_is_better() {
        let mut a = rec("a", Some(3.0), Some(2.0));
        let mut b = rec("b", Some(1.0), Some(4.0));
        a.higher_is_better = false;
        b.higher_is_better = false;
        assert_eq!(select(&[&a, &b]).expect("selection").record.config, "a");
        a.validation = None;
        let s = select(&[&a, &b]).expect("selection");
        assert_eq!(
            (s.record.config.as_str(), s.selected_by),
            ("b", SelectedBy::Test)
        );
    }

    #[test]
    fn test_rule_only_when_some_config_lacks_validation() {
        let (a, b) = (rec("a", Some(0.9), Some(0.1)), rec("b", Some(0.7), None));
        let s = select(&[&a, &b]).expect("selection");
        assert_eq!(
            (s.record.config.as_str(), s.selected_by),
            ("a", SelectedBy::Test)
        );
        assert!(s.selected_by.is_test());
        assert_eq!(
            s.reason,
            "best TEST acc of 2 configs: 1 of them have no validation acc"
        );
        let s = select(&[&b]).expect("selection");
        assert_eq!(s.selected_by, SelectedBy::OnlyConfig);
        assert_eq!(s.selected_by.as_str(), "only config");
    }

    #[test]
    fn diverged_and_metricless_results_are_not_selectable() {
        let mut d = rec("a", Some(0.99), Some(0.99));
        d.status = "diverged".into();
        let m = rec("m", None, Some(0.99));
        let b = rec("b", Some(0.5), None);
        let s = select(&[&d, &m, &b]).expect("selection");
        assert_eq!(
            (s.record.config.as_str(), s.selected_by),
            ("b", SelectedBy::OnlyConfig)
        );
        assert_eq!(
            s.reason,
            "the only config (2 other config(s) not usable, 1 diverged)"
        );
        assert!(select(&[&d, &m]).is_none());
        assert!(select(&[]).is_none());
    }

    #[test]
    fn eval_only_follows_the_selected_head() {
        let head = rec("sgd-0.1", Some(0.7), None);
        let mut head = head;
        head.job = "Imagenet".into();
        let v2 = |config: &str, test: f64| {
            let mut r = rec(config, Some(test), None);
            r.job = "Imagenetv2".into();
            r.evaluated_head = Some(format!("/out/E/Imagenet-{config}/"));
            r
        };
        let (a, b) = (v2("adam", 0.9), v2("sgd-0.1", 0.5));
        let s = select_eval_only(&[&a, &b], &[&head]).expect("selection");
        assert_eq!(
            (s.record.config.as_str(), s.selected_by),
            ("sgd-0.1", SelectedBy::EvaluatedHead)
        );
        assert_eq!(s.value, 0.5);
        // Not among the evaluations: the general rule.
        head.config = "other".into();
        let s = select_eval_only(&[&a, &b], &[&head]).expect("selection");
        assert_eq!(
            (s.record.config.as_str(), s.selected_by),
            ("adam", SelectedBy::Test)
        );
        assert!(
            s.reason
                .starts_with("no result evaluates the head selected"),
            "{}",
            s.reason
        );
    }
}
