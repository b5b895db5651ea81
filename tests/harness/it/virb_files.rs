//! ViRB's own config files, unchanged (`tests/fixtures/virb-configs/`: `all.yaml` with every job
//! of the paper, `exemplar_grid_search.yaml`, `imagenetv2.yaml`), load and run end to end on
//! fixture data of every task they name. `--max-epochs 1` keeps each job to one epoch (the
//! documented smoke-test flag); everything else is as ViRB's files say: 224-px inputs,
//! `pre_encode: false` (live encoding) for the pixel-wise jobs, ViRB's batch sizes and grids.
use std::{collections::BTreeSet, fs, path::Path};
use virb_tests::{read_json, root, weights, Env};

/// The task types a ViRB config file names.
fn tasks_of(file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("task:"))
        .map(|t| t.trim().trim_matches('"').to_string())
        .collect()
}

/// `virb-host run` of a ViRB file, one epoch per job.
fn run(env: &Env, file: &Path, out: &str) -> virb_tests::Output {
    env.host(&[
        "run",
        "--experiment-list",
        "experiments.yaml",
        "--virb-configs",
        file.to_str().unwrap(),
        "--data-root",
        "data",
        "--out",
        out,
        "--max-epochs",
        "1",
    ])
}

/// Every (job, config) of a ViRB file has a complete result with a finite headline metric.
fn assert_every_job_ran(env: &Env, file: &Path, out: &str) {
    let virb: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(file).unwrap()).unwrap();
    let mut seen = 0;
    for (job, body) in virb.as_mapping().unwrap() {
        let Some(configs) = body.get("training_configs").and_then(|c| c.as_mapping()) else {
            continue;
        };
        let job = job.as_str().unwrap();
        for cfg in configs.keys() {
            let path = env.path(&format!(
                "{out}/probe/{job}-{}/results.json",
                cfg.as_str().unwrap()
            ));
            assert!(path.is_file(), "{} missing", path.display());
            let r = read_json(&path);
            let primary = r["primary_metric"].as_str().unwrap().to_string();
            assert!(
                r["test_metrics"][&primary]
                    .as_f64()
                    .is_some_and(f64::is_finite),
                "{job}: {r}"
            );
            assert_eq!(r["epochs"], 1, "{job}");
            seen += 1;
        }
    }
    assert!(seen > 0);
}

#[test]
fn virbs_all_exemplar_grid_search_and_imagenetv2_files_run_unchanged() {
    let env = Env::new();
    let dir = root().join("tests/fixtures/virb-configs");
    let (all, grid, v2) = (
        dir.join("all.yaml"),
        dir.join("exemplar_grid_search.yaml"),
        dir.join("imagenetv2.yaml"),
    );
    let tasks: BTreeSet<String> = tasks_of(&all).into_iter().chain(tasks_of(&grid)).collect();
    assert_eq!(tasks_of(&all).len(), 18, "ViRB's all.yaml has 18 jobs");
    for task in &tasks {
        if task == "NYUWalkable" {
            continue;
        }
        // KITTI splits its sorted pairs 90/10: 10 pairs leave one for test.
        let (classes, train, test) = if task == "KITTI" {
            (2, 4, 1)
        } else {
            (2, 2, 1)
        };
        env.fixture(task, classes, train, test, 32);
    }
    // NYUDepth and NYUWalkable share `nyu/` (images, depths, walkable masks), as in ViRB's
    // data: each NYUDepth fixture image gets a walkable mask of its size (its lower half).
    for split in ["train", "test"] {
        for f in fs::read_dir(env.path(&format!("data/nyu/{split}/images"))).unwrap() {
            let f = f.unwrap().path();
            let img = virb_plugin_kit::image::load_rgb(&f).unwrap();
            let (w, h) = (img.width, img.height);
            let mask: Vec<u8> = (0..w * h)
                .flat_map(|i| [if i / w >= h / 2 { 255 } else { 0 }; 3])
                .collect();
            let to = env.path(&format!("data/nyu/{split}/walkable"));
            fs::create_dir_all(&to).unwrap();
            virb_plugin_kit::draw::write_png(&to.join(f.file_name().unwrap()), w, h, &mask)
                .unwrap();
        }
    }
    env.fixture("Imagenetv2", 2, 1, 1, 32);
    env.write(
        "experiments.yaml",
        &format!("probe: '{}'\n", weights().display()),
    );

    let out = run(&env, &all, "out");
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("note: --max-epochs 1: "),
        "{}",
        out.stderr
    );
    assert_every_job_ran(&env, &all, "out");
    // The pixel-wise jobs trained live, as the file says (`pre_encode: false`).
    let depth = read_json(&env.path("out/probe/THORDepth-adam-0.0001-l1/results.json"));
    assert_eq!(depth["timings_s"]["features"]["train"], "live", "{depth}");

    // ViRB's imagenetv2.yaml evaluates the Imagenet heads all.yaml trained.
    let out = run(&env, &v2, "out");
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let r = read_json(&env.path("out/probe/Imagenetv2-adam-0.0001/results.json"));
    assert!(
        r["evaluated_head"]
            .as_str()
            .unwrap()
            .ends_with("Imagenet-adam-0.0001"),
        "{r}"
    );

    // The exemplar grid (4 jobs x 6 configs) in its own out/ (its Imagenet job has other
    // settings under the same config names as all.yaml's).
    let out = run(&env, &grid, "grid-out");
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    assert_every_job_ran(&env, &grid, "grid-out");
    for job in [
        "Imagenet",
        "CLEVERNumObjects",
        "THORDepth",
        "CityscapesSemanticSegmentation",
    ] {
        assert!(
            env.path(&format!("grid-out/probe/{job}.selection.json"))
                .is_file(),
            "{job}"
        );
    }
}
