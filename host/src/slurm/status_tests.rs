//! Unit tests of [`super::status`] on fabricated `out/` folders, with a fake squeue.
use super::status::{status, unit_state, UnitState};
use super::tests::{executable, fake_sbatch, unit};
use super::{submit, SlurmOptions};
use std::path::Path;

fn write_json(path: &Path, value: serde_json::Value) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, value.to_string()).expect("write");
}

#[test]
fn status_reads_progress_from_out_and_the_queue_from_squeue() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let (sbatch, _) = fake_sbatch(tmp.path(), &["100", "101"]);
    let units = [
        unit("e1", "done", false, &[("a", "ha"), ("b", "hb")]),
        unit("e1", "stale", false, &[("a", "new"), ("b", "hb2")]),
        unit("e1", "broken", false, &[("a", "x")]),
        unit("e2", "busy", false, &[("a", "y")]),
        unit("e2", "eval", true, &[("a", "z")]),
    ];
    submit(
        &out,
        &units,
        &["w".to_string()],
        &SlurmOptions {
            sbatch,
            ..SlurmOptions::default()
        },
    )
    .expect("submit");
    write_json(
        &out.join("e1/done-a/results.json"),
        serde_json::json!({"config_hash": "ha"}),
    );
    write_json(
        &out.join("e1/done-b/results.json"),
        serde_json::json!({"config_hash": "hb"}),
    );
    write_json(
        &out.join("e1/stale-a/results.json"),
        serde_json::json!({"config_hash": "old"}),
    );
    write_json(
        &out.join("e1/stale-b/results.json"),
        serde_json::json!({"config_hash": "hb2"}),
    );
    write_json(
        &out.join("e1/.claims/broken.done"),
        serde_json::json!({"run_id": "r", "worker": "w", "outcome": "failed", "error": "CUDA out of memory\nstack...", "at": 0}),
    );
    write_json(
        &out.join("e2/.claims/busy.claim"),
        serde_json::json!({"worker": "w1", "host": "node7", "pid": 12}),
    );
    assert_eq!(unit_state(&out, &units[0]), UnitState::Done);
    assert_eq!(unit_state(&out, &units[1]), UnitState::Pending(1));

    let squeue = tmp.path().join("squeue");
    executable(&squeue, "#!/bin/sh\n[ \"$*\" = '-h -j 100,101 -o %i %T %R' ] || exit 3\necho '100_3 RUNNING node7'\necho '101_[0] PENDING (Dependency)'\n");
    let lines = status(&out, &squeue).expect("status");
    let has = |s: &str| lines.iter().any(|l| l == s);
    assert!(
        lines[0].starts_with("submission ")
            && lines[0].ends_with("job 100 (train, 4 tasks), job 101 (eval-only, 1 tasks)"),
        "{lines:#?}"
    );
    assert!(has("  done     e1/done"), "{lines:#?}");
    assert!(has("  pending  e1/stale (1/2 configs done)"), "{lines:#?}");
    assert!(
        has("  failed   e1/broken: CUDA out of memory"),
        "{lines:#?}"
    );
    assert!(has("  running  e2/busy on node7"), "{lines:#?}");
    assert!(has("  pending  e2/eval (0/1 configs done)"), "{lines:#?}");
    assert!(has("  queue: 101_[0] PENDING (Dependency)"), "{lines:#?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("1 done, 1 running, 1 failed, 2 pending")
    );

    let lines = status(&out, &tmp.path().join("no-squeue")).expect("status without squeue");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("squeue not available: `")
                && l.contains("no-squeue -h -j 100,101")),
        "{lines:#?}"
    );
}

#[test]
fn status_counts_a_resubmitted_unit_once_and_survives_a_bad_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let (sbatch, _) = fake_sbatch(tmp.path(), &["1", "2"]);
    let opts = SlurmOptions {
        sbatch,
        ..SlurmOptions::default()
    };
    submit(
        &out,
        &[unit("e", "j", false, &[("a", "h")])],
        &["w".to_string()],
        &opts,
    )
    .expect("first");
    submit(
        &out,
        &[unit("e", "j", false, &[("a", "h")])],
        &["w".to_string()],
        &opts,
    )
    .expect("second");
    std::fs::create_dir_all(out.join(".slurm/20000101T000000Z-1")).expect("mkdir");
    let lines = status(&out, Path::new("/nonexistent/squeue")).expect("status");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("skipped ") && l.contains("submission.json")),
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.trim_start().starts_with("pending"))
            .count(),
        1,
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "  (every unit was submitted again later)"),
        "{lines:#?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("0 done, 0 running, 0 failed, 1 pending")
    );
    assert_eq!(
        status(&tmp.path().join("empty"), Path::new("squeue"))
            .expect("empty")
            .len(),
        2
    );
}
