//! How a job's splits reach training: from the verified feature cache, encoded once (and
//! cached), or live. `pre_encode: true` (the default) encodes once when the features fit the
//! cache budget and every sample of the split has one input size; otherwise the split is served
//! live, and the run says why. A pixel-wise task's pyramid is streamed into a memory-mapped,
//! chunk-verified file as it is encoded; it is then held in (device) memory when it fits the
//! memory budget, else read from the map batch by batch.
use crate::encode::{encode_split, EncodeRequest, EncodeTimings};
use crate::error::{plugin, JobError};
use crate::features::{cache_key, encode_to_chunked, load_cached, load_chunked, store_cached};
use crate::plan::Ctx;
use crate::store::{FeatureStore, LiveStore, MappedStore, MemoryStore};
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
    /// Encoded once into a memory-mapped file, read batch by batch.
    Mapped(MappedStore, EncodeTimings),
    /// Encoded batch by batch during training.
    Live(LiveStore<'a>),
}

impl Served<'_> {
    /// The store.
    pub fn store(&self) -> &dyn FeatureStore {
        match self {
            Served::Memory(m, _) => m,
            Served::Mapped(m, _) => m,
            Served::Live(l) => l,
        }
    }

    /// `cached`, `encoded` or `live`, for results.json.
    pub fn how(&self) -> &'static str {
        match self {
            Served::Memory(_, t) if t.from_cache => "cached",
            Served::Memory(..) => "encoded",
            Served::Mapped(_, t) if t.from_cache => "cached, memory-mapped",
            Served::Mapped(..) => "encoded, memory-mapped",
            Served::Live(_) => "live",
        }
    }

    /// Time spent producing the features so far (a live store's grows while it trains).
    pub fn timings(&self) -> EncodeTimings {
        match self {
            Served::Memory(_, t) | Served::Mapped(_, t) => *t,
            Served::Live(l) => l.encode_timings(),
        }
    }
}

fn outputs(task: &TaskEntry) -> Vec<RString> {
    task.info.required_outputs.to_vec()
}

/// The split's features from the cache, if the job pre-encodes and the cache has them (a
/// memory-mapped file is read into memory when it fits the memory budget).
pub(crate) fn cached<'a>(
    ctx: &Ctx<'_>,
    id: &EncoderId<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    split: Split,
    ds: &DatasetBox,
) -> Result<Option<Served<'a>>, JobError> {
    let (Some(cache), true) = (&ctx.opts.cache, pre_encodes(task, job)) else {
        return Ok(None);
    };
    let key = key(id, task, job, split, ds)?;
    let hit = EncodeTimings {
        from_cache: true,
        ..EncodeTimings::default()
    };
    if let Some((m, _)) = load_cached(cache, &key, ctx.opts.device, job.image_size)? {
        return Ok(Some(Served::Memory(m, hit)));
    }
    match load_chunked(cache, &key)? {
        Some(mapped) => Ok(Some(in_memory_if_it_fits(ctx, mapped, hit)?)),
        None => Ok(None),
    }
}

/// The split from the cache, as [`cached`]; when the cache lacks it and the job pre-encodes,
/// also a claim on its cache entry (`<cache>/.encoding-<digest>.claim`) that the caller holds
/// while it encodes: a second worker that wants the same split at the same moment waits for
/// the first and then reads the cache, so the split is encoded once. A dead encoder's claim
/// is taken over as the run's `--lease` says.
pub(crate) fn cached_or_claim<'a>(
    ctx: &Ctx<'_>,
    id: &EncoderId<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    split: Split,
    ds: &DatasetBox,
) -> Result<(Option<Served<'a>>, Option<crate::claims::Claim>), JobError> {
    let lease = crate::claims::LeaseOptions::new(ctx.opts.lease);
    let mut said = false;
    loop {
        if let Some(hit) = cached(ctx, id, task, job, split, ds)? {
            return Ok((Some(hit), None));
        }
        let (Some(cache), true) = (&ctx.opts.cache, pre_encodes(task, job)) else {
            return Ok((None, None));
        };
        let digest = key(id, task, job, split, ds)?.digest();
        let path = cache.dir().join(format!(".encoding-{digest}.claim"));
        let what = format!("encode {}/{}", id.exp.name, split.as_str());
        match crate::claims::try_claim(&path, &what, &lease) {
            Ok(crate::claims::Attempt::Acquired(claim)) => {
                // The holder before us may have just finished.
                if let Some(hit) = cached(ctx, id, task, job, split, ds)? {
                    return Ok((Some(hit), None));
                }
                return Ok((None, Some(claim)));
            }
            Ok(crate::claims::Attempt::Held(h)) => {
                if !said {
                    eprintln!(
                        "{}: {} split: worker {} on {} is encoding it; waiting to read it from the cache",
                        id.exp.name,
                        split.as_str(),
                        h.worker,
                        h.host
                    );
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            // A cache folder that cannot hold the claim: encode without one (at worst twice).
            Err(_) => return Ok((None, None)),
        }
    }
}

/// The shards a split of `len` samples is encoded in, when the run shards (`--shard-samples`)
/// and the split is larger than a shard.
fn sharded(ctx: &Ctx<'_>, len: i64, batch: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let shard = ctx.opts.shard_samples.filter(|s| *s > 0)?;
    crate::shards::plan(len.max(0) as usize, shard, batch)
}

/// A mapped store, read into memory (on the training device) when it fits the memory budget.
fn in_memory_if_it_fits<'a>(
    ctx: &Ctx<'_>,
    mapped: MappedStore,
    t: EncodeTimings,
) -> Result<Served<'a>, JobError> {
    if mapped.bytes() <= ctx.opts.memory_budget {
        Ok(Served::Memory(mapped.into_memory(ctx.opts.device)?, t))
    } else {
        Ok(Served::Mapped(mapped, t))
    }
}

pub(crate) fn key(
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

/// Serves one split that the cache does not have: when the job pre-encodes and the features fit
/// the budget, encodes it once (and caches it); else live.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve<'a>(
    ctx: &'a Ctx<'_>,
    id: &EncoderId<'_>,
    task: &TaskEntry,
    job: &JobConfig,
    job_name: &str,
    split: Split,
    ds: &'a DatasetBox,
    encoder: &'a EncoderBox,
) -> Result<Served<'a>, JobError> {
    let outs = outputs(task);
    let frames = task.info.frames.max(1);
    let label = format!("{}/{job_name}: {}", id.exp.name, split.as_str());
    let live = LiveStore::open(ds, encoder, &outs, frames, &ctx.pool, false)?;
    if !pre_encodes(task, job) {
        if task.info.pixel_wise {
            let when = if split == Split::Train {
                "every epoch, with the task's training augmentation"
            } else {
                "each time it is evaluated"
            };
            eprintln!("{label}: encoding live {when} (pre_encode: false)");
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
    let memory_budget = ctx.opts.memory_budget;
    let to_file = ctx.opts.cache.is_some() && (task.info.pixel_wise || bytes > memory_budget);
    if !to_file && bytes > memory_budget {
        eprintln!(
            "{label}: the features of {} samples would take {}, over the memory budget of {} (--memory-budget), and there is no cache to map them from (--no-cache); training live instead",
            live.len(),
            human_bytes(bytes),
            human_bytes(memory_budget)
        );
        return Ok(Served::Live(live));
    }
    if task.info.pixel_wise {
        eprintln!(
            "{label}: caching the features ({}) of {} samples: {} (float16){}",
            names.join(", "),
            live.len(),
            human_bytes(bytes),
            if to_file {
                " in a memory-mapped file"
            } else {
                ""
            }
        );
    }
    let req = EncodeRequest {
        encoder,
        outputs: &outs,
        frames,
        batch_size: job.eval_batch_size() as usize,
        pool: &ctx.pool,
        store_device: ctx.opts.device,
        label: format!("{}/{job_name}: encode {}", id.exp.name, split.as_str()),
        range: None,
    };
    let encoded = match (&ctx.opts.cache, to_file) {
        (Some(cache), true) => {
            let key = key(id, task, job, split, ds)?;
            encode_to_chunked(cache, &key, ds, &req, &live)
                .and_then(|(mapped, t)| in_memory_if_it_fits(ctx, mapped, t))
        }
        (Some(cache), false) if sharded(ctx, live.len(), req.batch_size).is_some() => {
            let shards = sharded(ctx, live.len(), req.batch_size).unwrap_or_default();
            key(id, task, job, split, ds).and_then(|whole| {
                crate::shards::encode_sharded(
                    ctx,
                    cache,
                    &whole,
                    ds,
                    &req,
                    (&id.exp.name, job_name, split),
                    &shards,
                )
                .map(|(store, t)| Served::Memory(store, t))
            })
        }
        _ => encode_split(ds, &req).map(|(store, t)| {
            if let Some(cache) = &ctx.opts.cache {
                if let Ok(key) = key(id, task, job, split, ds) {
                    store_cached(cache, &key, &store);
                }
            }
            Served::Memory(store, t)
        }),
    };
    match encoded {
        Ok(served) => Ok(served),
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
    ec: &'a crate::plan::ExpCtx<'_>,
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
    let (hit, _encoding) = cached_or_claim(ctx, &id, task, job, split, ds)?;
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let encoder = ec.encoder(ctx)?;
    serve(ctx, &id, task, job, job_name, split, ds, encoder)
}
