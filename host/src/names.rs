//! Names that become file names: experiment, job and training-config names are data, and each
//! becomes (part of) one folder or file name under `--out`. A name that is empty, `.`/`..`, holds
//! a path separator or a control character, starts with `.` (virb's own hidden files), or would
//! exceed the file system's 255-byte name limit once virb adds its suffixes, is refused before any
//! work. [`plan_collisions`] then finds names that differ but would share a folder.
use std::collections::BTreeMap;

/// The longest file or folder name (in bytes) that Linux file systems accept.
pub const NAME_MAX: usize = 255;

/// What a name names, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// An experiment (`<out>/<experiment>/`).
    Experiment,
    /// A job (`<out>/<experiment>/<job>-<config>/`, `<job>.selection.json`).
    Job,
    /// A training config (`<job>-<config>/`).
    Config,
}

impl NameKind {
    /// `experiment`, `job` or `training config`.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Experiment => "experiment",
            NameKind::Job => "job",
            NameKind::Config => "training config",
        }
    }
}

/// The longest names virb derives from a job's name, with the largest process id and seed:
/// the temporary file of its selection and its checkpoint folder.
fn job_derived(job: &str) -> [String; 2] {
    [
        format!(".{job}.selection.json.tmp-{}", u32::MAX),
        format!("{job}-seed-{}", u64::MAX),
    ]
}

/// The name of the result folder of (job, config): ViRB's `<job>-<config>`.
pub fn result_folder(job: &str, config: &str) -> String {
    format!("{job}-{config}")
}

/// Checks one name; the error says what is wrong and what to do.
pub fn check(kind: NameKind, name: &str) -> Result<(), String> {
    let what = kind.as_str();
    let fix = "a name becomes a folder name under --out: use letters, digits, `-`, `_`, `.`";
    if name.is_empty() {
        return Err(format!("the {what} name is empty; {fix}"));
    }
    if name == "." || name == ".." {
        return Err(format!(
            "the {what} name `{name}` would name the folder itself or its parent; {fix}"
        ));
    }
    if let Some(sep) = name.chars().find(|c| matches!(c, '/' | '\\')) {
        return Err(format!(
            "the {what} name `{name}` contains `{sep}`: a name is one folder name, not a path; {fix}"
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the {what} name {name:?} contains the control character U+{:04X}; {fix}",
            c as u32
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "the {what} name `{name}` starts with `.`: its folder would be hidden, and virb keeps its own files under such names; {fix}"
        ));
    }
    let longest = match kind {
        NameKind::Experiment | NameKind::Config => name.to_string(),
        NameKind::Job => job_derived(name)
            .into_iter()
            .max_by_key(String::len)
            .unwrap_or_default(),
    };
    if longest.len() > NAME_MAX {
        return Err(format!(
            "the {what} name is {} bytes long, which makes the file name `{}…` longer than the file system's limit of {NAME_MAX} bytes; shorten it",
            name.len(),
            longest.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// A folder or file that one (experiment) entry of the plan will write: its name and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The job.
    pub job: String,
    /// The training config, or `None` for the job's selection file.
    pub config: Option<String>,
}

impl Planned {
    fn describe(&self) -> String {
        match &self.config {
            Some(c) => format!("job `{}`, config `{c}`", self.job),
            None => format!("job `{}`'s selection file", self.job),
        }
    }
}

/// Two entries that would write the same name in an experiment's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The shared name.
    pub name: String,
    /// The first entry.
    pub first: Planned,
    /// The second entry.
    pub second: Planned,
}

impl std::fmt::Display for Collision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} and {} would both write `{}` in each experiment's folder, the second overwriting the first; rename one of them",
            self.first.describe(),
            self.second.describe(),
            self.name
        )
    }
}

/// A name the plan cannot use: the entry at fault (the second of two that collide) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The entry at fault.
    pub at: Planned,
    /// What is wrong, for a person.
    pub message: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every name two entries of an experiment's folder would share: the result folders
/// `<job>-<config>` of `(job, config)` pairs and the selection files `<job>.selection.json`.
/// Also checks that each result folder's name fits the file system.
pub fn plan_collisions<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), PlanError> {
    let mut seen: BTreeMap<String, Planned> = BTreeMap::new();
    let mut jobs: Vec<&str> = Vec::new();
    let mut add = |name: String, p: Planned| -> Result<(), PlanError> {
        if let Some(first) = seen.get(&name) {
            if *first != p {
                return Err(PlanError {
                    at: p.clone(),
                    message: Collision {
                        name,
                        first: first.clone(),
                        second: p,
                    }
                    .to_string(),
                });
            }
            return Ok(());
        }
        seen.insert(name, p);
        Ok(())
    };
    for (job, config) in entries {
        let folder = result_folder(job, config);
        if folder.len() > NAME_MAX {
            return Err(PlanError {
                at: Planned {
                    job: job.into(),
                    config: Some(config.into()),
                },
                message: format!(
                    "job `{job}`, config `{}…`: the result folder name `<job>-<config>` is {} bytes, longer than the file system's limit of {NAME_MAX} bytes; shorten the job or config name",
                    config.chars().take(40).collect::<String>(),
                    folder.len()
                ),
            });
        }
        add(
            folder,
            Planned {
                job: job.into(),
                config: Some(config.into()),
            },
        )?;
        if !jobs.contains(&job) {
            jobs.push(job);
        }
    }
    for job in jobs {
        add(
            format!("{job}.selection.json"),
            Planned {
                job: job.into(),
                config: None,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_kind_of_unsafe_name() {
        for (name, part) in [
            ("", "is empty"),
            ("..", "its parent"),
            (".", "the folder itself"),
            ("../../x", "contains `/`"),
            ("/elsewhere/x", "contains `/`"),
            ("a\\b", "contains `\\`"),
            ("a\nb", "U+000A"),
            ("tab\there", "U+0009"),
            (".hidden", "starts with `.`"),
        ] {
            for kind in [NameKind::Experiment, NameKind::Job, NameKind::Config] {
                let err = check(kind, name).expect_err(name);
                assert!(err.contains(part), "{name:?}: {err}");
                assert!(err.contains(kind.as_str()), "{err}");
            }
        }
        for ok in [
            "SWAV_800",
            "adam-0.001",
            "sgd-0.01-StepLR",
            "a..b",
            "Ünïcode",
        ] {
            check(NameKind::Config, ok).expect(ok);
        }
    }

    #[test]
    fn length_counts_virb_suffixes() {
        let long = "x".repeat(NAME_MAX);
        check(NameKind::Experiment, &long).expect("255 bytes fit");
        assert!(check(NameKind::Experiment, &"x".repeat(NAME_MAX + 1)).is_err());
        // A job name gets `.<job>.selection.json.tmp-<pid>`: 31 more bytes at most.
        check(NameKind::Job, &"j".repeat(NAME_MAX - 31)).expect("fits");
        let err = check(NameKind::Job, &"j".repeat(NAME_MAX - 30)).expect_err("too long");
        assert!(err.contains("limit of 255 bytes"), "{err}");
        let err = plan_collisions([("job", long.as_str())])
            .expect_err("folder too long")
            .message;
        assert!(err.contains("`<job>-<config>` is 259 bytes"), "{err}");
    }

    #[test]
    fn finds_folders_that_two_entries_share() {
        let err = plan_collisions([("J", "a-b"), ("J-a", "b")]).expect_err("collision");
        assert_eq!(err.at.job, "J-a");
        assert_eq!(
            err.message,
            "job `J`, config `a-b` and job `J-a`, config `b` would both write `J-a-b` in each experiment's folder, the second overwriting the first; rename one of them"
        );
        let err = plan_collisions([("a-b", "x"), ("a", "b.selection.json")])
            .expect_err("file")
            .message;
        assert!(err.contains("`a-b.selection.json`"), "{err}");
        plan_collisions([("J", "a"), ("J", "b"), ("K", "a")]).expect("distinct");
    }
}
