//! How a job's splits reach training: from the verified feature cache, encoded once (and
//! cached), or live. `pre_encode: true` (the default) encodes once when the features fit the
//! cache budget and every sample of the split has one input size; otherwise the split is served
//! live, and the run says why.
use crate::encode::{encode_split, EncodeRequest, EncodeTimings};
use crate::error::{plugin, JobError};
use crate::features::{cache_key, load_cached, store_cached};
use crate::runner::Ctx;
use crate::store::{FeatureStore, LiveStore, MemoryStore};
use crate::{config::JobConfig, plugins::TaskEntry};
use virb_feature_cache::human_bytes;
use virb_plugin_api::{abi_stable::std_types::RString, DatasetBox, EncoderBox, Split};

/// The experiment's identity as the cache keys it.
pub(crate) struct EncoderId<'a> {
    /// The experiment.
    pub exp: &'a crate::config::Experiment,
    /// Its encoder plugin entry.
    pub entry: &'a crate::plugins::EncoderEntry,
    /// SHA-256 of its weights.
    pub weights_sha256: &'a str,
}

/// One split as training sees it.
pub(crate) enum Served<'a> {
    /// Encoded once (now or by an earlier run), in memory.
    Memory(MemoryStore, EncodeTimings),
    /// Encoded batch by batch during training.
    Live(LiveStore<'a>),
}

impl Served<'_> {
    /// The store.
    pub fn store(&self) -> &dyn FeatureStore {
        match self {
            Served::Memory(m, _) => m,
            Served::Live(l) => l,
        }
    }

    /// `cached`, `encoded` or `live`, for results.json.
    pub fn how(&self) -> &'static str {
        match self {
            Served::Memory(_, t) if t.from_cache => "cached",
            Served::Memory(..) => "encoded",
            Served::Live(_) => "live",
        }
    }

    /// Time spent producing the features so far (a live store's grows while it trains).
    pub fn timings(&self) -> EncodeTimings {
        match self {
            Served::Memory(_, t) => *t,
            Served::Live(l) => {
                let t = l.timings();
                EncodeTimings {
                    decode_s: t.decode_s,
                    encode_s: t.encode_s,
                    wall_s: t.encode_s,
                    from_cache: false,
                }
            }
        }
    }
}

fn outputs(task: &TaskEntry) -> Vec<RString> {
    task.info.required_outputs.to_vec()
}

/// The split's features from the cache, if the job pre-encodes and the cache has them.
pub(crate) fn cached(
    ctx: &Ctx<'_>,
    id: &EncoderId<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    split: Split,
    ds: &DatasetBox,
) -> Result<Option<MemoryStore>, JobError> {
    let (Some(cache), true) = (&ctx.opts.cache, pre_encodes(task, job)) else {
        return Ok(None);
    };
    let key = key(id, task, job, split, ds)?;
    Ok(load_cached(cache, &key, ctx.opts.device, job.image_size)?.map(|(m, _)| m))
}

fn key(
    id: &EncoderId<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    split: Split,
    ds: &DatasetBox,
) -> Result<virb_feature_cache::CacheKey, JobError> {
    let meta = plugin(ds.meta())?;
    let names: Vec<String> = outputs(task).iter().map(|o| o.to_string()).collect();
    Ok(cache_key(
        id.exp,
        id.entry,
        id.weights_sha256,
        task,
        split,
        job,
        &names,
        &meta,
    ))
}

/// Whether the job asks for features encoded once.
pub(crate) fn pre_encodes(task: &TaskEntry, job: &JobConfig) -> bool {
    job.pre_encoded() && task.info.encodable
}

/// Serves one split: `cached` when the cache had it; else, when the job pre-encodes and the
/// features fit the budget, encodes it once (and caches it); else live.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve<'a>(
    ctx: &'a Ctx<'_>,
    id: &EncoderId<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    job_name: &str,
    split: Split,
    ds: &'a DatasetBox,
    cached: Option<MemoryStore>,
    encoder: &'a EncoderBox,
) -> Result<Served<'a>, JobError> {
    if let Some(m) = cached {
        return serve_cached(m);
    }
    let outs = outputs(task);
    let frames = task.info.frames.max(1);
    let label = format!("{}/{job_name}: {}", id.exp.name, split.as_str());
    let live = LiveStore::open(ds, encoder, &outs, frames, &ctx.pool, false)?;
    if !pre_encodes(task, job) {
        if task.info.pixel_wise {
            eprintln!("{label}: encoding live every epoch (pre_encode: false)");
        }
        return Ok(Served::Live(live));
    }
    let per_sample: i64 = live
        .shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<i64>())
        .sum();
    let bytes = (per_sample.max(0) as u64) * 2 * live.len() as u64;
    let budget = ctx.opts.cache_budget;
    let names: Vec<String> = outs.iter().map(|o| o.to_string()).collect();
    if bytes > budget {
        eprintln!(
            "{label}: the features ({}) of {} samples would take {} (float16), over the cache budget of {} (--cache-budget); training live instead",
            names.join(", "),
            live.len(),
            human_bytes(bytes),
            human_bytes(budget)
        );
        return Ok(Served::Live(live));
    }
    if task.info.pixel_wise {
        eprintln!(
            "{label}: caching the features ({}) of {} samples: {} (float16)",
            names.join(", "),
            live.len(),
            human_bytes(bytes)
        );
    }
    let encoded = encode_split(
        ds,
        &EncodeRequest {
            encoder,
            outputs: &outs,
            frames,
            batch_size: job.eval_batch_size() as usize,
            pool: &ctx.pool,
            store_device: ctx.opts.device,
            label: format!("{}/{job_name}: encode {}", id.exp.name, split.as_str()),
        },
    );
    match encoded {
        Ok((store, timings)) => {
            if let Some(cache) = &ctx.opts.cache {
                store_cached(cache, &key(id, task, job, split, ds)?, &store);
            }
            Ok(Served::Memory(store, timings))
        }
        Err(e @ JobError::VariableInputSize { .. }) => {
            eprintln!("{label}: {e}; one cache holds one size, so this split is encoded live");
            Ok(Served::Live(live))
        }
        Err(e) => Err(e),
    }
}

/// Serves one split of an experiment's job, loading the encoder only when the cache lacks it.
pub(crate) fn serve_split<'a>(
    ctx: &'a Ctx<'_>,
    ec: &'a crate::runner::ExpCtx<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    job_name: &str,
    split: Split,
    ds: &'a DatasetBox,
) -> Result<Served<'a>, JobError> {
    let (exp, entry) = (ec.exp, ec.entry);
    let sha = ec.weights_sha256.clone();
    let id = EncoderId {
        exp,
        entry,
        weights_sha256: &sha,
    };
    let hit = cached(ctx, &id, task, job, split, ds)?;
    if let Some(m) = hit {
        return serve_cached(m);
    }
    let encoder = ec.encoder(ctx)?;
    serve(ctx, &id, task, job, job_name, split, ds, None, encoder)
}

/// A split read from the cache.
pub(crate) fn serve_cached<'a>(m: MemoryStore) -> Result<Served<'a>, JobError> {
    Ok(Served::Memory(
        m,
        EncodeTimings {
            from_cache: true,
            ..EncodeTimings::default()
        },
    ))
}
