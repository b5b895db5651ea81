//! `virb-host`: evaluates frozen visual encoders by training small heads on downstream tasks.
//! Tasks and encoders come from plugins (`.so` files in the plugin folders).
#![deny(missing_docs)]

mod claims;
mod cli;
mod config;
mod convert;
mod cuda;
mod devices;
mod drive;
mod elf;
mod encode;
mod error;
mod features;
mod fixtures;
mod hashing;
mod inspect;
mod libtorch;
mod listing;
mod names;
mod outdir;
mod plan;
mod plan_print;
mod plugins;
mod precision;
mod preflight;
mod progress;
mod records;
mod rerun_stamp;
mod run_args;
mod run_cmd;
mod runner;
mod schedule;
mod selection;
mod shards;
mod site;
mod slurm;
mod slurm_cmd;
mod splits;
mod store;
mod survey;
mod table;
mod train;
mod workers;
mod yaml_index;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;
use virb_plugin_api::FixtureRequest;

fn main() -> ExitCode {
    libtorch::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIRB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let dirs = plugins::plugin_dirs(&cli.plugins_dir);
    match cli.command {
        Command::Devices => {
            listing::devices();
            ExitCode::SUCCESS
        }
        Command::Report {
            out,
            dest,
            no_plots,
        } => {
            let opts = virb_report::ReportOptions {
                out,
                dest,
                plots: !no_plots,
            };
            match virb_report::run(&opts) {
                Ok(summary) => {
                    for w in &summary.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!(
                        "report of {} experiment(s) x {} job(s) in {}:",
                        summary.experiments,
                        summary.jobs,
                        summary.dest.display()
                    );
                    for f in &summary.written {
                        println!("  {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Cache { cache_dir, clear } => {
            let cache = match open_cache(cache_dir) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let outcome = if clear {
                cache
                    .clear()
                    .map(|u| format!("feature cache: removed {u} from {}", cache.dir().display()))
            } else {
                cache
                    .usage()
                    .map(|u| format!("feature cache: {u} in {}", cache.dir().display()))
            };
            match outcome {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Plugins => {
            let reg = plugins::Registry::load(dirs);
            listing::print_plugins(&reg);
            ExitCode::SUCCESS
        }
        Command::Tasks => {
            let reg = plugins::Registry::load(dirs);
            listing::warn_rejected(&reg);
            listing::print_tasks(&reg);
            ExitCode::SUCCESS
        }
        Command::Encoders => {
            let reg = plugins::Registry::load(dirs);
            listing::warn_rejected(&reg);
            for e in &reg.encoders {
                let outputs: Vec<String> = e
                    .info
                    .outputs
                    .iter()
                    .map(|o| format!("{}[{}]", o.name, o.channels))
                    .collect();
                println!("{}  ({} {})", e.info.name, e.plugin.name, e.plugin.version);
                println!("  {}", e.info.description);
                println!("  outputs: {}", outputs.join(", "));
                println!("  weights: {}", e.info.weight_formats);
            }
            ExitCode::SUCCESS
        }
        Command::Convert {
            from,
            input,
            output,
            force,
        } => {
            // Reading and copying only: libtorch's worker threads would spin for nothing.
            tch::set_num_threads(1);
            match convert::run(&from, &input, &output, force) {
                Ok(lines) => {
                    lines.iter().for_each(|l| println!("{l}"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Inspect { weights, all } => {
            // Reading, comparing and copying only (the encoders' checks build no network on a
            // worker thread): libtorch's worker threads would spin for nothing.
            tch::set_num_threads(1);
            let reg = plugins::Registry::load(dirs);
            listing::warn_rejected(&reg);
            match inspect::run(&reg, &weights, all) {
                Ok(lines) => {
                    lines.iter().for_each(|l| println!("{l}"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Fixtures {
            task,
            data_root,
            classes,
            train_per_class,
            test_per_class,
            image_size,
            seed,
            force,
        } => {
            let reg = plugins::Registry::load(dirs);
            listing::warn_rejected(&reg);
            let request = FixtureRequest {
                data_root: data_root.to_string_lossy().as_ref().into(),
                classes,
                train_per_class,
                test_per_class,
                image_size,
                seed,
                options_json: "{}".into(),
            };
            match fixtures::write(&reg, &task, &data_root, request, force) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run(args) => run_cmd::run(&args, &cli.plugins_dir),
        Command::Plan(mut args) => {
            args.dry_run = true;
            run_cmd::run(&args, &cli.plugins_dir)
        }
        Command::Slurm { command } => slurm_cmd::run(command, &cli.plugins_dir),
        Command::Config => match run_cmd::site() {
            Ok(site) => {
                site.describe().iter().for_each(|l| println!("{l}"));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

use run_cmd::{fail, open_cache};
