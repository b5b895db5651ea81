//! The batch script of a submission and the quoting it needs: POSIX-shell quoting for the
//! command line in its body, and sbatch's own quoting (double quotes, backslash escapes) for
//! `#SBATCH` lines, where a value with blanks would otherwise end at the first blank.
use super::SlurmOptions;
use std::path::Path;

/// Quotes `word` for a POSIX shell: unchanged when it holds only safe characters, else in single
/// quotes (a `'` inside becomes `'\''`).
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Quotes a value for an `#SBATCH` line, which sbatch splits at blanks honouring `"..."` and `\`.
fn sbatch_quote(value: &str) -> String {
    if value
        .chars()
        .any(|c| c.is_whitespace() || "\"'\\".contains(c))
    {
        format!("\"{}\"", value.replace('\\', r"\\").replace('"', "\\\""))
    } else {
        value.to_string()
    }
}

/// The batch script for a submission in `dir`, run from `cwd`.
pub fn job_script(dir: &Path, cwd: &Path, worker_argv: &[String], opts: &SlurmOptions) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut sbatch = |flag: &str, value: &str| {
        s.push_str(&format!("#SBATCH --{flag}={}\n", sbatch_quote(value)));
    };
    sbatch("job-name", "virb");
    // `%` starts a Slurm file-name pattern; `%%` is a literal one.
    let logs = dir.join("logs").display().to_string().replace('%', "%%");
    sbatch("output", &format!("{logs}/%A_%a.out"));
    sbatch("chdir", &cwd.display().to_string());
    let strings = [
        ("partition", &opts.partition),
        ("account", &opts.account),
        ("gres", &opts.gres),
        ("time", &opts.time),
        ("mem", &opts.mem),
    ];
    for (flag, value) in strings {
        if let Some(value) = value {
            sbatch(flag, value);
        }
    }
    if let Some(cpus) = opts.cpus_per_task {
        sbatch("cpus-per-task", &cpus.to_string());
    }
    let units = shell_quote(&dir.join("units.txt").display().to_string());
    let (host, args) = match worker_argv.split_first() {
        Some((host, args)) => (host.as_str(), args),
        None => ("false", &[][..]),
    };
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    s.push_str(&format!(
        "# Written by virb-host. Task i of an array runs line (i + offset + 1) of units.txt;\n\
         # the offset is this script's first argument.\n\
         set -eu\n\
         VIRB_HOST={host}\n\
         unit=\"$(sed -n \"$((SLURM_ARRAY_TASK_ID + ${{1:-0}} + 1))p\" {units})\"\n\
         if [ -z \"$unit\" ]; then\n\
         \x20 echo \"virb: no unit for array task $SLURM_ARRAY_TASK_ID (offset ${{1:-0}}) in \"{units} >&2\n\
         \x20 exit 2\n\
         fi\n\
         echo \"virb: unit $unit on $(hostname), job ${{SLURM_ARRAY_JOB_ID:-?}}_${{SLURM_ARRAY_TASK_ID}}\" >&2\n\
         exec \"$VIRB_HOST\"{sep}{args} --only \"$unit\"\n",
        host = shell_quote(host),
        sep = if args.is_empty() { "" } else { " " },
        args = args.join(" "),
    ));
    s
}
