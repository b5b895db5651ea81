//! Copies a template to a temporary folder and runs cargo there, sharing this workspace's
//! target folder, Cargo.lock and debug settings, so that only the template itself is compiled.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::Instant,
};
use virb_tests::{build_dir, python, root};

/// Which plugin-api a template copy is built against.
#[derive(Clone, Copy, PartialEq)]
pub enum Api {
    /// `plugin-api/` (0.3.0), as the template ships.
    Current,
    /// `tests/fixtures/plugin-api-next` (0.3.1), the later patch `virb-host-next` is built with.
    Next,
}

/// A copy of `templates/<template>` in a temporary folder, as package `package` built against
/// `api`, and a `cargo <args>` command for it that shares this workspace's target folder.
pub struct Copy {
    _work: tempfile::TempDir,
    dir: PathBuf,
}

impl Copy {
    pub fn new(template: &str, package: &str, api: Api) -> Copy {
        let src = root().join("templates").join(template);
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join(template);
        copy_dir(&src, &dir);
        // Absolute paths instead of the template's `../../plugin-api`, a new package name when
        // asked (two builds of one template must not share a library file name), and the
        // workspace's versions of every dependency.
        let (api_dir, api_version) = match api {
            Api::Current => (root().join("plugin-api"), "0.3.0"),
            Api::Next => (root().join("tests/fixtures/plugin-api-next"), "0.3.1"),
        };
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let original_name = format!(
            "name = \"virb-template-{}\"",
            template.trim_end_matches("-plugin")
        );
        assert!(
            manifest.contains(&original_name),
            "{original_name} not in {template}/Cargo.toml"
        );
        let dep = "virb-plugin-api = { path = \"../../plugin-api\", version = \"0.3.0\" }";
        assert!(manifest.contains(dep), "{dep} not in {template}/Cargo.toml");
        let mut manifest = manifest
            .replace(&original_name, &format!("name = \"{package}\""))
            .replace(
                dep,
                &format!(
                    "virb-plugin-api = {{ path = \"{}\", version = \"{api_version}\" }}",
                    api_dir.display()
                ),
            );
        if api == Api::Next {
            // The workspace compiles plugin-api-next (not a member) with `package."*"`'s settings.
            manifest =
                manifest.replace("[profile.dev.package.virb-plugin-api]\nopt-level = 1\n", "");
        }
        fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        fs::copy(
            root().join("rust-toolchain.toml"),
            dir.join("rust-toolchain.toml"),
        )
        .unwrap();
        Copy { _work: work, dir }
    }

    /// `cargo <args> --offline` in the copy, with the workspace's target folder, profile and
    /// libtorch; returns stdout and stderr, asserting success.
    pub fn cargo(&self, args: &[&str]) -> (String, String) {
        let mut cargo = Command::new("cargo");
        cargo
            .args(args)
            .arg("--offline")
            .current_dir(&self.dir)
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("LIBTORCH_USE_PYTORCH")
            .env_remove("LIBTORCH_INCLUDE")
            .env_remove("LIBTORCH_LIB");
        if profile() == "release" {
            cargo.arg("--release");
        }
        if std::env::var_os("LIBTORCH").is_none() {
            // What scripts/env.sh sets; the workspace was built with it.
            let out = Command::new(python())
                .args([
                    "-c",
                    "import torch, os; print(os.path.dirname(torch.__file__))",
                ])
                .output()
                .unwrap();
            cargo.env("LIBTORCH", String::from_utf8(out.stdout).unwrap().trim());
        }
        let started = Instant::now();
        let out = cargo.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "cargo {args:?} in {} failed:\n{stdout}\n{stderr}",
            self.dir.display()
        );
        eprintln!(
            "cargo {args:?} in {} took {:.1} s: {}",
            self.dir.display(),
            started.elapsed().as_secs_f64(),
            stderr
                .lines()
                .filter(|l| l.contains("Compiling"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        (stdout, stderr)
    }
}

fn target_dir() -> PathBuf {
    build_dir().parent().unwrap().to_path_buf()
}

fn profile() -> String {
    build_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Builds a copy of `templates/<template>` as package `package` and returns the library,
/// copied out of target/ (a later build of the same package overwrites it there).
pub fn build_template(template: &str, package: &str, api: Api) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, lib)) = built.iter().find(|(p, _)| p == package) {
        return lib.clone();
    }
    Copy::new(template, package, api).cargo(&["build", "--lib"]);
    let name = format!("lib{}.so", package.replace('-', "_"));
    let keep = build_dir().join("virb-test-cache/templates");
    fs::create_dir_all(&keep).unwrap();
    let lib = keep.join(&name);
    fs::copy(target_dir().join(profile()).join(&name), &lib).unwrap();
    built.push((package.to_string(), lib.clone()));
    lib
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
