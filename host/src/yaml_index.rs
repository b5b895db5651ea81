//! Where each key of a YAML file is: the line of every mapping key by its path (`["job",
//! "training_configs", "adam-0.001", "lr"]`), and every key given twice in one mapping.
//!
//! serde_yaml keeps the last of two equal keys without a word, so a job, config or experiment
//! written twice would silently replace the first; and it reports no positions for the values it
//! deserialises. This index is built from a second, marked parse of the same text (yaml-rust2's
//! event parser), so that errors can name the line of any key, and duplicates both lines.
use std::collections::HashMap;
use yaml_rust2::{
    parser::{MarkedEventReceiver, Parser},
    scanner::Marker,
    Event,
};

/// A key given twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The path of the key (the mapping's path and the key).
    pub path: Vec<String>,
    /// The line of its first occurrence (1-based).
    pub first: usize,
    /// The line of the repeated occurrence (1-based).
    pub second: usize,
}

/// The lines of the keys of one YAML document.
#[derive(Debug, Default)]
pub struct YamlIndex {
    lines: HashMap<Vec<String>, usize>,
    /// Keys given more than once in the same mapping, in file order.
    pub duplicates: Vec<Duplicate>,
}

impl YamlIndex {
    /// Indexes `text`. A text that does not parse gives an empty index (serde_yaml's own parse
    /// reports the syntax error with its position).
    pub fn new(text: &str) -> YamlIndex {
        let mut sink = Sink::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut sink, false).is_err() {
            return YamlIndex::default();
        }
        sink.index
    }

    /// Whether the key at `path` is in the file.
    pub fn has(&self, path: &[&str]) -> bool {
        let key: Vec<String> = path.iter().map(|p| (*p).to_string()).collect();
        self.lines.contains_key(&key)
    }

    /// The line of the key at `path`, or of its deepest ancestor that exists; `None` when not
    /// even the first part is a key.
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        let key: Vec<String> = path.iter().map(|p| (*p).to_string()).collect();
        (1..=key.len())
            .rev()
            .find_map(|n| self.lines.get(&key[..n]).copied())
    }
}

enum Frame {
    /// A mapping at `path`; `key` is the key whose value comes next (None: a key comes next).
    Map {
        path: Vec<String>,
        key: Option<String>,
    },
    /// A sequence at `path`; `next` is the index of the next item.
    Seq { path: Vec<String>, next: usize },
}

#[derive(Default)]
struct Sink {
    stack: Vec<Frame>,
    index: YamlIndex,
}

impl Sink {
    /// The path of the value that starts now (a nested mapping or sequence), or `None` when it
    /// is a key itself (a complex key, not indexed).
    fn value_path(&self) -> Option<Vec<String>> {
        match self.stack.last() {
            None => Some(Vec::new()),
            Some(Frame::Map { path, key: Some(k) }) => {
                let mut p = path.clone();
                p.push(k.clone());
                Some(p)
            }
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Seq { path, next }) => {
                let mut p = path.clone();
                p.push(next.to_string());
                Some(p)
            }
        }
    }

    /// A scalar, alias or finished container was a key or a value of the frame on top.
    fn consumed(&mut self, scalar_key: Option<(String, usize)>) {
        let mut record = None;
        match self.stack.last_mut() {
            Some(Frame::Map { path, key }) => {
                if key.is_some() {
                    *key = None;
                } else {
                    let (k, line) = scalar_key.unwrap_or_else(|| ("?".to_string(), 0));
                    let mut full = path.clone();
                    full.push(k.clone());
                    record = Some((full, line));
                    *key = Some(k);
                }
            }
            Some(Frame::Seq { next, .. }) => *next += 1,
            None => {}
        }
        if let Some((full, line)) = record {
            if line == 0 {
                return;
            }
            // Keys below a repeated key repeat too; only the outermost repetition is reported.
            let below_duplicate = self
                .index
                .duplicates
                .iter()
                .any(|d| full.len() > d.path.len() && full.starts_with(&d.path));
            match self.index.lines.get(&full) {
                Some(_) if below_duplicate => {}
                Some(&first) => self.index.duplicates.push(Duplicate {
                    path: full,
                    first,
                    second: line,
                }),
                None => {
                    self.index.lines.insert(full, line);
                }
            }
        }
    }
}

impl MarkedEventReceiver for Sink {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => self.consumed(Some((value, mark.line()))),
            Event::Alias(..) => self.consumed(Some(("*alias".to_string(), mark.line()))),
            Event::MappingStart(..) => {
                let path = self.value_path().unwrap_or_else(|| vec!["?".into()]);
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.value_path().unwrap_or_else(|| vec!["?".into()]);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                // A container as a key is not indexed; as a value it completes its key.
                self.consumed(None);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_nested_keys() {
        let text = "# comment\nJ:\n  task: T\n  training_configs:\n    adam-0.001:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: 1\nK: {task: U, training_configs: {a: {lr: 1}}}\n";
        let ix = YamlIndex::new(text);
        assert_eq!(ix.line(&["J"]), Some(2));
        assert_eq!(ix.line(&["J", "task"]), Some(3));
        assert_eq!(
            ix.line(&["J", "training_configs", "adam-0.001", "lr"]),
            Some(7)
        );
        assert_eq!(ix.line(&["J", "num_epochs"]), Some(8));
        assert_eq!(ix.line(&["K", "training_configs", "a", "lr"]), Some(9));
        // A missing key gives its deepest ancestor's line.
        assert_eq!(ix.line(&["J", "training_configs", "sgd"]), Some(4));
        assert_eq!(ix.line(&["nope"]), None);
        assert!(ix.duplicates.is_empty());
    }

    #[test]
    fn duplicates_at_every_level_with_both_lines() {
        let text = "J:\n  task: T\n  training_configs:\n    a: {lr: 1}\n    a: {lr: 2}\n  task: U\nK: x\nJ:\n  task: V\n";
        let ix = YamlIndex::new(text);
        let found: Vec<(Vec<String>, usize, usize)> = ix
            .duplicates
            .iter()
            .map(|d| (d.path.clone(), d.first, d.second))
            .collect();
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            found,
            vec![
                (p(&["J", "training_configs", "a"]), 4, 5),
                (p(&["J", "task"]), 2, 6),
                (p(&["J"]), 1, 8),
            ]
        );
    }

    #[test]
    fn sequences_and_bad_yaml() {
        let ix = YamlIndex::new("a:\n  - x: 1\n  - x: 2\n    y: 3\n");
        assert_eq!(ix.line(&["a", "1", "y"]), Some(4));
        assert!(ix.duplicates.is_empty());
        let ix = YamlIndex::new("a: [unclosed\n");
        assert_eq!(ix.line(&["a"]), None);
    }
}
