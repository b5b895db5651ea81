//! Fine-tuning (`train_encoder: true`): the encoder's parameters train with the head, through
//! the plugin boundary. Each (config, seed) loads a fresh copy of the encoder, asks it for its
//! trainable parameters (shared with the plugin, updated in place by the host's optimiser) and
//! encodes every batch in training mode with gradients; nothing is cached. The test split is
//! then encoded with the tuned encoder in eval mode, and the tuned encoder is saved next to the
//! head (`seed-<s>/encoder.safetensors`).
use crate::config::{Experiment, JobConfig, TrainingConfig};
use crate::encode::{encode_batch, encode_split, read_batch, EncodeRequest, EncodeTimings};
use crate::error::{plugin, JobError};
use crate::plugins::{EncoderEntry, TaskEntry};
use crate::progress::Progress;
use crate::runner::{run_record, save_run, saved_run, seed_dir, RunOptions, TrainedJob};
use crate::train::{epoch_order, Stop, Trainee};
use std::collections::BTreeMap;
use tch::Tensor;
use virb_plugin_api::{
    abi_stable::std_types::RSlice, device_name, DatasetBox, EncoderRequest, FeatureSpec,
    HeadRequest, TensorRef,
};

/// Everything a fine-tuning job needs from the runner.
pub struct FineTune<'a> {
    /// Run options.
    pub opts: &'a RunOptions,
    /// Decoding threads.
    pub pool: &'a rayon::ThreadPool,
    /// The experiment.
    pub exp: &'a Experiment,
    /// Its encoder.
    pub entry: &'a EncoderEntry,
    /// The task.
    pub task: &'a TaskEntry,
    /// Job name.
    pub job_name: &'a str,
    /// The job.
    pub job: &'a JobConfig,
    /// Train and test splits.
    pub train: &'a DatasetBox,
    /// The test split.
    pub test: &'a DatasetBox,
    /// Head outputs.
    pub num_outputs: u32,
    /// Metric names, in the task's order.
    pub metric_names: &'a [String],
    /// Whether larger is better for the headline metric.
    pub higher_is_better: bool,
}

/// Fine-tunes every pending config for every seed; returns their runs.
pub fn run(
    ft: &FineTune<'_>,
    todo: &[(&String, &TrainingConfig)],
    run_hash: &dyn Fn(&TrainingConfig, u64) -> String,
) -> Result<TrainedJob, JobError> {
    let job = ft.job;
    let train_len = plugin(ft.train.meta())?.len as i64;
    let mut outcomes: BTreeMap<String, Result<Vec<crate::results::RunRecord>, String>> =
        BTreeMap::new();
    let mut timings = EncodeTimings::default();
    let mut test_size = 0;
    for &(cfg_name, cfg) in todo {
        let cfg_dir = crate::results::result_dir(&ft.opts.out, &ft.exp.name, ft.job_name, cfg_name);
        let mut runs = Vec::new();
        let mut failure = None;
        for r in 0..job.repeats {
            let seed = job.seed.wrapping_add(r as u64);
            let hash = run_hash(cfg, seed);
            if !ft.opts.force {
                if let Some(saved) = saved_run(&seed_dir(&cfg_dir, seed), &hash) {
                    runs.push(saved);
                    continue;
                }
            }
            match one(ft, cfg_name, cfg, seed, &hash, &cfg_dir, &mut timings) {
                Ok((record, n_test)) => {
                    test_size = n_test;
                    runs.push(record);
                }
                Err(e) => {
                    eprintln!(
                        "error: experiment `{}`, job `{}`, config `{cfg_name}`: {e}",
                        ft.exp.name, ft.job_name
                    );
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        outcomes.insert(
            cfg_name.clone(),
            match failure {
                Some(e) => Err(e),
                None => Ok(runs),
            },
        );
    }
    if test_size == 0 {
        test_size = plugin(ft.test.meta())?.len as i64;
    }
    Ok(TrainedJob {
        outcomes,
        train_size: train_len,
        test_size,
        validation: None,
        num_outputs: ft.num_outputs,
        timings,
        features: ["live", "encoded"],
    })
}

/// One (config, seed): fresh encoder, training, test evaluation, saved run.
fn one(
    ft: &FineTune<'_>,
    cfg_name: &str,
    cfg: &TrainingConfig,
    seed: u64,
    hash: &str,
    cfg_dir: &std::path::Path,
    timings: &mut EncodeTimings,
) -> Result<(crate::results::RunRecord, i64), JobError> {
    let (job, task, device) = (ft.job, ft.task, ft.opts.device);
    let encoder = plugin(ft.entry.factory.load(EncoderRequest {
        weights: ft.exp.weights.to_string_lossy().as_ref().into(),
        device: device_name(device).into(),
        options_json: ft.exp.options.to_string().into(),
    }))?;
    let encoder_params: Vec<Tensor> = plugin(encoder.trainable_parameters())?
        .into_iter()
        .map(|nt| nt.tensor.into_tch())
        .collect();
    let frames = task.info.frames.max(1);
    let outputs = task.info.required_outputs.as_slice();
    let shapes = plugin(encoder.output_shapes(job.image_size as i64, job.image_size as i64))?;
    let mut features = Vec::new();
    for wanted in outputs {
        let spec = shapes
            .iter()
            .find(|s| s.name == *wanted)
            .ok_or_else(|| JobError::Other(format!("the encoder has no `{wanted}` output")))?;
        let mut shape: Vec<i64> = Vec::new();
        if frames > 1 {
            shape.push(frames as i64);
        }
        shape.extend(spec.shape.iter().copied());
        features.push(FeatureSpec {
            name: wanted.clone(),
            shape: shape.into(),
        });
    }
    let head = plugin(task.task.build_head(HeadRequest {
        features: features.into(),
        num_outputs: ft.num_outputs.max(1),
        device: device_name(device).into(),
        seed,
        options_json: job.task_options_json().into(),
        input_height: job.image_size,
        input_width: job.image_size,
        encoder_state: Default::default(),
    }))?;
    let meta = plugin(ft.train.meta())?;
    let n = meta.len as i64;
    let bs = job.batch_size as i64;
    // Batch norm cannot train on a batch of one sample: a last batch of one is skipped (as
    // PyTorch's `drop_last` would), and the schedule counts the steps actually taken.
    let skip_single = n % bs == 1 && n > 1;
    let steps_per_epoch = (n / bs + i64::from(n % bs > 1)).max(1) as u64;
    let mut trainee = Trainee::new(
        cfg_name,
        seed,
        head,
        cfg,
        job.num_epochs,
        steps_per_epoch,
        encoder_params,
    )?;
    let dir = seed_dir(cfg_dir, seed);
    crate::runner::remove_event_files(&dir);
    if let Err(e) = trainee.log_to(&dir) {
        eprintln!("warning: {e}");
    }
    let label = format!(
        "{}/{}-{cfg_name}: fine-tune seed {seed}",
        ft.exp.name, ft.job_name
    );
    let mut progress = Progress::new(label, job.num_epochs as u64);
    let encoder_device = virb_plugin_api::parse_device(plugin(encoder.device())?.as_str())?;
    for epoch in 0..job.num_epochs {
        let order = Vec::<i64>::try_from(&epoch_order(n, seed, epoch)?)?;
        let mut metric = plugin(trainee.head.new_metric())?;
        for chunk in order.chunks(bs as usize) {
            if skip_single && chunk.len() == 1 {
                continue;
            }
            let indices: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
            let context = virb_plugin_api::SampleContext {
                augment: true,
                epoch,
                seed,
            };
            let (x, target) =
                read_batch(ft.train, &indices, frames, ft.pool, &meta.source, context)?;
            let x = x.f_to_device(encoder_device)?;
            let target = target.f_to_device(device)?;
            let feats = encode_batch(&x, frames, outputs, |x| {
                plugin(encoder.forward_train(TensorRef::of(x), RSlice::from_slice(outputs)))
            })?;
            let named: Vec<(String, Tensor)> =
                outputs.iter().map(|o| o.to_string()).zip(feats).collect();
            let refs = crate::train::as_refs(&named);
            let hw = x.size();
            let hw = (hw[hw.len() - 2] as u32, hw[hw.len() - 1] as u32);
            match trainee.train_step(&refs, TensorRef::of(&target), &mut metric, epoch, hw) {
                Ok(()) => {}
                Err(stop) => {
                    trainee.set_stop(stop);
                    break;
                }
            }
        }
        if !trainee.active() {
            break;
        }
        let loss = match trainee.take_epoch_loss(epoch) {
            Ok(loss) => loss,
            Err(stop) => {
                trainee.set_stop(stop);
                break;
            }
        };
        let train_metrics: Vec<f64> = plugin(metric.compute())?.into_iter().collect();
        trainee.end_epoch(epoch, loss, train_metrics, None, ft.metric_names);
        progress.inc(1, &format!("loss {loss:.4}"));
    }
    progress.finish("trained");
    let (test, t) = encode_split(
        ft.test,
        &EncodeRequest {
            encoder: &encoder,
            outputs,
            frames,
            batch_size: job.eval_batch_size() as usize,
            pool: ft.pool,
            store_device: device,
            label: format!("{}/{}: encode test (tuned)", ft.exp.name, ft.job_name),
        },
    )?;
    *timings = *timings + t;
    let test_len = crate::store::FeatureStore::len(&test);
    let (outcome, head) = trainee.finish(
        &test,
        job.eval_batch_size() as i64,
        device,
        ft.metric_names,
        ft.higher_is_better,
    );
    if let Some(Stop::Failed { reason }) = &outcome.stop {
        return Err(JobError::Other(reason.clone()));
    }
    let state = match outcome.stop {
        None => {
            let enc_state: Vec<(String, Tensor)> = plugin(encoder.state())?
                .into_iter()
                .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
                .collect();
            crate::results::write_head(&dir.join("encoder.safetensors"), &enc_state).map_err(
                |e| {
                    JobError::Other(format!(
                        "cannot write encoder.safetensors in {}: {e}",
                        dir.display()
                    ))
                },
            )?;
            Some(
                plugin(head.state())?
                    .into_iter()
                    .map(|nt| (nt.name.to_string(), nt.tensor.into_tch()))
                    .collect(),
            )
        }
        Some(_) => None,
    };
    let record = save_run(cfg_dir, hash, run_record(&outcome, ft.metric_names), state)?;
    Ok((record, test_len))
}
