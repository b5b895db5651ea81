//! Integration tests of virb-host and its plugins.
#![allow(clippy::unwrap_used, missing_docs)]

mod action;
mod bad_input;
mod classification;
mod configs;
mod convert;
mod counting;
mod dense_metrics;
mod depth;
mod egomotion;
mod end_to_end;
mod eval_only;
mod experiment;
mod finetune;
mod flow;
mod hardening;
mod plugins;
mod precision;
mod reference;
mod rerun;
mod scale;
mod segmentation;
mod slurm;
mod templates;
mod torchscript;
mod virb_files;
