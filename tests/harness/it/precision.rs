//! The run's precision: `--precision` (or `$VIRB_PRECISION`, `auto` by default) is filled into
//! the options of frozen encoders that take one, so it is in every result and cache key; an
//! entry's own `precision` wins; fine-tuning loads the entry's options as written.
use virb_tests::{read_json, resnet18_weights, Env, IMAGE_SIZE};

fn job(name: &str, train_encoder: bool) -> String {
    format!("{name}:\n  task: CalTech-101\n  training_configs:\n    adam: {{optimizer: adam, lr: 0.001}}\n  num_epochs: 1\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n  train_encoder: {train_encoder}\n")
}

fn options(env: &Env, exp: &str, job: &str) -> serde_json::Value {
    read_json(&env.path(&format!("out/{exp}/{job}-adam/results.json")))["encoder"]["options"]
        .clone()
}

#[test]
fn the_run_precision_fills_in_frozen_encoders_and_an_entry_or_fine_tuning_keeps_its_own() {
    let env = Env::new();
    env.caltech_fixture(3, 4, 2);
    let w = resnet18_weights().display().to_string();
    env.write(
        "experiments.yaml",
        &format!("a:\n  weights: '{w}'\n  encoder: resnet18\nb:\n  weights: '{w}'\n  encoder: resnet18\n  options: {{precision: fp32}}\n"),
    );
    env.write(
        "virb.yaml",
        &format!("{}{}", job("frozen", false), job("tuned", true)),
    );
    // The flag wins over $VIRB_PRECISION (the harness sets fp32).
    let out = env.run_with(&["--precision", "bf16"]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(options(&env, "a", "frozen")["precision"], "bf16");
    assert_eq!(
        options(&env, "b", "frozen")["precision"],
        "fp32",
        "the entry's own wins"
    );
    assert!(
        options(&env, "a", "tuned").get("precision").is_none(),
        "fine-tuning keeps the entry's options: {}",
        options(&env, "a", "tuned")
    );
    // `auto`: bf16 where this CPU has bf16 instructions, else fp32; another precision is
    // another result (the frozen job of `a` is redone, the others are not).
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let native = flags
        .split_whitespace()
        .any(|f| f == "amx_bf16" || f == "avx512_bf16");
    let out = env.run_with(&["--precision", "auto"]);
    assert!(out.ok(), "{}", out.stderr);
    let want = if native { "bf16" } else { "fp32" };
    assert_eq!(options(&env, "a", "frozen")["precision"], want);
    let redone = out
        .stdout
        .lines()
        .filter(|l| !l.contains("done earlier"))
        .count();
    let earlier = out.stdout.matches("done earlier").count();
    assert_eq!(
        earlier,
        if native { 4 } else { 3 },
        "{redone} lines redone:\n{}",
        out.stdout
    );
    let bad = env.run_with(&["--precision", "fp8"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("fp8"), "{}", bad.stderr);
}
