//! The shipped configs load and name only tasks the built plugins provide.
use virb_tests::{root, Env};

#[test]
fn shipped_virb_configs_are_valid_and_every_task_is_provided() {
    let env = Env::new();
    env.write("experiments.yaml", "x: 'nowhere.pt'\n");
    let tasks = env.host(&["tasks"]).stdout;
    let dir = root().join("configs/virb_configs");
    let mut all_tasks = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for line in text.lines().filter(|l| l.trim_start().starts_with("task:")) {
            let task = line
                .split(':')
                .nth(1)
                .unwrap()
                .trim()
                .trim_matches('"')
                .to_string();
            assert!(
                tasks.contains(&format!("{task}  [")),
                "{}: task {task} is not provided",
                entry.path().display()
            );
            all_tasks.push(task);
        }
        // The config is valid: a run gets past it and stops only on the (missing) weights,
        // found by the survey before any work.
        let out = env.host(&[
            "run",
            "--experiment-list",
            "experiments.yaml",
            "--virb-configs",
            entry.path().to_str().unwrap(),
        ]);
        assert_eq!(out.code, 2, "{}: {}", entry.path().display(), out.stderr);
        assert!(
            out.stderr.contains("weights file nowhere.pt not found"),
            "{}: {}",
            entry.path().display(),
            out.stderr
        );
    }
    // all.yaml holds every task the plugins provide.
    let all = std::fs::read_to_string(dir.join("all.yaml")).unwrap();
    for line in tasks
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains("  ["))
    {
        let task = line.split("  [").next().unwrap();
        assert!(
            all.contains(&format!("task: \"{task}\"")),
            "all.yaml lacks {task}"
        );
    }
}
