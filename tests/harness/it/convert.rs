//! `virb-host convert` and `virb-host inspect` on checkpoints that PyTorch wrote in each project's
//! layout (scripts/py/make_checkpoint_layouts.py): the converted file gives torchvision's outputs,
//! bad input is refused clearly, and a MoCo file named directly in an experiment list fails with
//! the command that fixes it while the other experiments go on.
use crate::reference::max_abs_diff;
use std::path::Path;
use tch::{Device, Tensor};
use virb_encoder_resnet::model::{Arch, ResNet, ResNetOptions};
use virb_tests::{layouts_dir, read_json, Env, Output};

/// Tensors of a torchvision ResNet-18 state dict without `fc.*`.
const TRUNK_TENSORS: usize = 120;

fn file(name: &str) -> String {
    layouts_dir().join(name).display().to_string()
}

fn ok(out: &Output) -> &str {
    assert!(out.ok(), "exit {}: {}{}", out.code, out.stdout, out.stderr);
    &out.stdout
}

fn failed(out: &Output) -> &str {
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    &out.stderr
}

/// The converted file's outputs through the ResNet plugin's loader equal torchvision's.
fn assert_torchvision_outputs(weights: &Path) {
    let load = |f: &str| Tensor::read_safetensors(layouts_dir().join(f)).unwrap();
    let input = load("input.safetensors");
    let expected = load("expected.safetensors");
    let net = ResNet::load(
        weights,
        Arch::RESNET18,
        Device::Cpu,
        ResNetOptions {
            channels_last: false,
            kind: tch::Kind::Float,
        },
    )
    .unwrap();
    let names = ["conv", "block1", "block2", "block3", "block4", "embedding"];
    let out = net.forward(&input[0].1, &names).unwrap();
    for (name, ours) in &out {
        let reference = &expected.iter().find(|(n, _)| n == name).unwrap().1;
        let diff = max_abs_diff(ours, reference);
        assert!(
            diff <= 1e-4,
            "{}: `{name}` differs from torchvision by {diff}",
            weights.display()
        );
    }
    assert_eq!(out.len(), names.len());
}

#[test]
fn every_layout_converts_to_weights_with_torchvision_outputs() {
    let env = Env::with_plugins(&[]);
    // (file, layout, what auto says, also convert with an explicit --from): the second SwAV and
    // MoCo files (flat; v2) and the plain torchvision file are converted by `auto` only.
    let cases = [
        ("swav.pth.tar", "swav", "swav", true),
        ("swav_flat.pth", "swav", "swav", false),
        ("moco_v1.pth.tar", "moco", "moco", true),
        ("moco_v2.pth.tar", "moco", "moco", false),
        ("simsiam.pth.tar", "simsiam", "simsiam", true),
        (
            "pirl.torch",
            "pirl",
            "pirl (or exemplar: same mapping)",
            true,
        ),
        (
            "exemplar.torch",
            "exemplar",
            "pirl (or exemplar: same mapping)",
            true,
        ),
        ("humantorch.pth", "humantorch", "humantorch", true),
        ("torchvision.pt", "torchvision", "torchvision", false),
    ];
    for (input, layout, detected, explicit) in cases {
        let named = env.path(&format!("{layout}-{input}.safetensors"));
        if explicit {
            let out = env.host(&[
                "convert",
                "--from",
                layout,
                &file(input),
                named.to_str().unwrap(),
            ]);
            let text = ok(&out);
            assert!(
                text.contains(&format!(
                    "kept {TRUNK_TENSORS} tensor(s) of the ResNet trunk"
                )),
                "{input}: {text}"
            );
            assert!(
                text.contains(&format!("layout: {layout} (")),
                "{input}: {text}"
            );
            assert_torchvision_outputs(&named);
        }
        let auto = env.path(&format!("auto-{input}.safetensors"));
        let out = env.host(&[
            "convert",
            "--from",
            "auto",
            &file(input),
            auto.to_str().unwrap(),
        ]);
        let text = ok(&out);
        assert!(
            text.contains(&format!("detected layout: {detected} (")),
            "{input}: {text}"
        );
        assert!(
            text.contains(&format!(
                "kept {TRUNK_TENSORS} tensor(s) of the ResNet trunk"
            )),
            "{input}: {text}"
        );
        if explicit {
            assert_same_tensors(&named, &auto);
        } else {
            assert_torchvision_outputs(&auto);
        }
    }
}

/// Two safetensors files hold the same tensors (names, dtypes, shapes, values).
fn assert_same_tensors(a: &Path, b: &Path) {
    let read = |p: &Path| {
        let mut t = Tensor::read_safetensors(p).unwrap();
        t.sort_by(|x, y| x.0.cmp(&y.0));
        t
    };
    let (ta, tb) = (read(a), read(b));
    assert_eq!(ta.len(), tb.len(), "{} vs {}", a.display(), b.display());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(xa.kind() == xb.kind() && xa.equal(xb), "`{na}` differs");
    }
}

#[test]
fn conversion_reports_what_it_kept_renamed_and_dropped() {
    let env = Env::with_plugins(&[]);
    let out = env.path("moco.safetensors");
    let run = env.host(&[
        "convert",
        "--from",
        "moco",
        &file("moco_v1.pth.tar"),
        out.to_str().unwrap(),
    ]);
    let text = ok(&run);
    for part in [
        "layout: moco (MoCo: keys `module.encoder_q.*` under `state_dict`)",
        "kept 120 tensor(s) of the ResNet trunk, 120 renamed from `state_dict.module.encoder_q.*` to torchvision names `*`",
        // MoCo v1's 128x512 fc, the key encoder, the queue and the optimiser's momentum.
        "`state_dict.module.queue` (1), `state_dict.module.queue_ptr` (1), `state_dict.module.encoder_q.fc.*` (2), `state_dict.module.encoder_k.*` (122), `optimizer.*` (62)",
        "ignored 3 non-tensor entries: `epoch`, `arch`, `optimizer.param_groups`",
        "nothing in it can run code",
    ] {
        assert!(text.contains(part), "missing `{part}` in:\n{text}");
    }
    // Only the trunk, under torchvision names, as safetensors.
    let sd = virb_checkpoint::load(&out).unwrap();
    assert_eq!(sd.format, virb_checkpoint::Format::Safetensors);
    assert_eq!(sd.tensors.len(), TRUNK_TENSORS);
    assert!(sd.tensors.iter().all(|(k, _)| !k.starts_with("fc.")
        && ["conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4."]
            .iter()
            .any(|p| k.starts_with(p))));
}

#[test]
fn bad_input_is_refused_with_what_was_tried() {
    let env = Env::with_plugins(&[]);
    let dest = env.path("out.safetensors");
    let dest_s = dest.to_str().unwrap();

    let e =
        failed(&env.host(&["convert", "--from", "auto", &file("unknown.pt"), dest_s])).to_string();
    assert!(e.contains("unknown.pt matches no known checkpoint layout (tried swav: keys `module.*` at the top level or under `state_dict`; moco: "), "{e}");
    assert!(e.contains("its first keys: `model.backbone.bottom_up.stem.conv1.weight`, `model.backbone.bottom_up.res2.0.conv1.weight`"), "{e}");

    let e = failed(&env.host(&["convert", "--from", "auto", &file("ambiguous.pt"), dest_s]))
        .to_string();
    assert!(
        e.contains("ambiguous.pt matches more than one layout: moco (keys `module.encoder_q.*` at the top level) and torchvision (keys `*` at the top level); pass the right one with --from"),
        "{e}"
    );

    let e = failed(&env.host(&["convert", "--from", "moco", &file("swav.pth.tar"), dest_s]))
        .to_string();
    assert!(e.contains("swav.pth.tar is not a MoCo checkpoint"), "{e}");
    assert!(
        e.contains(
            "it looks like a SwAV checkpoint (keys `module.*` under `state_dict`): use --from swav"
        ),
        "{e}"
    );

    let e = failed(&env.host(&["convert", "--from", "byol", &file("swav.pth.tar"), dest_s]))
        .to_string();
    assert!(e.contains("unknown layout `byol`; expected one of: swav, moco, pirl, simsiam, exemplar, humantorch, torchvision, virb, or auto"), "{e}");

    let e = failed(&env.host(&["convert", "--from", "auto", &file("torchscript.pt"), dest_s]))
        .to_string();
    assert!(e.contains("torchscript.pt is a TorchScript module"), "{e}");

    let e = failed(&env.host(&["convert", "--from", "auto", "nowhere.pt", dest_s])).to_string();
    assert!(e.contains("nowhere.pt"), "{e}");
    assert!(!dest.exists(), "a failed conversion wrote {dest_s}");

    // An existing output is kept unless --force.
    std::fs::write(&dest, "precious").unwrap();
    let e = failed(&env.host(&["convert", "--from", "auto", &file("swav_flat.pth"), dest_s]))
        .to_string();
    assert!(
        e.contains("out.safetensors already exists; pass --force to replace it"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "precious");
    ok(&env.host(&[
        "convert",
        "--from",
        "auto",
        &file("swav_flat.pth"),
        dest_s,
        "--force",
    ]));
    assert_torchvision_outputs(&dest);
}

#[test]
fn inspect_shows_tensors_totals_layout_and_the_encoders_that_fit() {
    let env = Env::with_plugins(&["virb-encoder-resnet"]);
    let counts = read_json(&layouts_dir().join("counts.json"));
    let total = |f: &str| counts[f][1].as_i64().unwrap();
    let grouped = |n: i64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };

    let text = ok(&env.host(&["inspect", &file("swav_flat.pth")])).to_string();
    let n = counts["swav_flat.pth"][0].as_i64().unwrap();
    for part in [
        "format: pytorch zip checkpoint",
        &format!("nesting: {n} under the top level"),
        &format!("tensors ({n}, the first 40; --all lists every one):"),
        "module.conv1.weight",
        &format!(
            "total parameters: {} (elements of all {n} tensors)",
            grouped(total("swav_flat.pth"))
        ),
        "layout: swav (SwAV: keys `module.*` at the top level): a ResNet trunk of 120 tensors",
        &format!(
            "convert it with: virb-host convert --from swav {} ",
            file("swav_flat.pth")
        ),
        // The projection head (two linear layers, a batch norm) and the prototypes.
        "  resnet18: does not fit: 0 missing, 9 unexpected, 0 mismatched",
        "fits no encoder; closest: resnet18 (unexpected `projection_head.0.bias`",
        "after `convert --from swav`: fits: resnet18",
    ] {
        assert!(text.contains(part), "missing `{part}` in:\n{text}");
    }
    assert!(text.contains("[64, 3, 7, 7]  float32"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("  module.")).count(),
        40
    );

    let all = ok(&env.host(&["inspect", &file("swav_flat.pth"), "--all"])).to_string();
    assert_eq!(
        all.lines().filter(|l| l.starts_with("  module.")).count() as i64,
        n
    );

    let text = ok(&env.host(&["inspect", &file("pirl.torch")])).to_string();
    let n = counts["pirl.torch"][0].as_i64().unwrap();
    for part in [
        "nesting: 120 under `classy_state_dict` -> `base_model` -> `model` -> `trunk`; 2 under `classy_state_dict` -> `base_model` -> `model` -> `heads`; 2 under `classy_state_dict` -> `loss`".to_string(),
        format!("total parameters: {} (elements of all {n} tensors)", grouped(total("pirl.torch"))),
        "layout: pirl (or exemplar: same mapping) (PIRL (VISSL): keys `_feature_blocks.*` under `classy_state_dict` -> `base_model` -> `model` -> `trunk`)".to_string(),
        "other entries (not tensors; never executed): `phase_idx`, `iteration`".to_string(),
    ] {
        assert!(text.contains(&part), "missing `{part}` in:\n{text}");
    }

    let text = ok(&env.host(&["inspect", &file("torchvision.pt")])).to_string();
    assert!(text.contains("layout: torchvision"), "{text}");
    assert!(
        text.contains("encoders read this layout as it is"),
        "{text}"
    );
    assert!(text.contains("  resnet18: fits\n"), "{text}");
    assert!(text.contains("  resnet50: does not fit: "), "{text}");
    assert!(text.contains("\nfits: resnet18\n"), "{text}");

    let text = ok(&env.host(&["inspect", &file("unknown.pt")])).to_string();
    assert!(
        text.contains("layout: ") && text.contains("matches no known checkpoint layout"),
        "{text}"
    );
    assert!(text.contains("fits no encoder"), "{text}");

    let text = ok(&env.host(&["inspect", &file("torchscript.pt")])).to_string();
    assert!(
        text.contains("TorchScript module: use `encoder: torchscript`"),
        "{text}"
    );

    let e = failed(&env.host(&["inspect", "nowhere.pt"])).to_string();
    assert!(e.contains("nowhere.pt"), "{e}");
}

#[test]
fn moco_file_in_an_experiment_list_fails_with_the_convert_command_and_others_go_on() {
    let env = Env::new();
    env.caltech_fixture(2, 2, 1);
    let converted = env.path("moco.safetensors");
    ok(&env.host(&[
        "convert",
        "--from",
        "moco",
        &file("moco_v1.pth.tar"),
        converted.to_str().unwrap(),
    ]));
    env.caltech_configs(&converted, 1);
    env.write(
        "experiments.yaml",
        &format!(
            "raw:\n  weights: '{}'\n  encoder: resnet18\nconverted:\n  weights: '{}'\n  encoder: resnet18\n",
            file("moco_v1.pth.tar"),
            converted.display()
        ),
    );
    let out = env.run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let hint = format!(
        "this looks like a MoCo checkpoint (keys `module.encoder_q.*` under `state_dict`); convert it with `virb-host convert --from moco {} {}`",
        file("moco_v1.pth.tar"),
        file("moco_v1.safetensors")
    );
    assert!(out.stderr.contains(&hint), "{}", out.stderr);
    let results = env.results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        results[0].starts_with(env.path("out/converted")),
        "{results:?}"
    );
    assert_eq!(read_json(&results[0])["status"], "ok", "{}", out.stderr);
}
