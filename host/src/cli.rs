//! Parsers of numeric command-line values: each says what its flag expects, so that `--threads
//! -3` is "expects a positive number of threads" instead of clap's "unexpected argument '-3'"
//! (the flags also accept values that look negative, so that they reach these parsers).

fn integer<T: std::str::FromStr>(s: &str, expects: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expects {expects}, got `{s}`"))
}

fn at_least<T: TryFrom<i128>>(s: &str, min: i128, max: i128, expects: &str) -> Result<T, String> {
    let bad = || format!("expects {expects}, got `{s}`");
    let v: i128 = s.trim().parse().map_err(|_| bad())?;
    if v < min || v > max {
        return Err(bad());
    }
    T::try_from(v).map_err(|_| bad())
}

/// `--threads`: libtorch threads, 1 or more.
pub fn threads(s: &str) -> Result<i32, String> {
    at_least(s, 1, 1024, "a number of threads from 1 to 1024")
}

/// `--decode-workers`: image decoding threads, 1 or more.
pub fn workers(s: &str) -> Result<usize, String> {
    at_least(s, 1, 1024, "a number of decoding threads from 1 to 1024")
}

/// `--max-epochs`: 1 or more.
pub fn epochs(s: &str) -> Result<u32, String> {
    at_least(s, 1, u32::MAX as i128, "a number of epochs of at least 1")
}

/// `--checkpoint-every`: seconds, 0 or more.
pub fn seconds(s: &str) -> Result<f64, String> {
    let expects = "a number of seconds >= 0 (0: after every epoch)";
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expects {expects}, got `{s}`")),
    }
}

/// `fixtures --classes`: 2 or more (each task has its own maximum).
pub fn classes(s: &str) -> Result<u32, String> {
    at_least(
        s,
        2,
        100_000,
        "a number of classes of at least 2 (a classifier needs two)",
    )
}

/// `fixtures --train-per-class`, `--test-per-class`: 1 or more.
pub fn samples(s: &str) -> Result<u32, String> {
    at_least(
        s,
        1,
        100_000,
        "a number of images per class of at least 1 (a split without samples is not a usable data set)",
    )
}

/// `fixtures --image-size`: pixels, 16 to 4096 (the sizes a job's `image_size` accepts).
pub fn image_side(s: &str) -> Result<u32, String> {
    at_least(s, 16, 4096, "an image side from 16 to 4096 pixels")
}

/// `fixtures --seed`: any non-negative integer.
pub fn seed(s: &str) -> Result<u64, String> {
    integer(s, "a non-negative integer")
}

/// A byte count: a number with an optional `K`, `M`, `G` or `T` suffix (powers of 1024; `B`,
/// `iB` and lower case accepted), e.g. `8G`, `1.5T`, `500M`, `4096`.
pub fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok((v * mult as f64) as u64),
        _ => Err(format!(
            "`{s}` is not a size: give bytes or a number with K, M, G or T (e.g. 8G)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flag_says_what_it_expects() {
        assert_eq!(threads("4"), Ok(4));
        assert_eq!(
            threads("-3"),
            Err("expects a number of threads from 1 to 1024, got `-3`".into())
        );
        assert!(threads("0").is_err() && threads("x").is_err());
        assert_eq!(seconds("0"), Ok(0.0));
        assert!(seconds("-1")
            .expect_err("negative")
            .contains("seconds >= 0"));
        assert!(seconds("nan").is_err() && seconds("inf").is_err());
        assert!(classes("0").expect_err("zero").contains("at least 2"));
        assert!(samples("0").is_err() && samples("1").is_ok());
        assert!(image_side("0").is_err() && image_side("16").is_ok());
        assert!(seed("-1").expect_err("negative").contains("non-negative"));
        assert!(workers("99999999999999999999999").is_err());
        assert_eq!(bytes("8G"), Ok(8 << 30));
        assert_eq!(bytes("1.5KiB"), Ok(1536));
        assert_eq!(bytes("500m"), Ok(500 << 20));
        assert_eq!(bytes("4096"), Ok(4096));
        assert!(bytes("-1G").expect_err("negative").contains("not a size"));
        assert!(bytes("lots").is_err());
    }
}
