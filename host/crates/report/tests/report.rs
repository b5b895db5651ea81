//! End-to-end: a results tree in a temporary folder, `run`, and the files it writes.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use virb_report::{run, ReportError, ReportOptions};

/// One `results.json` to write.
#[derive(Clone)]
struct R {
    exp: &'static str,
    job: &'static str,
    task: &'static str,
    config: &'static str,
    metric: &'static str,
    higher: bool,
    test: Option<f64>,
    val: Option<f64>,
    std: Option<f64>,
    repeats: u32,
    diverged: bool,
    evaluated: bool,
}

fn r(exp: &'static str, job: &'static str, config: &'static str, test: f64) -> R {
    R {
        exp,
        job,
        task: job,
        config,
        metric: "top1_accuracy",
        higher: true,
        test: Some(test),
        val: None,
        std: None,
        repeats: 1,
        diverged: false,
        evaluated: false,
    }
}

impl R {
    fn val(mut self, v: f64) -> Self {
        self.val = Some(v);
        self
    }
    fn repeated(mut self, n: u32, std: f64) -> Self {
        self.repeats = n;
        self.std = Some(std);
        self
    }
    fn lower(mut self, metric: &'static str) -> Self {
        self.metric = metric;
        self.higher = false;
        self
    }
    fn diverged(mut self) -> Self {
        self.diverged = true;
        self.test = None;
        self
    }
    fn evaluating(mut self) -> Self {
        self.evaluated = true;
        self
    }
    fn json(&self, out: &Path) -> Value {
        let mut v = json!({
            "schema": "virb.results/2",
            "experiment": self.exp,
            "job": self.job,
            "config": self.config,
            "task": {"name": self.task, "family": "classification", "plugin": {"name": "x", "version": "0.1.0"}},
            "encoder": {"name": "resnet50", "weights": "w.pth"},
            "hyperparameters": {"lr": 0.001},
            "status": if self.diverged { "diverged" } else { "ok" },
            "primary_metric": self.metric,
            "higher_is_better": self.higher,
            "test_metrics": match self.test {
                Some(t) => json!({ self.metric: t, "other_metric": 0.5 }),
                None => Value::Null,
            },
            "repeats": self.repeats,
            "epochs": 20,
            "finished_at": "2026-01-01T00:00:00Z",
        });
        if self.diverged {
            v["error"] = json!("loss is NaN at epoch 3");
        }
        if let Some(s) = self.std {
            v["test_metrics_std"] = json!({ self.metric: s });
        }
        if let Some(val) = self.val {
            v["validation"] = json!({"fraction": 0.1, "size": 40, "metrics": { self.metric: val }});
        }
        if self.evaluated {
            v["evaluated_head"] = json!(out
                .join(self.exp)
                .join(format!("Imagenet-{}", self.config))
                .display()
                .to_string());
        }
        v
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write(out: &Path, rec: &R) {
    let path = out
        .join(rec.exp)
        .join(format!("{}-{}", rec.job, rec.config))
        .join("results.json");
    write_file(
        &path,
        &serde_json::to_string_pretty(&rec.json(out)).unwrap(),
    );
}

const SWAV: &str = "SWAV_800";
const MOCO: &str = "MoCov2_800";
const SUP: &str = "Supervised";
const PIRL: &str = "PIRL";

fn records() -> Vec<R> {
    let inet = |e, c, val, test| r(e, "Imagenet", c, test).val(val);
    let v2 = |e, c, test| {
        let mut x = r(e, "Imagenetv2", c, test).evaluating();
        x.task = "Imagenetv2";
        x
    };
    let ego = |e, c, val, test| {
        r(e, "Egomotion", c, test)
            .lower("rotation_error_deg")
            .val(val)
    };
    vec![
        // Imagenet: validation picks sgd-0.1 (test would pick sgd-0.01).
        inet(SWAV, "adam-0.001", 0.70, 0.72),
        inet(SWAV, "sgd-0.1", 0.74, 0.71),
        inet(SWAV, "sgd-0.01", 0.69, 0.75),
        // A validation tie between adam-0.001 and sgd-0.1: the first in name order wins.
        inet(MOCO, "adam-0.001", 0.65, 0.66),
        inet(MOCO, "sgd-0.1", 0.65, 0.60),
        inet(MOCO, "sgd-0.01", 0.60, 0.70),
        inet(SUP, "adam-0.001", 0.80, 0.76),
        inet(PIRL, "adam-0.001", 0.60, 0.61),
        inet(PIRL, "sgd-0.1", 0.62, 0.63),
        inet(PIRL, "sgd-0.01", 0.55, 0.58),
        // Imagenetv2 follows the Imagenet selection; PIRL lacks the selected head's evaluation.
        v2(SWAV, "adam-0.001", 0.60),
        v2(SWAV, "sgd-0.1", 0.59),
        v2(SWAV, "sgd-0.01", 0.63),
        v2(MOCO, "adam-0.001", 0.55),
        v2(MOCO, "sgd-0.1", 0.50),
        v2(MOCO, "sgd-0.01", 0.58),
        v2(SUP, "adam-0.001", 0.66),
        v2(PIRL, "sgd-0.01", 0.50),
        // CalTech-101: no validation. SWAV: 2 configs -> by test; MoCo: one diverged.
        r(SWAV, "CalTech-101", "adam", 0.85),
        r(SWAV, "CalTech-101", "sgd", 0.88),
        r(MOCO, "CalTech-101", "adam", 0.0).diverged(),
        r(MOCO, "CalTech-101", "sgd", 0.80),
        r(PIRL, "CalTech-101", "adam", 0.70),
        // CIFAR-100: repeats with std; MoCo diverged entirely.
        r(SWAV, "CIFAR-100", "adam", 0.6512).repeated(3, 0.01),
        r(MOCO, "CIFAR-100", "adam", 0.0).diverged(),
        r(SUP, "CIFAR-100", "adam", 0.7).val(0.69).repeated(3, 0.02),
        r(PIRL, "CIFAR-100", "adam", 0.6),
        // Egomotion: lower is better, selected by validation.
        ego(SWAV, "a", 3.0, 2.9),
        ego(SWAV, "b", 2.5, 3.1),
        ego(MOCO, "a", 4.0, 4.2),
        ego(MOCO, "b", 4.5, 3.9),
        ego(SUP, "a", 2.0, 2.2),
        ego(SUP, "b", 2.1, 2.0),
        ego(PIRL, "a", 3.5, 3.4),
        ego(PIRL, "b", 3.6, 3.3),
        // dtd: a single experiment, too few for a scatter plot.
        r(SWAV, "dtd", "adam", 0.7),
    ]
}

/// The tree of the tests, with the files that must be skipped.
fn tree(out: &Path) {
    for rec in records() {
        write(out, &rec);
    }
    write_file(
        &out.join(PIRL).join("Counting-default/results.json"),
        "{ not json",
    );
    let mut old = r(PIRL, "Old", "default", 0.5).json(out);
    old["schema"] = json!("virb.results/1");
    write_file(
        &out.join(PIRL).join("Old-default/results.json"),
        &old.to_string(),
    );
    // Hidden folders and temporary files are not results.
    let hidden = r(SWAV, "Hidden", "x", 0.1).json(out).to_string();
    write_file(
        &out.join(SWAV).join(".checkpoints/Hidden-x/results.json"),
        &hidden,
    );
    write_file(&out.join(".cache/results.json"), &hidden);
    write_file(
        &out.join(SWAV)
            .join("Imagenet-adam-0.001/.results.json.tmp-42"),
        &hidden,
    );
    // An unfinished result (no results.json yet).
    write_file(&out.join(SWAV).join("Pets-adam/head.safetensors"), "");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sample_dir() -> Option<PathBuf> {
    std::env::var_os("VIRB_REPORT_SAMPLE_DIR").map(PathBuf::from)
}

#[test]
fn report_of_a_results_tree() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    tree(&out);
    let summary = run(&ReportOptions::new(&out)).unwrap();
    let dest = out.join("report");
    assert_eq!(summary.dest, dest);

    // Counts.
    assert_eq!(summary.files_found, 38, "{summary:#?}");
    assert_eq!(summary.files_skipped, 2);
    assert_eq!(summary.experiments, 4);
    assert_eq!(summary.jobs, 6);
    // 4 Imagenet + 4 v2 + 3 CalTech + 3 CIFAR (+1 diverged) + 4 Egomotion + 1 dtd.
    assert_eq!(summary.selected, 19);
    assert_eq!(summary.unselectable, 1);
    assert_eq!(summary.test_selected, 1);

    // Warnings: the two bad files, the diverged configs, the skipped plot.
    let w = &summary.warnings;
    let counting = out.join(PIRL).join("Counting-default/results.json");
    assert!(
        w.iter()
            .any(|l| l.starts_with(&format!("skipped {}: not valid JSON", counting.display()))),
        "{w:#?}"
    );
    let old = out.join(PIRL).join("Old-default/results.json");
    assert!(
        w.contains(&format!(
            "skipped {}: schema `virb.results/1`, expected `virb.results/2`",
            old.display()
        )),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|l| l.starts_with(
            "experiment `MoCov2_800`, job `CIFAR-100`, config `adam`: diverged: loss is NaN at epoch 3"
        )),
        "{w:#?}"
    );
    assert!(
        w.contains(&"imagenet_vs_dtd.png not drawn: 1 experiment(s) have results for both `Imagenet` and `dtd`, 2 needed".to_string()),
        "{w:#?}"
    );
    assert!(
        w.contains(&"experiment `PIRL`, eval-only job `Imagenetv2`: config `sgd-0.01` (no result evaluates the head selected for its job; the only config)".to_string()),
        "{w:#?}"
    );
    assert!(!w.iter().any(|l| l.contains("Hidden")), "{w:#?}");
    assert_eq!(w.len(), 6, "{w:#?}");

    // results.csv: the selected configs and the rules.
    let csv = read(&dest.join("results.csv"));
    let expected = "\
experiment,job,task,config,selected_by,metric,value,std,repeats,n_configs,status,higher_is_better
MoCov2_800,Imagenet,Imagenet,adam-0.001,validation,top1_accuracy,0.66,,1,3,ok,true
MoCov2_800,Imagenetv2,Imagenetv2,adam-0.001,evaluated head,top1_accuracy,0.55,,1,3,ok,true
MoCov2_800,CalTech-101,CalTech-101,sgd,only config,top1_accuracy,0.8,,1,2,ok,true
MoCov2_800,CIFAR-100,CIFAR-100,,,top1_accuracy,,,,1,diverged,true
MoCov2_800,Egomotion,Egomotion,a,validation,rotation_error_deg,4.2,,1,2,ok,false
PIRL,Imagenet,Imagenet,sgd-0.1,validation,top1_accuracy,0.63,,1,3,ok,true
PIRL,Imagenetv2,Imagenetv2,sgd-0.01,only config,top1_accuracy,0.5,,1,1,ok,true
PIRL,CalTech-101,CalTech-101,adam,only config,top1_accuracy,0.7,,1,1,ok,true
PIRL,CIFAR-100,CIFAR-100,adam,only config,top1_accuracy,0.6,,1,1,ok,true
PIRL,Egomotion,Egomotion,a,validation,rotation_error_deg,3.4,,1,2,ok,false
SWAV_800,Imagenet,Imagenet,sgd-0.1,validation,top1_accuracy,0.71,,1,3,ok,true
SWAV_800,Imagenetv2,Imagenetv2,sgd-0.1,evaluated head,top1_accuracy,0.59,,1,3,ok,true
SWAV_800,CalTech-101,CalTech-101,sgd,test,top1_accuracy,0.88,,1,2,ok,true
SWAV_800,CIFAR-100,CIFAR-100,adam,only config,top1_accuracy,0.6512,0.01,3,1,ok,true
SWAV_800,dtd,dtd,adam,only config,top1_accuracy,0.7,,1,1,ok,true
SWAV_800,Egomotion,Egomotion,b,validation,rotation_error_deg,3.1,,1,2,ok,false
Supervised,Imagenet,Imagenet,adam-0.001,validation,top1_accuracy,0.76,,1,1,ok,true
Supervised,Imagenetv2,Imagenetv2,adam-0.001,evaluated head,top1_accuracy,0.66,,1,1,ok,true
Supervised,CIFAR-100,CIFAR-100,adam,validation,top1_accuracy,0.7,0.02,3,1,ok,true
Supervised,Egomotion,Egomotion,a,validation,rotation_error_deg,2.2,,1,2,ok,false
";
    assert_eq!(csv, expected);

    let table = read(&dest.join("table.csv"));
    assert_eq!(
        table,
        "\
experiment,Imagenet,Imagenetv2,CalTech-101,CIFAR-100,dtd,Egomotion
MoCov2_800,0.66,0.55,0.8,,,4.2
PIRL,0.63,0.5,0.7,0.6,,3.4
SWAV_800,0.71,0.59,0.88,0.6512,0.7,3.1
Supervised,0.76,0.66,,0.7,,2.2
"
    );

    let md = read(&dest.join("results.md"));
    let table_rows = "\
| experiment | Imagenet | Imagenetv2 | CalTech-101 | CIFAR-100 | dtd | Egomotion |
| :--- | ---: | ---: | ---: | ---: | ---: | ---: |
| MoCov2_800 | 0.6600 | 0.5500 | 0.8000 | diverged | — | 4.2000 |
| PIRL | 0.6300 | 0.5000 | 0.7000 | 0.6000 | — | 3.4000 |
| SWAV_800 | 0.7100 | 0.5900 | 0.8800† | 0.6512 ± 0.0100 | 0.7000 | 3.1000 |
| Supervised | 0.7600 | 0.6600 | — | 0.7000 ± 0.0200 | — | 2.2000 |
";
    assert!(md.contains(table_rows), "{md}");
    assert!(
        md.contains("\n† config selected by its test metric: not every config of the job has a validation metric"),
        "{md}"
    );
    assert!(
        md.contains("- **Imagenet** (task Imagenet): `top1_accuracy`, higher is better\n"),
        "{md}"
    );
    assert!(
        md.contains("- **Imagenetv2** (task Imagenetv2): `top1_accuracy`, higher is better; eval-only, evaluates the heads of `Imagenet`\n"),
        "{md}"
    );
    assert!(
        md.contains("- **Egomotion** (task Egomotion): `rotation_error_deg`, lower is better\n"),
        "{md}"
    );
    assert!(
        md.contains("| SWAV_800 | `sgd-0.1` (validation, 3 configs) | `sgd-0.1` (evaluated head, 3 configs) | `sgd` (test†, 2 configs) |"),
        "{md}"
    );
    assert!(md.contains("## Warnings\n\n- skipped "), "{md}");
    assert!(md.contains("![heatmap.png](heatmap.png)"), "{md}");

    // Plots.
    let mut pngs: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    pngs.sort();
    assert_eq!(
        pngs,
        [
            "heatmap.png",
            "imagenet_vs_CIFAR-100.png",
            "imagenet_vs_CalTech-101.png",
            "imagenet_vs_Egomotion.png",
            "imagenet_vs_Imagenetv2.png"
        ]
    );
    for name in &pngs {
        let img = image::open(dest.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .to_rgb8();
        if name.starts_with("imagenet_vs_") {
            assert_eq!(img.dimensions(), (1000, 760), "{name}");
        } else {
            assert!(
                img.width() >= 600 && img.height() >= 300,
                "{name}: {:?}",
                img.dimensions()
            );
        }
        let colours: std::collections::BTreeSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert!(colours.len() > 20, "{name}: {} colours", colours.len());
    }
    // No temporary files left behind; everything written is listed.
    for entry in std::fs::read_dir(&dest).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "{name}");
        assert!(
            summary.written.contains(&dest.join(&name)),
            "{name} not in {:?}",
            summary.written
        );
    }
    assert_eq!(summary.written.len(), 3 + pngs.len());

    if let Some(sample) = sample_dir() {
        std::fs::create_dir_all(&sample).unwrap();
        for p in &summary.written {
            std::fs::copy(p, sample.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn stale_scatter_plots_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for rec in records() {
        write(&out, &rec);
    }
    let dest = dir.path().join("elsewhere");
    let mut opts = ReportOptions::new(&out);
    opts.dest = Some(dest.clone());
    run(&opts).unwrap();
    assert!(dest.join("imagenet_vs_CalTech-101.png").exists());
    // Now only SWAV has CalTech-101 results: its plot is no longer drawn.
    std::fs::remove_dir_all(out.join(MOCO).join("CalTech-101-sgd")).unwrap();
    std::fs::remove_dir_all(out.join(PIRL).join("CalTech-101-adam")).unwrap();
    let summary = run(&opts).unwrap();
    assert!(!dest.join("imagenet_vs_CalTech-101.png").exists());
    assert_eq!(summary.removed, [dest.join("imagenet_vs_CalTech-101.png")]);
    assert!(!out.join("report").exists());

    // Without plots, PNGs are neither drawn nor removed.
    opts.plots = false;
    let summary = run(&opts).unwrap();
    assert_eq!(summary.written.len(), 3);
    assert!(summary.removed.is_empty());
    assert!(dest.join("heatmap.png").exists());
}

#[test]
fn no_results_is_an_error_that_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");

    let e = run(&ReportOptions::new(&out)).unwrap_err();
    assert!(matches!(e, ReportError::ReadOut { .. }), "{e}");
    assert!(e.to_string().contains("virb-host run --out"), "{e}");

    write_file(&out.join("SWAV/Imagenet-a/results.json"), "[]");
    write_file(&out.join("SWAV/.checkpoints/results.json"), "{}");
    let e = run(&ReportOptions::new(&out)).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, ReportError::NoResults { found: 1, .. }),
        "{text}"
    );
    assert!(
        text.starts_with(&format!(
            "no results under {}: found 1 results.json",
            out.display()
        )),
        "{text}"
    );
    assert!(text.contains("no `schema` field"), "{text}");
    assert!(text.contains("`virb-host run --out"), "{text}");
    assert!(!out.join("report").exists());
}

#[test]
fn a_report_without_imagenet_has_no_scatter_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for rec in records().into_iter().filter(|r| r.job == "Egomotion") {
        write(&out, &rec);
    }
    let summary = run(&ReportOptions::new(&out)).unwrap();
    assert_eq!(
        summary.warnings,
        ["no imagenet_vs_*.png: no results of a job with task `Imagenet`"]
    );
    assert_eq!(summary.written.len(), 4, "{:?}", summary.written);
    let md = read(&out.join("report/results.md"));
    assert!(
        !md.contains("| 2.2000† |") && !md.contains("\n† config"),
        "{md}"
    );
    assert!(md.contains("| Supervised | 2.2000 |"), "{md}");
}

/// ViRB-sized: 12 encoders, 16 jobs with long names, values close together (labels crowd).
#[test]
fn report_of_many_experiments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let exps = [
        "SWAV_200",
        "SWAV_800",
        "SWAV_200_2",
        "MoCov1_200",
        "MoCov2_200",
        "MoCov2_800",
        "PIRL",
        "SimCLR_1x_1000",
        "NPID_200",
        "PCL_200",
        "Supervised",
        "Random",
    ];
    let jobs = [
        "Imagenet",
        "CalTech-101",
        "Pets",
        "dtd",
        "CIFAR-100",
        "SUN397",
        "Eurosat",
        "THORNumSteps",
        "nyuDepth",
        "nyuWalkable",
        "KineticsActionPrediction",
        "CLEVERNumObjects",
        "THORActionPrediction",
        "EgoHands",
        "Cityscapes",
        "TaskonomyInpainting",
    ];
    // Deterministic pseudo-random noise.
    let noise = |i: usize, j: usize| ((i * 7919 + j * 104_729) % 1000) as f64 / 1000.0 - 0.5;
    for (i, exp) in exps.iter().enumerate() {
        let inet = if *exp == "Random" {
            0.05
        } else {
            0.60 + 0.015 * i as f64 + 0.01 * noise(i, 0)
        };
        for (j, job) in jobs.iter().enumerate() {
            if (i + j) % 11 == 5 {
                continue; // some results missing
            }
            let mut rec = r(exp, job, "adam", 0.0);
            rec.test = Some(if j == 0 {
                inet
            } else {
                (0.3 + 0.6 * inet + 0.05 * noise(i, j)).min(1.0)
            });
            if job.starts_with("nyu") {
                rec = rec.lower("mse");
                rec.test = Some(20.0 - 10.0 * inet + noise(i, j));
            }
            write(&out, &rec);
        }
    }
    let summary = run(&ReportOptions::new(&out)).unwrap();
    assert_eq!(summary.experiments, 12);
    assert_eq!(summary.jobs, 16);
    let dest = out.join("report");
    for name in [
        "heatmap.png",
        "imagenet_vs_KineticsActionPrediction.png",
        "imagenet_vs_nyuDepth.png",
    ] {
        let img = image::open(dest.join(name)).unwrap().to_rgb8();
        assert!(img.width() >= 1000, "{name}: {:?}", img.dimensions());
    }
    if let Some(sample) = sample_dir() {
        let sample = sample.join("many");
        std::fs::create_dir_all(&sample).unwrap();
        for p in &summary.written {
            std::fs::copy(p, sample.join(p.file_name().unwrap())).unwrap();
        }
    }
}
