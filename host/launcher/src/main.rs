//! `virb-host`: answers an identical rerun of a finished run from its stamp (see `virb-rerun`)
//! in milliseconds, without loading libtorch or a plugin; runs `virb-host-core`, which sits in
//! the same folder, for everything else, with the same arguments and environment.
use std::{ffi::OsString, io::Write, os::unix::process::CommandExt, process::ExitCode};

/// The program that does the work, next to this one.
const CORE: &str = "virb-host-core";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if virb_rerun::enabled() {
        if let Ok(cwd) = std::env::current_dir() {
            if let Some(stamp) = virb_rerun::fresh(&virb_rerun::key(&args, &cwd)) {
                let when = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|now| now.as_secs().saturating_sub(stamp.written_unix_s))
                    .unwrap_or(0);
                eprintln!(
                    "virb {}: nothing changed since this run finished {when} s ago with every \
                     result in {}: its table follows (--force, or VIRB_NO_RERUN_STAMP=1, runs \
                     it anyway)",
                    env!("CARGO_PKG_VERSION"),
                    stamp.out.display()
                );
                let mut out = std::io::stdout().lock();
                return match out
                    .write_all(stamp.stdout.as_bytes())
                    .and_then(|()| out.flush())
                {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::from(1),
                };
            }
        }
    }
    let core = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(CORE),
        Err(e) => {
            eprintln!("error: cannot find this program's folder ({e}), where {CORE} should be");
            return ExitCode::from(2);
        }
    };
    // Only returns on failure.
    let e = std::process::Command::new(&core)
        .arg0("virb-host")
        .args(&args)
        .exec();
    eprintln!(
        "error: cannot start {} ({e}); virb-host and {CORE} must sit in the same folder \
         (scripts/build.sh builds and places both)",
        core.display()
    );
    ExitCode::from(2)
}
