//! Unit tests: CRC vectors, an independent reader (framing, CRCs, protobuf) that parses the files
//! back, and TensorBoard's own Python reader when `VIRB_PYTHON_BIN` names a python that has it.

use super::*;
use std::collections::BTreeMap;
use std::process::Command;

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "virb-tensorboard-{name}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// An independent reader.

#[derive(Debug, Default, PartialEq)]
struct Event {
    wall_time: f64,
    step: i64,
    file_version: Option<String>,
    /// `(tag, simple_value)` of every `Summary.Value`.
    values: Vec<(String, f32)>,
}

enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Len(&'a [u8]),
    Fixed32([u8; 4]),
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> &'a [u8] {
    assert!(
        buf.len() >= n,
        "truncated: want {n} bytes, have {}",
        buf.len()
    );
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    head
}

fn varint(buf: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let b = take(buf, 1)[0];
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint longer than 10 bytes")
}

/// Every `(field number, value)` of a protobuf message.
fn fields(mut buf: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut buf)),
            1 => Field::Fixed64(take(&mut buf, 8).try_into().unwrap()),
            2 => {
                let n = varint(&mut buf) as usize;
                Field::Len(take(&mut buf, n))
            }
            5 => Field::Fixed32(take(&mut buf, 4).try_into().unwrap()),
            w => panic!("unexpected wire type {w}"),
        };
        out.push((key >> 3, field));
    }
    out
}

fn parse_event(data: &[u8]) -> Event {
    let mut e = Event::default();
    for (n, f) in fields(data) {
        match (n, f) {
            (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => e.step = v as i64,
            (3, Field::Len(s)) => e.file_version = Some(String::from_utf8(s.to_vec()).unwrap()),
            (5, Field::Len(summary)) => {
                for (n, f) in fields(summary) {
                    let (1, Field::Len(value)) = (n, f) else {
                        panic!("unexpected Summary field {n}")
                    };
                    let (mut tag, mut simple) = (None, None);
                    for (n, f) in fields(value) {
                        match (n, f) {
                            (1, Field::Len(s)) => {
                                tag = Some(String::from_utf8(s.to_vec()).unwrap())
                            }
                            (2, Field::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                            _ => panic!("unexpected Summary.Value field {n}"),
                        }
                    }
                    e.values
                        .push((tag.unwrap(), simple.expect("simple_value present")));
                }
            }
            (n, _) => panic!("unexpected Event field {n}"),
        }
    }
    e
}

/// Parses an event file, checking the framing and both CRCs of every record.
fn read_events(path: &Path) -> Vec<Event> {
    let bytes = fs::read(path).unwrap();
    let mut buf = &bytes[..];
    let mut events = Vec::new();
    while !buf.is_empty() {
        let len_bytes = take(&mut buf, 8);
        let len_crc = u32::from_le_bytes(take(&mut buf, 4).try_into().unwrap());
        assert_eq!(len_crc, masked_crc32c(len_bytes), "length CRC");
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let data = take(&mut buf, len);
        let data_crc = u32::from_le_bytes(take(&mut buf, 4).try_into().unwrap());
        assert_eq!(data_crc, masked_crc32c(data), "data CRC");
        events.push(parse_event(data));
    }
    events
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn same_f32(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

// ---------------------------------------------------------------------------------------------
// Checksums and encoding.

#[test]
fn crc32c_known_vectors() {
    assert_eq!(crc32c(b""), 0);
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b"a"), 0xC1D0_4330);
    // RFC 3720 (iSCSI) B.4 test vectors.
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    let ascending: Vec<u8> = (0u8..32).collect();
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
    let descending: Vec<u8> = (0u8..32).rev().collect();
    assert_eq!(crc32c(&descending), 0x113F_DB5C);
}

#[test]
#[allow(clippy::manual_rotate)] // the formula as TFRecord's documentation states it
fn masked_crc() {
    let crc = crc32c(b"123456789");
    let expected = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
    assert_eq!(masked_crc32c(b"123456789"), expected);
    // Precomputed: rotr(0xE3069283, 15) = 0x2507C60D, + 0xa282ead8 = 0xC78AB0E5.
    assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
}

#[test]
fn file_version_event_matches_tensorflow_bytes() {
    // `Event(wall_time=1.5, file_version="brain.Event:2").SerializeToString()`.
    let mut expected = vec![0x09];
    expected.extend_from_slice(&1.5f64.to_le_bytes());
    expected.extend_from_slice(&[0x1a, 13]);
    expected.extend_from_slice(b"brain.Event:2");
    assert_eq!(
        encode_event(1.5, 0, &Payload::FileVersion(FILE_VERSION)),
        expected
    );
}

#[test]
fn scalar_event_matches_tensorflow_bytes() {
    // `Event(wall_time=2.0, step=300, summary=Summary(value=[Summary.Value(tag="loss",
    // simple_value=0.5)])).SerializeToString()`.
    let mut expected = vec![0x09];
    expected.extend_from_slice(&2.0f64.to_le_bytes());
    expected.extend_from_slice(&[0x10, 0xAC, 0x02]); // step 300
    expected.extend_from_slice(&[0x2a, 13, 0x0a, 11, 0x0a, 4]);
    expected.extend_from_slice(b"loss");
    expected.push(0x15);
    expected.extend_from_slice(&0.5f32.to_le_bytes());
    assert_eq!(
        encode_event(
            2.0,
            300,
            &Payload::Scalar {
                tag: "loss",
                value: 0.5
            }
        ),
        expected
    );
}

#[test]
fn negative_step_is_ten_byte_varint() {
    let event = encode_event(
        0.0,
        -1,
        &Payload::Scalar {
            tag: "t",
            value: 1.0,
        },
    );
    assert_eq!(
        &event[9..20],
        &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
    );
    assert_eq!(parse_event(&event).step, -1);
}

#[test]
fn hostname_is_sanitized() {
    assert_eq!(sanitize_hostname("  box-1.lan\n"), "box-1.lan");
    assert_eq!(sanitize_hostname("a/b c\\d:é"), "a_b_c_d__");
    assert_eq!(sanitize_hostname(""), "localhost");
    assert_eq!(sanitize_hostname(".."), "localhost");
    assert_eq!(sanitize_hostname(&"x".repeat(300)).len(), 64);
    let h = hostname();
    assert!(!h.is_empty() && !h.contains('/'), "{h}");
}

// ---------------------------------------------------------------------------------------------
// Files.

#[test]
fn file_name_and_round_trip() {
    let tmp = TempDir::new("round-trip");
    let dir = tmp.0.join("nested/run");
    let mut w = EventWriter::create(&dir).unwrap();
    let name = w.path().file_name().unwrap().to_str().unwrap().to_owned();
    let parts: Vec<&str> = name
        .strip_prefix("events.out.tfevents.")
        .unwrap()
        .split('.')
        .collect();
    assert!(parts.len() >= 4, "{name}");
    let seconds: u64 = parts[0].parse().unwrap();
    let now = now_seconds() as u64;
    assert!(seconds <= now && now - seconds < 60, "{name}");
    assert_eq!(parts[parts.len() - 2], std::process::id().to_string());
    parts[parts.len() - 1].parse::<u64>().unwrap();
    assert_eq!(w.path().parent().unwrap(), dir);

    // The file version is on disk as soon as `create` returns.
    let first = read_events(w.path());
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!((first[0].wall_time - now_seconds()).abs() < 60.0);

    let values: [f64; 12] = [
        0.0,
        -0.0,
        0.1,
        -2.5,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e40, // beyond f32: infinity
        f64::from(f32::MAX),
        f64::from(f32::MIN_POSITIVE) / 4.0, // subnormal f32
        123_456_789.0,
        1e-50, // underflows to 0
    ];
    let steps: [i64; 12] = [0, 1, 2, -7, i64::MAX, i64::MIN, 10, 11, 12, 13, 14, 15];
    for (i, (&v, &s)) in values.iter().zip(&steps).enumerate() {
        w.add_scalar_at(&format!("tag/{}", i % 3), s, v, 1000.0 + i as f64)
            .unwrap();
    }
    w.add_scalar("ünïcode ✓", 3, 7.0).unwrap();
    w.add_scalar("", 4, 8.0).unwrap();
    w.flush().unwrap();
    let path = w.path().to_owned();
    w.add_scalar("after-flush", 5, 9.0).unwrap();
    drop(w); // flushes

    let events = read_events(&path);
    assert_eq!(events.len(), 1 + values.len() + 3);
    for (i, e) in events[1..=values.len()].iter().enumerate() {
        assert_eq!(e.step, steps[i]);
        assert_eq!(e.wall_time, 1000.0 + i as f64);
        assert_eq!(e.file_version, None);
        assert_eq!(e.values.len(), 1);
        assert_eq!(e.values[0].0, format!("tag/{}", i % 3));
        assert!(
            same_f32(e.values[0].1, values[i] as f32),
            "{i}: {} vs {}",
            e.values[0].1,
            values[i]
        );
    }
    let tail = &events[values.len() + 1..];
    assert_eq!(tail[0].values, vec![("ünïcode ✓".to_owned(), 7.0)]);
    assert_eq!(tail[1].values, vec![(String::new(), 8.0)]);
    assert_eq!(tail[2].values, vec![("after-flush".to_owned(), 9.0)]);
    assert_eq!(tail[2].step, 5);
    assert!(tail
        .iter()
        .all(|e| (e.wall_time - now_seconds()).abs() < 60.0));
}

#[test]
fn writers_in_one_folder_get_distinct_files() {
    let tmp = TempDir::new("distinct");
    let a = EventWriter::create(&tmp.0).unwrap();
    let b = EventWriter::create(&tmp.0).unwrap();
    assert_ne!(a.path(), b.path());
    drop((a, b));
    assert_eq!(event_files(&tmp.0).len(), 2);
}

#[test]
fn create_reports_errors() {
    let tmp = TempDir::new("errors");
    fs::create_dir_all(&tmp.0).unwrap();
    let file = tmp.0.join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    assert!(EventWriter::create(&file).is_err());
    assert!(EventWriter::create(&file.join("sub")).is_err());
}

// ---------------------------------------------------------------------------------------------
// TensorBoard's own reader.

/// A JSON value, parsed by the minimal parser below (the crate has no dependencies).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn parse(text: &str) -> Json {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing JSON");
        v
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn lit(&mut self, word: &str, v: Json) -> Json {
        assert!(
            self.s[self.i..].starts_with(word.as_bytes()),
            "bad JSON at {}",
            self.i
        );
        self.i += word.len();
        v
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        let Json::Str(k) = self.value() else {
                            panic!("JSON key")
                        };
                        assert!(self.eat(b':'));
                        m.insert(k, self.value());
                        if self.eat(b'}') {
                            break;
                        }
                        assert!(self.eat(b','), "JSON object at {}", self.i);
                    }
                }
                Json::Obj(m)
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                if !self.eat(b']') {
                    loop {
                        a.push(self.value());
                        if self.eat(b']') {
                            break;
                        }
                        assert!(self.eat(b','), "JSON array at {}", self.i);
                    }
                }
                Json::Arr(a)
            }
            b'"' => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    let c = self.s[self.i];
                    self.i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let e = self.s[self.i];
                            self.i += 1;
                            match e {
                                b'u' => {
                                    let mut code = self.hex4();
                                    if (0xD800..0xDC00).contains(&code) {
                                        assert_eq!(&self.s[self.i..self.i + 2], b"\\u");
                                        self.i += 2;
                                        let low = self.hex4();
                                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                                    }
                                    out.push(char::from_u32(code).unwrap());
                                }
                                b'n' => out.push('\n'),
                                b't' => out.push('\t'),
                                b'r' => out.push('\r'),
                                b'b' => out.push('\u{8}'),
                                b'f' => out.push('\u{c}'),
                                other => out.push(char::from(other)),
                            }
                        }
                        _ => {
                            // Copy one UTF-8 sequence.
                            let start = self.i - 1;
                            while self.i < self.s.len() && (self.s[self.i] & 0xC0) == 0x80 {
                                self.i += 1;
                            }
                            out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap());
                        }
                    }
                }
                Json::Str(out)
            }
            b't' => self.lit("true", Json::Bool(true)),
            b'f' => self.lit("false", Json::Bool(false)),
            b'n' => self.lit("null", Json::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(
                    text.parse()
                        .unwrap_or_else(|_| panic!("JSON number {text:?}")),
                )
            }
        }
    }

    fn hex4(&mut self) -> u32 {
        let h = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
        self.i += 4;
        u32::from_str_radix(h, 16).unwrap()
    }
}

#[test]
fn json_parser_handles_reader_output() {
    let v = JsonParser::parse(
        r#"{"a/b": {"t\u00e9\"x": [[1, 0.5], [-2, "NaN"], [3, -1e-45]]}, "é": {}}"#,
    );
    let Json::Obj(runs) = v else { panic!() };
    let Json::Obj(tags) = &runs["a/b"] else {
        panic!()
    };
    assert_eq!(
        tags["té\"x"],
        Json::Arr(vec![
            Json::Arr(vec![Json::Num(1.0), Json::Num(0.5)]),
            Json::Arr(vec![Json::Num(-2.0), Json::Str("NaN".into())]),
            Json::Arr(vec![Json::Num(3.0), Json::Num(-1e-45)]),
        ])
    );
    assert_eq!(runs["é"], Json::Obj(BTreeMap::new()));
}

/// The value `read_tensorboard.py` prints for an `f32`: a number, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"`.
fn json_f32(v: &Json) -> f32 {
    match v {
        Json::Num(n) => *n as f32,
        Json::Str(s) if s == "NaN" => f32::NAN,
        Json::Str(s) if s == "Infinity" => f32::INFINITY,
        Json::Str(s) if s == "-Infinity" => f32::NEG_INFINITY,
        other => panic!("not a value: {other:?}"),
    }
}

type Runs = BTreeMap<String, BTreeMap<String, Vec<(i64, f32)>>>;

/// The value an `f64` is read back as.
fn stored(v: f64) -> f32 {
    v as f32
}

#[test]
fn tensorboard_reads_the_files() {
    let Some(python) = std::env::var_os("VIRB_PYTHON_BIN").map(PathBuf::from) else {
        eprintln!("skipping: VIRB_PYTHON_BIN is not set (a python with `tensorboard` installed)");
        return;
    };
    if !python.exists() {
        eprintln!(
            "skipping: VIRB_PYTHON_BIN={} does not exist",
            python.display()
        );
        return;
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../scripts/py/read_tensorboard.py");

    let tmp = TempDir::new("tensorboard");
    let mut expected: Runs = BTreeMap::new();

    // Run `train`: 3 tags x 50 steps, interleaved, with NaN, infinities, signed zeros,
    // subnormals, values that f32 rounds and one beyond f32's range.
    let mut w = EventWriter::create(&tmp.0.join("train")).unwrap();
    let tags = ["loss", "accuracy/top1", "lr schedule"];
    for step in 0..50i64 {
        for (t, tag) in tags.iter().enumerate() {
            let x = step as f64;
            let v = match (t, step) {
                (0, 7) => f64::NAN,
                (0, 8) => f64::INFINITY,
                (0, 9) => f64::NEG_INFINITY,
                (0, 10) => -0.0,
                (0, 11) => 1e300,
                (0, 12) => 1e-44,
                (0, _) => 1.0 / (x + 1.0) + 0.1,
                (1, _) => x / 49.0,
                _ => 0.001 * 0.9f64.powf(x),
            };
            w.add_scalar(tag, step, v).unwrap();
            expected
                .entry("train".into())
                .or_default()
                .entry((*tag).into())
                .or_default()
                .push((step, stored(v)));
        }
    }
    w.flush().unwrap();
    drop(w);

    // Run `eval/nested`: two files in one run folder, a negative and a huge step, a unicode tag.
    let nested = tmp.0.join("eval/nested");
    let mut a = EventWriter::create(&nested).unwrap();
    let mut b = EventWriter::create(&nested).unwrap();
    for (step, v) in [(-3i64, 1.5f64), (0, 2.5), (1 << 40, -3.25)] {
        a.add_scalar_at("score", step, v, 1_700_000_000.0).unwrap();
        expected
            .entry("eval/nested".into())
            .or_default()
            .entry("score".into())
            .or_default()
            .push((step, stored(v)));
    }
    b.add_scalar("ünïcode ✓", 1, 0.3).unwrap();
    expected
        .entry("eval/nested".into())
        .or_default()
        .entry("ünïcode ✓".into())
        .or_default()
        .push((1, stored(0.3)));
    drop((a, b));

    let out = Command::new(&python)
        .arg(&script)
        .arg(&tmp.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        python.display(),
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let Json::Obj(runs) = JsonParser::parse(&String::from_utf8(out.stdout).unwrap()) else {
        panic!("not a JSON object")
    };
    let mut got: Runs = BTreeMap::new();
    for (run, tags) in runs {
        let Json::Obj(tags) = tags else { panic!() };
        for (tag, points) in tags {
            let Json::Arr(points) = points else { panic!() };
            let points = points
                .iter()
                .map(|p| match p {
                    Json::Arr(p) if p.len() == 2 => {
                        let Json::Num(step) = p[0] else { panic!() };
                        (step as i64, json_f32(&p[1]))
                    }
                    other => panic!("not a point: {other:?}"),
                })
                .collect();
            got.entry(run.clone()).or_default().insert(tag, points);
        }
    }

    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (run, tags) in &expected {
        assert_eq!(
            got[run].keys().collect::<Vec<_>>(),
            tags.keys().collect::<Vec<_>>(),
            "{run}"
        );
        for (tag, points) in tags {
            let g = &got[run][tag];
            assert_eq!(g.len(), points.len(), "{run} {tag}");
            for (i, (&(gs, gv), &(es, ev))) in g.iter().zip(points).enumerate() {
                assert_eq!(gs, es, "{run} {tag} point {i}");
                assert!(same_f32(gv, ev), "{run} {tag} step {es}: {gv} vs {ev}");
            }
        }
    }
    let total: usize = got.values().flat_map(|t| t.values()).map(Vec::len).sum();
    assert_eq!(total, 3 * 50 + 3 + 1);
}
