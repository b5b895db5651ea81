//! The frozen-encoder driver: each split reaches training through a [`FeatureStore`] (read from
//! the verified feature cache, encoded once into memory or a memory-mapped file, or encoded live
//! batch by batch with the task's augmentation: [`crate::splits`] decides and says why), the
//! validation split is an index view of the training store, and every pending config of the
//! job trains on it in one pass per seed ([`super::grid`]).
use super::grid::{train_grid, GridData};
use super::TrainedJob;
use crate::config::TrainingConfig;
use crate::error::JobError;
use crate::plan::{Ctx, ExpCtx, JobPlan};
use crate::splits::{cached_or_claim, serve, EncoderId};
use crate::store::{split_validation, FeatureStore};
use virb_plugin_api::{DatasetBox, EncoderBox, NamedTensor, Split};

/// A job's opened splits.
pub(crate) struct Splits<'a> {
    /// The train split.
    pub train: &'a DatasetBox,
    /// The test split.
    pub test: &'a DatasetBox,
    /// Head outputs.
    pub num_outputs: u32,
    /// Whether the targets are class indices (a validation split is then stratified).
    pub classes: bool,
}

/// Trains the pending configs of a job on the frozen encoder's features.
pub(crate) fn run(
    ctx: &Ctx<'_>,
    ec: &ExpCtx<'_>,
    plan: &JobPlan<'_>,
    todo: &[(&String, &TrainingConfig)],
    splits: &Splits<'_>,
) -> Result<TrainedJob, JobError> {
    let (job, task) = (plan.job, plan.task);
    let id = EncoderId {
        exp: ec.exp,
        entry: ec.entry,
        weights_sha256: &ec.weights_sha256,
    };
    // Claims on the cache entries this job encodes are held until they are written (dropped
    // at the end of this function), so another worker wanting the same split waits to read it.
    let (cached_train, _encoding_train) =
        cached_or_claim(ctx, &id, task, job, Split::Train, splits.train)?;
    let (cached_test, _encoding_test) =
        cached_or_claim(ctx, &id, task, job, Split::Test, splits.test)?;
    // The encoder is loaded only when something needs it: a fully cached job never reads the
    // weights (unless the head starts from them).
    let encoder: Option<&EncoderBox> =
        if cached_train.is_none() || cached_test.is_none() || task.info.wants_encoder_state {
            Some(ec.encoder(ctx)?)
        } else {
            None
        };
    let loaded = || encoder.ok_or_else(|| JobError::Other("encoder not loaded".into()));
    let train_full = match cached_train {
        Some(hit) => hit,
        None => serve(
            ctx,
            &id,
            task,
            job,
            plan.name,
            Split::Train,
            splits.train,
            loaded()?,
        )?,
    };
    let test = match cached_test {
        Some(hit) => hit,
        None => serve(
            ctx,
            &id,
            task,
            job,
            plan.name,
            Split::Test,
            splits.test,
            loaded()?,
        )?,
    };
    let encoder_state = match encoder {
        Some(enc) if task.info.wants_encoder_state => encoder_state(ec, plan, enc),
        _ => Vec::new(),
    };
    let split = match job.validation_fraction {
        Some(fraction) => Some(split_validation(
            train_full.store(),
            fraction,
            job.seed,
            splits.classes,
        )?),
        None => None,
    };
    let (train, val): (&dyn FeatureStore, Option<&dyn FeatureStore>) = match &split {
        Some(s) => (&s.train, Some(&s.val as &dyn FeatureStore)),
        None => (train_full.store(), None),
    };
    let outcomes = train_grid(
        ctx,
        ec,
        plan,
        todo,
        &GridData {
            train,
            val,
            test: test.store(),
            num_outputs: splits.num_outputs,
            encoder_state,
        },
    )?;
    Ok(TrainedJob {
        outcomes,
        train_size: train.len(),
        test_size: test.store().len(),
        validation: split
            .as_ref()
            .map(|s| (s.fraction, s.val.len(), s.stratified)),
        num_outputs: splits.num_outputs,
        // A live store's timings grow while it trains: read them after training.
        timings: train_full.timings() + test.timings(),
        features: [train_full.how(), test.how()],
    })
}

/// The encoder's weights for a head that starts from them (DeepLab's `layer4`); an encoder that
/// cannot give them leaves the head to start from its own initialisation, and the run says so.
pub(crate) fn encoder_state(
    ec: &ExpCtx<'_>,
    plan: &JobPlan<'_>,
    encoder: &EncoderBox,
) -> Vec<NamedTensor> {
    match encoder.state().into_result() {
        Ok(state) => state.into_iter().collect(),
        Err(e) => {
            eprintln!(
                "{}/{}: the encoder does not give its weights to the head ({})",
                ec.exp.name, plan.name, e.message
            );
            Vec::new()
        }
    }
}
