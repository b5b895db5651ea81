//! Records the libtorch version this crate is compiled against, so that every plugin carries it in
//! its root module and the host can refuse a plugin built for another libtorch.
use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let version = env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| {
            let version_py = Path::new(&lib).join("..").join("version.py");
            println!("cargo:rerun-if-changed={}", version_py.display());
            fs::read_to_string(version_py).ok()
        })
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=VIRB_LIBTORCH_VERSION={version}");
    // This crate's own test binary creates tensors: let it find libtorch without LD_LIBRARY_PATH.
    if let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
