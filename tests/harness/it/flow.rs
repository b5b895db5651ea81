//! KITTI (optical flow): the siamese pixel-wise head learns the fixture's shifts between the
//! frames, with an end-point error far below that of the train-mean flow, and does not when the
//! training flow files are shuffled among the frame pairs. ViRB's `target: viz` protocol runs and
//! reports its accuracy in `test_details`.
use std::fs;
use virb_plugin_kit::flow_png;
use virb_tests::{experiment_list, read_json, resnet18_weights, Env, IMAGE_SIZE};

/// 4 shifts x 10 pairs: 40 pairs, ViRB's split 36 train and 4 test (one per shift).
const SHIFTS: &str = "4";

fn setup(env: &Env, per_shift: (u32, u32), epochs: u32, options: &str) {
    let out = env.host(&[
        "fixtures",
        "KITTI",
        "data",
        "--classes",
        SHIFTS,
        "--train-per-class",
        &per_shift.0.to_string(),
        "--test-per-class",
        &per_shift.1.to_string(),
        "--image-size",
        &IMAGE_SIZE.to_string(),
    ]);
    assert!(out.ok(), "{}", out.stderr);
    env.write(
        "experiments.yaml",
        &experiment_list(resnet18_weights(), "resnet18"),
    );
    env.write(
        "virb.yaml",
        &format!(
            "KITTI:\n  task: KITTI\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: {epochs}\n  batch_size: 6\n  image_size: {IMAGE_SIZE}\n{options}"
        ),
    );
}

fn training(env: &Env) -> std::path::PathBuf {
    env.path("data/KITTI/training")
}

/// The sorted sample ids, split as ViRB: the first 90% train.
fn split(env: &Env) -> (Vec<String>, Vec<String>) {
    let mut stems: Vec<String> = fs::read_dir(training(env).join("image_2"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix("_10.png").map(String::from)
        })
        .collect();
    stems.sort();
    let test = stems.split_off(stems.len() * 9 / 10);
    (stems, test)
}

fn flow(env: &Env, stem: &str) -> flow_png::FlowField {
    flow_png::read(&training(env).join(format!("flow_occ/{stem}_10.png"))).unwrap()
}

/// EPE (per image over valid pixels, averaged over images) of predicting the mean training flow
/// (over every valid training pixel) everywhere.
fn mean_flow_epe(env: &Env) -> f64 {
    let (train, test) = split(env);
    let (mut su, mut sv, mut n) = (0.0, 0.0, 0.0);
    for stem in &train {
        let f = flow(env, stem);
        for i in (0..f.u.len()).filter(|&i| f.valid[i]) {
            su += f.u[i] as f64;
            sv += f.v[i] as f64;
            n += 1.0;
        }
    }
    let (mu, mv) = (su / n, sv / n);
    let per_image: Vec<f64> = test
        .iter()
        .map(|stem| {
            let f = flow(env, stem);
            let errors: Vec<f64> = (0..f.u.len())
                .filter(|&i| f.valid[i])
                .map(|i| (f.u[i] as f64 - mu).hypot(f.v[i] as f64 - mv))
                .collect();
            errors.iter().sum::<f64>() / errors.len() as f64
        })
        .collect();
    per_image.iter().sum::<f64>() / per_image.len() as f64
}

fn results(env: &Env) -> serde_json::Value {
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    read_json(&env.path("out/probe/KITTI-adam/results.json"))
}

#[test]
fn kitti_flow_beats_the_mean_flow_baseline() {
    let env = Env::new();
    setup(&env, (8, 2), 12, "");
    let baseline = mean_flow_epe(&env);
    assert!(
        baseline > 2.0,
        "the fixture's shifts are 4 px long: {baseline}"
    );
    let r = results(&env);
    assert_eq!(r["test_size"], 4);
    let epe = r["test_metrics"]["epe"].as_f64().unwrap();
    let fl_all = r["test_metrics"]["fl_all"].as_f64().unwrap();
    eprintln!("KITTI: EPE {epe} px (Fl-all {fl_all}%), train-mean flow {baseline} px");
    assert!(
        epe < 0.5 * baseline,
        "EPE {epe} px, train-mean flow {baseline} px (Fl-all {fl_all}%)"
    );
}

#[test]
fn kitti_flow_does_not_learn_shuffled_flow() {
    let env = Env::new();
    setup(&env, (8, 2), 12, "");
    let baseline = mean_flow_epe(&env);
    // Pair `i` shows shift `c = i % 4` (frame B tinted with its hue); its `j = i / 4`-th pair
    // gets the flow file of a pair with shift `(c + 2 + j) % 4`. Over the 9 training pairs of a
    // shift the assigned flows are spread over all four shifts (3, 2, 2, 2), so what the frames
    // tell about their new flow is only a small pull away from the mean (a random permutation
    // leaves about a quarter of the pairs with a flow of their own shift, which a head learns).
    let (train, _) = split(&env);
    let dir = training(&env).join("flow_occ");
    let files: Vec<Vec<u8>> = train
        .iter()
        .map(|s| fs::read(dir.join(format!("{s}_10.png"))).unwrap())
        .collect();
    // Frames come in two heights (as KITTI's 375 and 376 rows): a pair only takes a flow file
    // of its own size, the `j`-th such one of the wanted shift (round robin).
    assert_eq!(train.len(), 36);
    let height = |k: usize| flow(&env, &train[k]).height;
    let heights: Vec<u32> = (0..train.len()).map(height).collect();
    for (i, stem) in train.iter().enumerate() {
        let (c, j) = (i % 4, i / 4);
        let wanted = (c + 2 + j) % 4;
        let candidates: Vec<usize> = (0..train.len())
            .filter(|&k| k % 4 == wanted && heights[k] == heights[i])
            .collect();
        let from = candidates[j % candidates.len()];
        fs::write(dir.join(format!("{stem}_10.png")), &files[from]).unwrap();
    }
    let r = results(&env);
    let epe = r["test_metrics"]["epe"].as_f64().unwrap();
    eprintln!("KITTI: EPE {epe} px with shuffled training flow, train-mean flow {baseline} px");
    assert!(
        epe > 0.8 * baseline,
        "EPE {epe} px with shuffled training flow, train-mean flow {baseline} px"
    );
}

#[test]
fn kitti_viz_target_reports_virbs_accuracy_in_details() {
    let env = Env::new();
    setup(&env, (4, 1), 1, "  task_options:\n    target: viz\n");
    // `viz` reads the visualisation only.
    fs::remove_dir_all(training(&env).join("flow_occ")).unwrap();
    let r = results(&env);
    let details = &r["test_details"];
    assert_eq!(details["target"], "viz", "{details}");
    let acc = details["viz_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{details}");
    assert!(
        r["test_metrics"]["epe"].is_null(),
        "viz predicts no flow: {}",
        r["test_metrics"]
    );
}

#[test]
fn kitti_names_a_flow_map_of_the_wrong_size() {
    let env = Env::new();
    setup(&env, (4, 1), 1, "");
    let bad = training(&env).join("flow_occ/000003_10.png");
    let field = flow_png::FlowField {
        width: 10,
        height: 5,
        u: vec![0.0; 50],
        v: vec![0.0; 50],
        valid: vec![true; 50],
    };
    flow_png::write(&bad, &field).unwrap();
    let out = env.run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("data/KITTI/training/flow_occ/000003_10.png is 10x5")
            && out.stderr.contains("64x"),
        "{}",
        out.stderr
    );
    assert!(env.results().is_empty());
}
