//! Reruns: an identical rerun of a finished run is answered by the launcher from its stamp
//! (without libtorch or a plugin) with the same table; any change to an input or a result makes
//! the next run do the work again; a forced or failed run leaves no stamp to trust.
use std::path::Path;
use virb_tests::{resnet18_weights, Env, Output, IMAGE_SIZE};

/// A named change to the test's folder.
type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);

/// What the launcher says when a stamp answers.
const SERVED: &str = "nothing changed since this run finished";

fn run(env: &Env, extra: &[&str]) -> Output {
    env.run_stamped(extra)
}

/// A CalTech-101 fixture and a one-config job of a ResNet-18 whose weights are a copy in the
/// test's folder (so the test may replace them).
fn setup() -> Env {
    let env = Env::new();
    env.caltech_fixture(3, 4, 2);
    std::fs::copy(resnet18_weights(), env.path("w.pt")).unwrap();
    env.write(
        "experiments.yaml",
        "probe:\n  weights: w.pt\n  encoder: resnet18\n",
    );
    env.write(
        "virb.yaml",
        &format!("CalTech-101:\n  task: CalTech-101\n  training_configs:\n    adam-0.001: {{optimizer: adam, lr: 0.001}}\n  num_epochs: 2\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"),
    );
    env
}

fn stamps(env: &Env) -> usize {
    std::fs::read_dir(env.path("reruns"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// A folder under `root` holding files (a class folder of the fixture).
fn some_class_folder(root: &Path) -> std::path::PathBuf {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        if entries
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "jpg"))
        {
            return dir;
        }
        stack.extend(entries.into_iter().filter(|p| p.is_dir()));
    }
    panic!("no image folder under {}", root.display());
}

#[test]
fn an_identical_rerun_is_answered_from_its_stamp_until_anything_changes() {
    let env = setup();
    let first = run(&env, &[]);
    assert!(first.ok(), "{}", first.stderr);
    assert!(!first.stderr.contains(SERVED), "{}", first.stderr);
    assert_eq!(stamps(&env), 1);
    let second = run(&env, &[]);
    assert!(second.ok(), "{}", second.stderr);
    assert!(second.stderr.contains(SERVED), "{}", second.stderr);
    // What virb-host-core itself prints on an identical rerun (every result done earlier).
    let core = env.run();
    assert!(
        core.ok() && !core.stderr.contains(SERVED),
        "{}",
        core.stderr
    );
    assert!(core.stdout.contains("done earlier: "), "{}", core.stdout);
    assert_eq!(second.stdout, core.stdout);
    // The launcher answered alone: virb-host-core, which names its device, never started.
    assert!(!second.stderr.contains("device cpu"), "{}", second.stderr);

    let image_folder = some_class_folder(&env.path("data"));
    let result = env.results()[0].clone();
    let changes: Vec<Change> = vec![
        (
            "the virb config edited",
            Box::new(|| {
                let text = std::fs::read_to_string(env.path("virb.yaml")).unwrap();
                env.write("virb.yaml", &format!("{text}# edited\n"));
            }),
        ),
        (
            "a site config created",
            Box::new(|| {
                env.write("virb.toml", "# site defaults\n");
            }),
        ),
        (
            "the weights replaced by a copy",
            Box::new(|| {
                std::fs::copy(env.path("w.pt"), env.path("w2.pt")).unwrap();
                std::fs::rename(env.path("w2.pt"), env.path("w.pt")).unwrap();
            }),
        ),
        (
            "a result deleted",
            Box::new(|| std::fs::remove_file(&result).unwrap()),
        ),
        (
            "an image added to a class folder",
            Box::new(|| {
                let any = std::fs::read_dir(&image_folder)
                    .unwrap()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "jpg"))
                    .unwrap();
                std::fs::copy(any, image_folder.join("extra.jpg")).unwrap();
            }),
        ),
        (
            "a file added to the plugin folder",
            Box::new(|| std::fs::write(env.plugins.join("notes.txt"), "x").unwrap()),
        ),
    ];
    for (what, change) in changes {
        change();
        let again = run(&env, &[]);
        assert!(again.ok(), "{what}: {}", again.stderr);
        assert!(
            !again.stderr.contains(SERVED),
            "{what}: answered from a stale stamp: {}",
            again.stderr
        );
        let served = run(&env, &[]);
        assert!(
            served.stderr.contains(SERVED),
            "{what}: the identical run after it was not answered from its stamp: {}",
            served.stderr
        );
        assert_eq!(served.stdout, env.run().stdout, "{what}");
    }
    // The result deleted above was trained again, and is in the table.
    assert!(result.exists());

    // --force always does the work, twice in a row too.
    for _ in 0..2 {
        let forced = run(&env, &["--force"]);
        assert!(forced.ok(), "{}", forced.stderr);
        assert!(!forced.stderr.contains(SERVED), "{}", forced.stderr);
    }
    // VIRB_NO_RERUN_STAMP=1 (the harness's default) neither reads nor writes stamps.
    let off = env.run();
    assert!(off.ok() && !off.stderr.contains(SERVED), "{}", off.stderr);
}

#[test]
fn a_failed_run_removes_the_stamp_of_its_command() {
    let env = setup();
    let first = run(&env, &[]);
    assert!(first.ok(), "{}", first.stderr);
    assert_eq!(stamps(&env), 1);
    std::fs::remove_file(env.path("w.pt")).unwrap();
    let failed = run(&env, &[]);
    assert_eq!(failed.code, 2, "{}", failed.stderr);
    assert!(failed.stderr.contains("w.pt"), "{}", failed.stderr);
    assert_eq!(stamps(&env), 0, "the failed run's stamp is still there");
    // Weights back (same bytes): the run goes through the core, finds every result, and stamps.
    std::fs::copy(resnet18_weights(), env.path("w.pt")).unwrap();
    let back = run(&env, &[]);
    assert!(
        back.ok() && !back.stderr.contains(SERVED),
        "{}",
        back.stderr
    );
    assert!(back.stdout.contains("done earlier: "), "{}", back.stdout);
    assert_eq!(stamps(&env), 1);
}
