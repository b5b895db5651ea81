//! `virb-host plan` / `run --dry-run`: the survey printed for a person. Every experiment with
//! its weights file (size, hash), then every (experiment, job, config) with what the run would
//! do to it (done and skipped, train on cached features, encode then train, evaluate after the
//! jobs it depends on, or the problem that stops it), the samples of each split, and the disk
//! the feature cache would take.
use crate::survey::{Survey, Unit};
use crate::table::align;
use virb_feature_cache::human_bytes;
use virb_plugin_api::Split;

/// The lines of the plan.
pub(crate) fn lines(s: &Survey<'_>, cache_dir: Option<&std::path::Path>) -> Vec<String> {
    let mut out = Vec::new();
    let configs: usize = s.units.iter().map(|u| u.configs.len()).sum();
    let done: usize = s
        .units
        .iter()
        .map(|u| u.configs.iter().filter(|c| c.done).count())
        .sum();
    out.push(format!(
        "plan: {} experiment(s), {} unit(s) (experiment x job), {configs} config(s): {done} done, {} to do",
        s.experiments.len(),
        s.units.len(),
        configs - done
    ));
    out.push(String::new());
    out.push("weights:".into());
    let mut rows = Vec::new();
    for e in &s.experiments {
        let (size, state) = match &e.ready {
            Ok((entry, bytes, sha)) => (
                human_bytes(*bytes),
                format!(
                    "sha256 {}… ({} {})",
                    &sha[..12.min(sha.len())],
                    entry.plugin.name,
                    entry.plugin.version
                ),
            ),
            Err(why) => ("-".into(), format!("PROBLEM: {why}")),
        };
        rows.push(vec![
            format!("  {}", e.exp.name),
            e.exp.encoder.clone(),
            e.exp.weights.display().to_string(),
            size,
            state,
        ]);
    }
    out.extend(align(&rows));
    out.push(String::new());
    out.push("work (longest first):".into());
    let mut rows = vec![vec![
        "  experiment".to_string(),
        "job".into(),
        "config".into(),
        "what happens".into(),
        "train".into(),
        "test".into(),
    ]];
    for u in &s.units {
        let exp = &s.experiments[u.exp].exp.name;
        let split = |which: Split| {
            u.splits
                .iter()
                .find(|x| x.split == which)
                .map(|x| {
                    let how = if x.cached {
                        "cached".to_string()
                    } else if x.cache_bytes > 0 {
                        format!("encode, ~{}", human_bytes(x.cache_bytes))
                    } else {
                        "live".into()
                    };
                    format!("{} ({how})", x.samples)
                })
                .unwrap_or_else(|| "-".into())
        };
        let problem = match (&s.experiments[u.exp].ready, &u.problem) {
            (Err(_), _) => Some("PROBLEM: see its weights above".to_string()),
            (_, Some(p)) => Some(format!("PROBLEM: {p}")),
            _ => None,
        };
        if let Some(p) = problem {
            rows.push(vec![
                format!("  {exp}"),
                u.job_name.to_string(),
                "-".into(),
                p,
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        for c in &u.configs {
            rows.push(vec![
                format!("  {exp}"),
                u.job_name.to_string(),
                c.name.clone(),
                what(u, c.done),
                split(Split::Train),
                split(Split::Test),
            ]);
        }
    }
    out.extend(align(&rows));
    let to_write: u64 = s
        .units
        .iter()
        .filter(|u| !u.done() && u.problem.is_none())
        .flat_map(|u| u.splits.iter())
        .filter(|x| !x.cached)
        .map(|x| x.cache_bytes)
        .sum();
    out.push(String::new());
    match cache_dir {
        Some(dir) => out.push(format!(
            "feature cache: about {} to write in {} (splits shared by several jobs are counted once per job)",
            human_bytes(to_write),
            dir.display()
        )),
        None => out.push("feature cache: off (--no-cache)".into()),
    }
    let problems = s.problems();
    if !problems.is_empty() {
        out.push(String::new());
        out.push(format!("problems ({}):", problems.len()));
        out.extend(problems.iter().map(|p| format!("  {p}")));
    }
    out
}

/// What the run does to a config of a unit.
fn what(u: &Unit<'_>, done: bool) -> String {
    if done {
        return "done (skipped)".into();
    }
    if u.eval_only {
        return format!("evaluate heads of {}", u.sources.join(", "));
    }
    let encode = u.splits.iter().any(|x| !x.cached);
    match (u.job.train_encoder, encode) {
        (true, _) => "fine-tune".into(),
        (false, true) => "encode, train".into(),
        (false, false) => "train (features cached)".into(),
    }
}
