#![allow(clippy::unwrap_used)]
use super::*;
use crate::Format;
use std::path::Path;

/// The keys of a ResNet trunk worth testing with: the stem, a block with its downsample, and
/// a later block.
const TRUNK: [&str; 7] = [
    "conv1.weight",
    "bn1.weight",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.downsample.0.weight",
    "layer2.1.bn2.running_var",
    "layer4.1.conv2.weight",
];

fn nested(entries: Vec<Vec<String>>) -> Nested {
    Nested {
        path: PathBuf::from("ckpt.pt"),
        format: Format::TorchZip,
        tensors: entries
            .into_iter()
            .enumerate()
            .map(|(i, path)| NestedTensor {
                path,
                tensor: tch::Tensor::from(i as f32),
            })
            .collect(),
        others: vec![vec!["epoch".into()]],
    }
}

/// Trunk keys with `prefix`, under `container`, followed by `extra` keys (dotted, split at the
/// container boundary by `container`'s length).
fn file(container: &[&str], prefix: &str, extra: &[&[&str]]) -> Nested {
    let mut entries: Vec<Vec<String>> = TRUNK
        .iter()
        .map(|k| {
            let mut p: Vec<String> = container.iter().map(|s| s.to_string()).collect();
            p.push(format!("{prefix}{k}"));
            p
        })
        .collect();
    entries.extend(
        extra
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect()),
    );
    nested(entries)
}

fn kept_names(c: &Conversion) -> Vec<&str> {
    c.tensors.iter().map(|(n, _)| n.as_str()).collect()
}

fn dropped(c: &Conversion) -> Vec<(&str, usize)> {
    c.dropped.iter().map(|(g, n)| (g.as_str(), *n)).collect()
}

#[test]
fn every_layout_detects_and_converts_its_own_files() {
    for layout in LAYOUTS {
        for container in layout.containers {
            let f = file(container, layout.prefix, &[]);
            let d = detect(&f).unwrap_or_else(|e| panic!("{}: {e}", layout.name));
            assert!(
                d.layout.same_mapping(layout),
                "{} detected as {}",
                layout.name,
                d.names()
            );
            assert_eq!(d.container, *container);
            let c = convert(&f, layout).unwrap();
            assert_eq!(kept_names(&c), TRUNK, "{}", layout.name);
            assert_eq!(c.dropped_count(), 0);
            let moved = !container.is_empty() || !layout.prefix.is_empty();
            assert_eq!(c.renamed, if moved { TRUNK.len() } else { 0 });
        }
    }
}

#[test]
fn pirl_and_exemplar_are_one_answer_not_an_ambiguity() {
    let f = file(VISSL_TRUNK, "_feature_blocks.", &[]);
    let d = detect(&f).unwrap();
    assert_eq!(d.layout.name, "pirl");
    assert_eq!(d.names(), "pirl (or exemplar: same mapping)");
    assert_eq!(
        d.location(),
        "keys `_feature_blocks.*` under `classy_state_dict` -> `base_model` -> `model` -> `trunk`"
    );
}

#[test]
fn moco_drops_key_encoder_queue_fc_and_optimizer() {
    let f = file(
        &["state_dict"],
        "module.encoder_q.",
        &[
            &["state_dict", "module.encoder_q.fc.weight"],
            &["state_dict", "module.encoder_q.fc.bias"],
            &["state_dict", "module.encoder_k.conv1.weight"],
            &["state_dict", "module.encoder_k.layer1.0.conv1.weight"],
            &["state_dict", "module.queue"],
            &["state_dict", "module.queue_ptr"],
            &["optimizer", "state", "0", "momentum_buffer"],
        ],
    );
    let d = detect(&f).unwrap();
    assert_eq!(
        (d.layout.name, d.container.as_slice()),
        ("moco", &["state_dict".to_string()][..])
    );
    let c = convert(&f, d.layout).unwrap();
    assert_eq!(kept_names(&c), TRUNK);
    assert_eq!(
        dropped(&c),
        [
            ("state_dict.module.encoder_q.fc.*", 2),
            ("state_dict.module.encoder_k.*", 2),
            ("state_dict.module.queue", 1),
            ("state_dict.module.queue_ptr", 1),
            ("optimizer.*", 1),
        ]
    );
    // The kept tensors are the file's own, in file order.
    assert_eq!(f64::try_from(&c.tensors[3].1).unwrap(), 3.0);
}

#[test]
fn swav_flat_and_nested_drop_the_projection_head_and_prototypes() {
    let heads: &[&[&str]] = &[
        &["module.projection_head.0.weight"],
        &["module.prototypes.weight"],
    ];
    let c = convert(&file(&[], "module.", heads), by_name("swav").unwrap()).unwrap();
    assert_eq!(kept_names(&c), TRUNK);
    assert_eq!(
        dropped(&c),
        [("module.projection_head.*", 1), ("module.prototypes.*", 1)]
    );
    let nested_heads: &[&[&str]] = &[&["state_dict", "module.prototypes.weight"]];
    let f = file(&["state_dict"], "module.", nested_heads);
    assert_eq!(detect(&f).unwrap().layout.name, "swav");
    let c = convert(&f, by_name("swav").unwrap()).unwrap();
    assert_eq!(dropped(&c), [("state_dict.module.prototypes.*", 1)]);
}

#[test]
fn vissl_heads_outside_the_trunk_are_dropped() {
    let f = file(
        VISSL_TRUNK,
        "_feature_blocks.",
        &[&[
            "classy_state_dict",
            "base_model",
            "model",
            "heads",
            "0.clf.0.weight",
        ]],
    );
    let c = convert(&f, by_name("exemplar").unwrap()).unwrap();
    assert_eq!(kept_names(&c), TRUNK);
    assert_eq!(
        dropped(&c),
        [("classy_state_dict.base_model.model.heads.*", 1)]
    );
}

#[test]
fn a_file_of_another_layout_names_the_layout_it_has() {
    let f = file(&["state_dict"], "module.encoder_q.", &[]);
    let e = convert(&f, by_name("simsiam").unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("ckpt.pt is not a SimSiam checkpoint"), "{e}");
    assert!(
        e.contains("keys `module.encoder.*` under `state_dict` or at the top level"),
        "{e}"
    );
    assert!(
        e.contains("it looks like a MoCo checkpoint (keys `module.encoder_q.*` under `state_dict`): use --from moco"),
        "{e}"
    );
}

#[test]
fn unknown_layout_lists_what_was_tried_and_the_first_keys() {
    let f = nested(vec![
        vec!["net".into(), "backbone.stem.weight".into()],
        vec!["net".into(), "backbone.res2.0.weight".into()],
    ]);
    let e = detect(&f).unwrap_err().to_string();
    for l in LAYOUTS {
        assert!(
            e.contains(&format!("{}: keys `{}*`", l.name, l.prefix)),
            "{e}"
        );
    }
    assert!(
        e.ends_with("its first keys: `net.backbone.stem.weight`, `net.backbone.res2.0.weight`"),
        "{e}"
    );
}

#[test]
fn two_layouts_with_different_mappings_are_ambiguous() {
    let extra: Vec<Vec<String>> = TRUNK
        .iter()
        .map(|k| vec![format!("module.encoder_q.{k}")])
        .collect();
    let mut f = file(&[], "", &[]);
    f.tensors.extend(nested(extra).tensors);
    let e = detect(&f).unwrap_err().to_string();
    assert!(e.contains("matches more than one layout"), "{e}");
    assert!(
        e.contains("moco (keys `module.encoder_q.*` at the top level)")
            && e.contains("torchvision (keys `*` at the top level)"),
        "{e}"
    );
}

#[test]
fn a_trunk_needs_the_stem_and_the_first_stage() {
    let f = nested(vec![vec!["module.encoder_q.layer1.0.conv1.weight".into()]]);
    assert!(matches!(detect(&f), Err(LayoutError::Unknown { .. })));
}

#[test]
fn output_names_replace_checkpoint_extensions() {
    let s = |p: &str| suggest_output(Path::new(p)).display().to_string();
    assert_eq!(s("w/moco_v2_800ep.pth.tar"), "w/moco_v2_800ep.safetensors");
    assert_eq!(s("model_final.torch"), "model_final.safetensors");
    assert_eq!(s("swav.pth"), "swav.safetensors");
    assert_eq!(s("x.safetensors"), "x.converted.safetensors");
    assert_eq!(s("noext"), "noext.safetensors");
}
