//! Decode + resize + normalise throughput of `virb_plugin_kit::image::load_input` on one thread.
//!
//! Usage: `decode_bench <folder> <size> <repeats> [dump.f32]`. Loads every .jpg/.jpeg/.png in the
//! folder (sorted) once per pass; the first pass is a warm-up. Prints JSON with the median
//! seconds per pass. With a fourth argument, also writes each image's `[3, size, size]` tensor as
//! raw little-endian float32, one after another in file order, to that path (for comparisons).
use std::{io::Write, path::PathBuf, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: decode_bench <folder> <size> <repeats> [dump.f32]");
        std::process::exit(2);
    }
    let size: u32 = args[2].parse().expect("size");
    let repeats: usize = args[3].parse().expect("repeats");
    tch::set_num_threads(1);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args[1])
        .expect("folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            matches!(
                p.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("jpg" | "jpeg" | "png")
            )
        })
        .collect();
    files.sort();
    if let Some(dump) = args.get(4) {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dump).expect("dump file"));
        for f in &files {
            let t = virb_plugin_kit::image::load_input(f, size).expect("load");
            let v: Vec<f32> = Vec::<f32>::try_from(t.flatten(0, -1)).expect("tensor");
            for x in v {
                out.write_all(&x.to_le_bytes()).expect("write");
            }
        }
    }
    if repeats == 0 {
        return;
    }
    let mut times = Vec::with_capacity(repeats);
    for pass in 0..=repeats {
        let start = Instant::now();
        for f in &files {
            let t = virb_plugin_kit::image::load_input(f, size).expect("load");
            drop(std::hint::black_box(t));
        }
        if pass > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"images\": {}, \"seconds\": {median:.6}, \"images_per_s\": {:.2}}}",
        files.len(),
        files.len() as f64 / median
    );
}
