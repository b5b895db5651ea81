//! Unit tests of the batch script, submission (with a fake sbatch) and status; one `#[ignore]`d
//! test against a real Slurm (`scripts/slurm-local.sh up`, then `. /tmp/virb-slurm/env.sh`).
use super::*;
use std::os::unix::fs::PermissionsExt;

const AWKWARD: &[&str] = &[
    "plain",
    "with space",
    "it's",
    "say \"hi\"",
    "$HOME",
    "`x`",
    "a\\b",
    "",
    "tab\there",
    "*",
];

pub(super) fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub(super) fn unit(experiment: &str, job: &str, eval_only: bool, configs: &[(&str, &str)]) -> Unit {
    Unit {
        experiment: experiment.into(),
        job: job.into(),
        eval_only,
        configs: configs
            .iter()
            .map(|(c, h)| (c.to_string(), h.to_string()))
            .collect(),
    }
}

/// A worker that writes its arguments, NUL-separated, to `$VIRB_TEST_ARGS`.
fn arg_recorder(dir: &Path) -> PathBuf {
    let path = dir.join("worker");
    executable(
        &path,
        "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$VIRB_TEST_ARGS\"\n",
    );
    path
}

#[test]
fn shell_quote_round_trips_through_sh() {
    let quoted: Vec<String> = AWKWARD.iter().map(|w| shell_quote(w)).collect();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {}", quoted.join(" ")))
        .output()
        .expect("sh");
    let words: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf8")
        .split_terminator('\0')
        .collect();
    assert_eq!(words, AWKWARD);
    assert_eq!(shell_quote("/abs/virb-host"), "/abs/virb-host");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}

#[test]
fn job_script_has_sbatch_lines_and_runs_its_unit_with_every_argument_intact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sub 'mission' \"x\" 5%");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("units.txt"), "e1/train\ne2/train\ne1/eval\n").expect("units");
    let worker = arg_recorder(tmp.path());
    let mut argv = vec![worker.display().to_string(), "run".to_string()];
    argv.extend(AWKWARD.iter().map(|s| s.to_string()));
    let opts = SlurmOptions {
        partition: Some("gpu".into()),
        account: Some("my lab".into()),
        gres: Some("gpu:1".into()),
        time: Some("12:00:00".into()),
        cpus_per_task: Some(8),
        mem: Some("64G".into()),
        ..SlurmOptions::default()
    };
    let script = job_script(&dir, Path::new("/work dir"), &argv, &opts);
    let sbatch: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("#SBATCH"))
        .collect();
    let logs = dir
        .join("logs")
        .display()
        .to_string()
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    assert_eq!(
        sbatch,
        [
            "#SBATCH --job-name=virb".to_string(),
            format!("#SBATCH --output=\"{logs}/%A_%a.out\""),
            "#SBATCH --chdir=\"/work dir\"".to_string(),
            "#SBATCH --partition=gpu".to_string(),
            "#SBATCH --account=\"my lab\"".to_string(),
            "#SBATCH --gres=gpu:1".to_string(),
            "#SBATCH --time=12:00:00".to_string(),
            "#SBATCH --mem=64G".to_string(),
            "#SBATCH --cpus-per-task=8".to_string(),
        ]
    );
    let job = dir.join("job.sh");
    std::fs::write(&job, &script).expect("write job.sh");
    let record = tmp.path().join("args");
    // Task 0 of the eval-only array (offset 2) runs line 3.
    let ran = Command::new("bash")
        .arg(&job)
        .arg("2")
        .env("SLURM_ARRAY_TASK_ID", "0")
        .env("VIRB_TEST_ARGS", &record)
        .output()
        .expect("bash");
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(String::from_utf8_lossy(&ran.stderr).starts_with("virb: unit e1/eval on "));
    let got = std::fs::read_to_string(&record).expect("worker ran");
    let mut expected: Vec<&str> = vec!["run"];
    expected.extend(AWKWARD);
    expected.extend(["--only", "e1/eval"]);
    assert_eq!(got.split_terminator('\0').collect::<Vec<_>>(), expected);
    // A task past the end of units.txt fails with a message instead of running the worker bare.
    let out = Command::new("bash")
        .arg(&job)
        .arg("2")
        .env("SLURM_ARRAY_TASK_ID", "1")
        .output()
        .expect("bash");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no unit for array task 1 (offset 2)"));
}

/// A fake sbatch that appends its arguments (one line per call, NUL-separated) to `calls` and
/// prints ids from `ids` in turn; an id `FAIL` makes that call fail.
pub(super) fn fake_sbatch(dir: &Path, ids: &[&str]) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls");
    let path = dir.join("sbatch");
    let mut cases = String::new();
    for (i, id) in ids.iter().enumerate() {
        let action = if *id == "FAIL" {
            "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1".to_string()
        } else {
            format!("echo '{id}'")
        };
        cases.push_str(&format!("  {}) {action} ;;\n", i + 1));
    }
    executable(
        &path,
        &format!(
            "#!/bin/sh\nprintf '%s\\0' \"$@\" >> '{calls}'; echo >> '{calls}'\nn=$(wc -l < '{calls}')\ncase $n in\n{cases}esac\n",
            calls = calls.display()
        ),
    );
    (path, calls)
}

fn calls(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_terminator('\0').map(str::to_string).collect())
        .collect()
}

#[test]
fn submit_writes_the_files_and_chains_the_eval_only_array() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sbatch, log) = fake_sbatch(tmp.path(), &["4242;cluster", "4243"]);
    let opts = SlurmOptions {
        extra_args: vec!["--qos=high".into()],
        max_parallel: Some(2),
        sbatch,
        ..SlurmOptions::default()
    };
    let units = [
        unit("e1", "eval", true, &[("c", "h1")]),
        unit("e1", "train", false, &[("lr1", "h2"), ("lr2", "h3")]),
        unit("e2", "train", false, &[("lr1", "h4")]),
    ];
    let out = tmp.path().join("out");
    let worker = vec!["/abs/virb-host".to_string(), "run".to_string()];
    let sub = submit(&out, &units, &worker, &opts).expect("submit");
    assert_eq!(sub.job_ids, ["4242", "4243"]);
    assert_eq!(sub.units, 3);
    assert!(
        sub.dir.starts_with(out.join(".slurm")),
        "{}",
        sub.dir.display()
    );
    assert!(sub.dir.join("logs").is_dir());
    let units_txt = std::fs::read_to_string(sub.dir.join("units.txt")).expect("units.txt");
    assert_eq!(units_txt, "e1/train\ne2/train\ne1/eval\n");
    let script = sub.dir.join("job.sh").display().to_string();
    let sent = calls(&log);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0],
        ["--parsable", "--array=0-1%2", "--qos=high", &script, "0"]
    );
    assert_eq!(
        sent[1],
        [
            "--parsable",
            "--array=0-0%2",
            "--dependency=afterany:4242",
            "--qos=high",
            &script,
            "2"
        ]
    );
    let record: SubmissionRecord = serde_json::from_str(
        &std::fs::read_to_string(sub.dir.join("submission.json")).expect("json"),
    )
    .expect("parse");
    assert_eq!(
        record.units.iter().map(Unit::key).collect::<Vec<_>>(),
        ["e1/train", "e2/train", "e1/eval"]
    );
    assert_eq!(
        record.units[0].configs,
        [
            ("lr1".to_string(), "h2".to_string()),
            ("lr2".into(), "h3".into())
        ]
    );
    assert_eq!(record.arrays[1].first_unit, 2);
    assert_eq!(record.worker_argv, worker);
    assert!(record.error.is_none());
    // A second submission in the same second gets its own folder.
    let (sbatch, _) = fake_sbatch(&tmp.path().join("again").tap_mkdir(), &["7"]);
    let again = submit(
        &out,
        &units[1..],
        &worker,
        &SlurmOptions {
            sbatch,
            ..SlurmOptions::default()
        },
    )
    .expect("again");
    assert_ne!(again.dir, sub.dir);
    assert_eq!(again.job_ids, ["7"]);
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

#[test]
fn a_missing_or_failing_sbatch_is_an_error_that_shows_the_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let units = [unit("e", "j", false, &[("c", "h")])];
    let worker = vec!["virb-host".to_string()];
    let missing = SlurmOptions {
        sbatch: tmp.path().join("no-sbatch"),
        ..SlurmOptions::default()
    };
    let err = submit(&out, &units, &worker, &missing)
        .expect_err("missing sbatch")
        .to_string();
    assert!(
        err.contains(&format!(
            "`{}/no-sbatch --parsable --array=0-0",
            tmp.path().display()
        )),
        "{err}"
    );
    assert!(
        err.contains("could not be run") && err.contains("sbatch is installed"),
        "{err}"
    );
    // Nothing submitted: no submission folder left for `status`.
    assert_eq!(
        std::fs::read_dir(out.join(".slurm")).expect("root").count(),
        0
    );

    let (sbatch, _) = fake_sbatch(tmp.path(), &["FAIL"]);
    let err = submit(
        &out,
        &units,
        &worker,
        &SlurmOptions {
            sbatch,
            ..SlurmOptions::default()
        },
    )
    .expect_err("failing sbatch")
    .to_string();
    assert!(
        err.contains("invalid partition specified: nope") && err.contains("[slurm]"),
        "{err}"
    );
}

#[test]
fn a_failed_eval_only_array_reports_the_submitted_training_array() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sbatch, _) = fake_sbatch(tmp.path(), &["11", "FAIL"]);
    let units = [
        unit("e", "t", false, &[("c", "h")]),
        unit("e", "v", true, &[("c", "h")]),
    ];
    let out = tmp.path().join("out");
    let err = submit(
        &out,
        &units,
        &["w".to_string()],
        &SlurmOptions {
            sbatch,
            ..SlurmOptions::default()
        },
    )
    .expect_err("second sbatch fails");
    let SlurmError::Partial { submitted, dir, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(submitted, &["11"]);
    let text = std::fs::read_to_string(dir.join("submission.json")).expect("record kept");
    assert!(text.contains("invalid partition"), "{text}");
    assert!(err.to_string().contains("scancel 11"), "{err}");
}

#[test]
fn nothing_is_submitted_without_units_or_with_bad_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = SlurmOptions {
        sbatch: tmp.path().join("never-run"),
        ..SlurmOptions::default()
    };
    let err = submit(tmp.path(), &[], &["w".to_string()], &opts).expect_err("no units");
    assert!(matches!(err, SlurmError::NothingToSubmit), "{err:?}");
    let err = submit(
        tmp.path(),
        &[unit("a/b", "j", false, &[])],
        &["w".to_string()],
        &opts,
    )
    .expect_err("slash");
    assert!(err.to_string().contains("\"a/b/j\""), "{err}");
    assert!(!tmp.path().join(".slurm").exists());
}

/// Needs a real Slurm: `scripts/slurm-local.sh up && . /tmp/virb-slurm/env.sh`, then
/// `cargo test -p virb-host --bins slurm::tests::real_slurm -- --ignored`.
#[test]
#[ignore = "needs a running Slurm (scripts/slurm-local.sh up)"]
fn real_slurm_runs_each_unit_once_and_eval_only_after_training() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out 'q' \"dq\" 5%");
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    // The worker: $1 = "--only", $2 = the unit; training sleeps so that the order shows.
    let body = r#"u=$(echo "$2" | tr / _); date +%s.%N > "$0/$u.start"; case "$2" in */train*) sleep 2;; esac; printf '%s|%s|%s\n' "$SLURM_ARRAY_JOB_ID" "$SLURM_ARRAY_TASK_ID" "$*" > "$0/$u.done""#;
    let worker = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        body.to_string(),
        marks.display().to_string(),
    ];
    let units = [
        unit("e1", "train", false, &[("c", "h")]),
        unit("e2", "train", false, &[("c", "h")]),
        unit("e3", "train", false, &[("c", "h")]),
        unit("e1", "eval", true, &[("c", "h")]),
        unit("e2", "eval", true, &[("c", "h")]),
    ];
    let sub = submit(&out, &units, &worker, &SlurmOptions::default()).expect("submit");
    assert_eq!(sub.job_ids.len(), 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_dir(&marks)
        .expect("marks")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.path().extension().is_some_and(|x| x == "done"))
                .unwrap_or(false)
        })
        .count()
        < 5
    {
        assert!(
            std::time::Instant::now() < deadline,
            "tasks did not finish; logs in {}",
            sub.dir.join("logs").display()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let read = |name: &str| {
        std::fs::read_to_string(marks.join(name))
            .expect(name)
            .trim()
            .to_string()
    };
    for (i, u) in units.iter().enumerate() {
        let key = u.key();
        let (job, task) = if u.eval_only {
            (&sub.job_ids[1], i - 3)
        } else {
            (&sub.job_ids[0], i)
        };
        assert_eq!(
            read(&format!("{}.done", key.replace('/', "_"))),
            format!("{job}|{task}|--only {key}")
        );
    }
    let time = |name: &str| read(name).parse::<f64>().expect("time");
    let last_train = ["e1_train", "e2_train", "e3_train"]
        .map(|u| time(&format!("{u}.start")))
        .into_iter()
        .fold(0.0, f64::max);
    for eval in ["e1_eval", "e2_eval"] {
        assert!(
            time(&format!("{eval}.start")) >= last_train + 2.0,
            "{eval} started before training ended"
        );
    }
    let lines = status(&out, Path::new("squeue")).expect("status");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("0 done, 0 running, 0 failed, 5 pending")
    );
}
