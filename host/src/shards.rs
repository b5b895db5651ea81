//! A large split's encoding shared by the workers of a run: the split is cut into shards of
//! `--shard-samples` (rounded to whole batches, so every batch is the one an unsharded encode
//! would run and the features are the same bits), each shard a feature-cache entry of its own
//! (the split's key with the sample range). The worker that needs the split publishes a request
//! (`<out>/.virb/shards/<digest>.json`) and encodes shards; workers with nothing else to do
//! ([`help`], from [`crate::schedule`]) encode the shards it has not started. Each shard is
//! claimed like any encode ([`crate::claims`]), so none is encoded twice and a dead helper's
//! shard is taken over. When every shard is cached, the requester joins them in order, stores
//! the whole split as one cache entry, and removes the shards and the request.
use crate::encode::{encode_split, EncodeRequest, EncodeTimings};
use crate::error::JobError;
use crate::features::{load_cached, store_cached};
use crate::plan::{job_identity, Ctx, ExpCtx, JobPlan};
use crate::splits::{key, EncoderId};
use crate::store::{FeatureStore, MemoryStore};
use crate::survey::Survey;
use serde::{Deserialize, Serialize};
use std::{ops::Range, path::PathBuf, time::Duration};
use tch::Tensor;
use virb_feature_cache::{Cache, CacheKey};
use virb_plugin_api::{DatasetBox, Split};

/// What a request file holds: which unit's split, and how it is cut.
#[derive(Serialize, Deserialize)]
struct Request {
    experiment: String,
    job: String,
    split: String,
    samples: usize,
    shard: usize,
}

/// The shards of `len` samples: ranges of `shard` samples rounded up to whole batches; None
/// when that makes a single shard.
pub(crate) fn plan(len: usize, shard: usize, batch: usize) -> Option<Vec<Range<usize>>> {
    let batch = batch.max(1);
    let shard = shard.max(1).div_ceil(batch) * batch;
    if len <= shard {
        return None;
    }
    Some(
        (0..len)
            .step_by(shard)
            .map(|s| s..(s + shard).min(len))
            .collect(),
    )
}

/// The cache key of one shard: the split's key with the sample range in its split name.
fn shard_key(whole: &CacheKey, r: &Range<usize>) -> CacheKey {
    let mut k = whole.clone();
    k.split = format!("{}[{}..{})", whole.split, r.start, r.end);
    k
}

fn request_file(ctx: &Ctx<'_>, whole: &CacheKey) -> PathBuf {
    ctx.opts
        .out
        .join(".virb")
        .join("shards")
        .join(format!("{}.json", whole.digest()))
}

/// Encodes the shards not yet cached whose claim this worker gets; returns how many.
fn encode_free_shards(
    ctx: &Ctx<'_>,
    cache: &Cache,
    whole: &CacheKey,
    shards: &[Range<usize>],
    ds: &DatasetBox,
    req: &EncodeRequest<'_>,
) -> Result<usize, JobError> {
    let lease = crate::claims::LeaseOptions::new(ctx.opts.lease);
    let mut done = 0;
    for (i, r) in shards.iter().enumerate() {
        // Joined already (a helper reading an old request): nothing left to do.
        if cache.has(whole) {
            break;
        }
        let k = shard_key(whole, r);
        if cache.has(&k) {
            continue;
        }
        let claim_path = cache.dir().join(format!(".encoding-{}.claim", k.digest()));
        let Ok(crate::claims::Attempt::Acquired(claim)) =
            crate::claims::try_claim(&claim_path, &k.describe(), &lease)
        else {
            continue;
        };
        if cache.has(&k) {
            continue;
        }
        let shard_req = EncodeRequest {
            range: Some(r.clone()),
            label: format!(
                "{} shard {}/{} [{}..{})",
                req.label,
                i + 1,
                shards.len(),
                r.start,
                r.end
            ),
            ..*req
        };
        let (store, _) = encode_split(ds, &shard_req)?;
        store_cached(cache, &k, &store);
        // Joined while this shard was encoded: it is not needed, and would only take room.
        if cache.has(whole) {
            cache.remove(&k);
        }
        claim.release();
        done += 1;
    }
    Ok(done)
}

/// Encodes a split in shards that other workers may help with, then joins them (see the
/// module's comment). The features equal an unsharded encode's.
pub(crate) fn encode_sharded(
    ctx: &Ctx<'_>,
    cache: &Cache,
    whole: &CacheKey,
    ds: &DatasetBox,
    req: &EncodeRequest<'_>,
    unit: (&str, &str, Split),
    shards: &[Range<usize>],
) -> Result<(MemoryStore, EncodeTimings), JobError> {
    let start = std::time::Instant::now();
    let request = Request {
        experiment: unit.0.to_string(),
        job: unit.1.to_string(),
        split: unit.2.as_str().to_string(),
        samples: shards.last().map_or(0, |r| r.end),
        shard: shards.first().map_or(0, |r| r.len()),
    };
    let file = request_file(ctx, whole);
    crate::outdir::write_json(&file, &request)
        .map_err(|e| JobError::Other(format!("cannot write {}: {e}", file.display())))?;
    eprintln!(
        "{}: {} samples in {} shards of {}; idle workers on this --out help",
        req.label,
        request.samples,
        shards.len(),
        request.shard
    );
    let outcome = (|| {
        loop {
            let mine = encode_free_shards(ctx, cache, whole, shards, ds, req)?;
            if shards.iter().all(|r| cache.has(&shard_key(whole, r))) {
                break;
            }
            if mine == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        join(cache, whole, shards, req)
    })();
    let _ = std::fs::remove_file(&file);
    let (store, mut timings) = outcome?;
    timings.wall_s = start.elapsed().as_secs_f64();
    store_cached(cache, whole, &store);
    for r in shards {
        cache.remove(&shard_key(whole, r));
    }
    Ok((store, timings))
}

/// The shards, read back from the cache (verified) and joined in order.
fn join(
    cache: &Cache,
    whole: &CacheKey,
    shards: &[Range<usize>],
    req: &EncodeRequest<'_>,
) -> Result<(MemoryStore, EncodeTimings), JobError> {
    let mut features: Vec<(String, Vec<Tensor>)> = Vec::new();
    let mut targets = Vec::new();
    let mut input_hw = (0, 0);
    for r in shards {
        let k = shard_key(whole, r);
        let (store, _) = load_cached(cache, &k, req.store_device, 0)?.ok_or_else(|| {
            JobError::Other(format!(
                "shard {} of the split vanished from the cache; rerun",
                k.split
            ))
        })?;
        input_hw = store.input_hw();
        for (i, (name, t)) in store.features().iter().enumerate() {
            if features.len() <= i {
                features.push((name.clone(), Vec::new()));
            }
            features[i].1.push(t.shallow_clone());
        }
        targets.push(store.targets().shallow_clone());
    }
    let features = features
        .into_iter()
        .map(|(n, parts)| Ok((n, Tensor::f_cat(&parts, 0)?)))
        .collect::<Result<Vec<_>, tch::TchError>>()?;
    let store = MemoryStore::new(features, Tensor::f_cat(&targets, 0)?, input_hw)?;
    Ok((store, EncodeTimings::default()))
}

/// An idle worker's help: encodes free shards of the requests under `<out>/.virb/shards`;
/// returns whether it encoded any.
pub(crate) fn help(ctx: &Ctx<'_>, survey: &Survey<'_>) -> bool {
    let (Some(cache), Some(_)) = (&ctx.opts.cache, ctx.opts.shard_samples) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(ctx.opts.out.join(".virb").join("shards")) else {
        return false;
    };
    let mut helped = false;
    for e in entries.flatten() {
        let Some(req) = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|t| serde_json::from_str::<Request>(&t).ok())
        else {
            continue;
        };
        match help_one(ctx, survey, cache, &req) {
            Ok(n) => helped |= n > 0,
            Err(err) => eprintln!(
                "warning: helping encode {}/{} {}: {err}",
                req.experiment, req.job, req.split
            ),
        }
    }
    helped
}

fn help_one(
    ctx: &Ctx<'_>,
    survey: &Survey<'_>,
    cache: &Cache,
    req: &Request,
) -> Result<usize, JobError> {
    let Some(unit) = survey
        .units
        .iter()
        .find(|u| u.job_name == req.job && survey.experiments[u.exp].exp.name == req.experiment)
    else {
        return Ok(0);
    };
    let es = &survey.experiments[unit.exp];
    let Ok((entry, _, sha)) = &es.ready else {
        return Ok(0);
    };
    let split = match req.split.as_str() {
        "train" => Split::Train,
        "test" => Split::Test,
        _ => return Ok(0),
    };
    let task = ctx.registry.task(&unit.job.task).map_err(JobError::Other)?;
    let ec = ExpCtx {
        exp: es.exp,
        entry,
        weights_sha256: sha.clone(),
        encoder: std::cell::OnceCell::new(),
    };
    let job_plan = JobPlan {
        name: unit.job_name,
        job: unit.job,
        task,
        identity: job_identity(ctx, &ec, task, unit.job),
    };
    let ds = job_plan.open_split(ctx, split)?;
    let id = EncoderId {
        exp: es.exp,
        entry,
        weights_sha256: sha,
    };
    let whole = key(&id, task, unit.job, split, &ds)?;
    let batch = unit.job.eval_batch_size() as usize;
    let Some(shards) = plan(req.samples, req.shard, batch) else {
        return Ok(0);
    };
    if shards.iter().all(|r| cache.has(&shard_key(&whole, r))) {
        return Ok(0);
    }
    let outputs = task.info.required_outputs.to_vec();
    let encoder = ec.encoder(ctx)?;
    let er = EncodeRequest {
        encoder,
        outputs: &outputs,
        frames: task.info.frames.max(1),
        batch_size: batch,
        pool: &ctx.pool,
        store_device: ctx.opts.device,
        label: format!(
            "{}/{}: encode {} (helping)",
            req.experiment, req.job, req.split
        ),
        range: None,
    };
    encode_free_shards(ctx, cache, &whole, &shards, &ds, &er)
}
