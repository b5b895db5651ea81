//! `virb-host slurm submit|status`: the run surveyed here (on the login node), its units still
//! to do submitted as job arrays ([`crate::slurm`]), each array task running `virb-host run
//! --only <experiment>/<job>` as a worker on the shared `--out`.
use crate::cli::SlurmCommand;
use crate::run_cmd::{fail, options, plugin_dirs, site};
use crate::{listing, plugins, runner};
use std::{ffi::OsString, path::PathBuf, process::ExitCode};

/// Runs a `slurm` subcommand.
pub(crate) fn run(command: SlurmCommand, plugin_flags: &[PathBuf]) -> ExitCode {
    let site = match site() {
        Ok(s) => s,
        Err(code) => return code,
    };
    match command {
        SlurmCommand::Status { out } => {
            let squeue =
                PathBuf::from(std::env::var_os("VIRB_SQUEUE").unwrap_or_else(|| "squeue".into()));
            match crate::slurm::status(&out, &squeue) {
                Ok(lines) => {
                    lines.iter().for_each(|l| println!("{l}"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        SlurmCommand::Submit {
            partition,
            account,
            gres,
            time,
            cpus_per_task,
            mem,
            max_parallel,
            sbatch_args,
            run: args,
        } => {
            // The devices are those of the compute nodes: not resolved here.
            let mut local = args.clone();
            local.device = Some("cpu".into());
            local.devices = None;
            let (opts, _) = match options(&local, &site) {
                Ok(o) => o,
                Err(e) => return fail(&e),
            };
            let dirs = plugin_dirs(plugin_flags, &site);
            let reg = plugins::Registry::load(dirs);
            listing::warn_rejected(&reg);
            let units = runner::surveyed(&opts, &reg, |_, survey| {
                let problems = survey.problems();
                if !problems.is_empty() && !opts.keep_going {
                    return Err(crate::plan::SetupError::Problems(problems));
                }
                problems
                    .iter()
                    .for_each(|p| eprintln!("skipped (--keep-going): {p}"));
                Ok(survey
                    .units
                    .iter()
                    .filter(|u| u.problem.is_none() && !u.done())
                    .filter(|u| survey.experiments[u.exp].ready.is_ok())
                    .map(|u| crate::slurm::Unit {
                        experiment: survey.experiments[u.exp].exp.name.clone(),
                        job: u.job_name.to_string(),
                        eval_only: u.eval_only,
                        configs: u
                            .configs
                            .iter()
                            .map(|c| (c.name.clone(), c.hash.clone()))
                            .collect(),
                    })
                    .collect::<Vec<_>>())
            });
            let units = match units {
                Ok(Ok(u)) => u,
                Ok(Err(e)) | Err(e) => return fail(&e.to_string()),
            };
            let worker_argv = match worker_argv(&args, plugin_flags) {
                Ok(a) => a,
                Err(e) => return fail(&e),
            };
            let s = |v: Option<String>, site_v: &Option<crate::site::Setting<String>>| {
                v.or_else(|| site_v.as_ref().map(|x| x.value.clone()))
            };
            let slurm_opts = crate::slurm::SlurmOptions {
                partition: s(partition, &site.partition),
                account: s(account, &site.account),
                gres: s(gres, &site.gres),
                time: s(time, &site.time),
                cpus_per_task: cpus_per_task
                    .map(|c| c as u32)
                    .or(site.cpus_per_task.as_ref().map(|x| x.value)),
                mem: s(mem, &site.mem),
                extra_args: site
                    .extra_args
                    .iter()
                    .flat_map(|x| x.value.clone())
                    .chain(sbatch_args)
                    .collect(),
                max_parallel: max_parallel.map(|m| m as u32),
                sbatch: PathBuf::from(
                    std::env::var_os("VIRB_SBATCH").unwrap_or_else(|| "sbatch".into()),
                ),
            };
            match crate::slurm::submit(&opts.out, &units, &worker_argv, &slurm_opts) {
                Ok(sub) => {
                    println!(
                        "submitted {} unit(s) as job array(s) {}; logs and scripts in {}",
                        sub.units,
                        sub.job_ids.join(", "),
                        sub.dir.display()
                    );
                    println!(
                        "progress: virb-host slurm status --out {}",
                        opts.out.display()
                    );
                    ExitCode::SUCCESS
                }
                // Every unit complete: nothing to do is not a failure.
                Err(crate::slurm::SlurmError::NothingToSubmit) => {
                    println!(
                        "nothing to submit: every selected (experiment, job) is complete in {} (virb-host slurm status --out {0}; --force reruns)",
                        opts.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

/// The command line each array task runs, before its `--only <unit>`: this binary, the plugin
/// folders, `run` and the run's arguments (paths made absolute; the user's `--only` dropped,
/// since each task does exactly its unit).
fn worker_argv(
    args: &crate::run_args::RunArgs,
    plugin_flags: &[PathBuf],
) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the virb-host binary for the batch script: {e}"))?;
    let mut task_args = args.clone();
    task_args.only.clear();
    let mut argv: Vec<OsString> = vec![exe.into()];
    for d in plugin_flags {
        argv.push("--plugins-dir".into());
        argv.push(std::path::absolute(d).unwrap_or_else(|_| d.clone()).into());
    }
    argv.push("run".into());
    argv.extend(task_args.to_argv());
    if let Some(d) = args.device.as_ref().or(args.devices.as_ref()) {
        argv.push("--devices".into());
        argv.push(d.into());
    }
    argv.into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8; batch scripts need UTF-8 paths"))
        })
        .collect()
}
