//! What a task plugin provides: a data set reader for the task's real on-disk layout, a head, a
//! loss and metrics.
use crate::{
    no_extension, ExtensionCall, ExtensionResult, FeatureSpec, NamedTensor, NamedTensorRef,
    PluginError, Tensor, TensorRef,
};
use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// Which split of a data set.
///
/// Non-exhaustive across the boundary (it travels as [`Split_NE`]): read it with
/// [`DatasetRequest::split`], which turns a split this plugin does not know into an error.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[sabi(kind(WithNonExhaustive(size = [usize; 2], traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum Split {
    /// The training split.
    Train,
    /// The test split (the one metrics are reported on).
    Test,
}

impl Split {
    /// The other split (a task reads both to give them the same class list).
    pub fn other(self) -> Split {
        match self {
            Split::Train => Split::Test,
            Split::Test => Split::Train,
        }
    }

    /// `train` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// The split as it crosses the boundary.
    pub fn to_ne(self) -> Split_NE {
        Split_NE::new(self)
    }
}

/// A task option a job may set under `task_options:` (it reaches the task as JSON in
/// [`DatasetRequest::options_json`] and [`HeadRequest::options_json`]).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct OptionSpec {
    /// The key (`target`).
    pub name: RString,
    /// What it does and the values it takes, in one line (`flow (default) or viz: ...`).
    pub help: RString,
}

/// A metric a task reports.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Metric name as it appears in results (`top1_accuracy`).
    pub name: RString,
    /// Whether larger is better.
    pub higher_is_better: bool,
}

/// Describes a task.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct TaskInfo {
    /// Task type name as virb configs spell it in `task:` (`CalTech-101`).
    pub name: RString,
    /// Task family (`classification`, `counting`, `egomotion`, ...).
    pub family: RString,
    /// Folder below the data root that holds the data set (`caltech-101`).
    pub data_dir: RString,
    /// The expected on-disk layout, in one line.
    pub layout: RString,
    /// Metrics reported; the first is the headline metric.
    pub metrics: RVec<MetricSpec>,
    /// Encoder outputs the head consumes (`embedding`).
    pub required_outputs: RVec<RString>,
    /// Frames per sample (1 for single images; a sample is then `[3, H, W]`, else `[T, 3, H, W]`).
    pub frames: u32,
    /// Whether features can be computed once and cached (frozen encoder, no augmentation).
    pub encodable: bool,
    /// For an eval-only task: the task type whose trained heads it evaluates on its test split
    /// (`Imagenet` for `Imagenetv2`); empty for a task that trains its own heads.
    pub evaluates_heads_of: RString,
    /// Whether the head is pixel-wise (its output and target are maps the size of the input):
    /// the host then reports the size of the feature pyramid it would cache before caching it.
    pub pixel_wise: bool,
    /// Whether [`Task::build_head`] wants the encoder's state ([`HeadRequest::encoder_state`]),
    /// for a head that starts from encoder weights (DeepLab copies `layer4`).
    pub wants_encoder_state: bool,
    /// The options a job may set for this task; the host refuses any other key.
    pub options: RVec<OptionSpec>,
}

/// How the host asks for one split of a data set.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct DatasetRequest {
    /// The data root (`data`); the task reads below `<data_root>/<data_dir>`.
    pub data_root: RString,
    /// Which split; read it with [`DatasetRequest::split`].
    pub split_ne: Split_NE,
    /// Side of the square network input, in pixels (224 in the paper).
    pub image_size: u32,
    /// Task-specific options as a JSON object: the job's `task_options` (`{}` when none), with
    /// only keys listed in [`TaskInfo::options`].
    pub options_json: RString,
}

impl DatasetRequest {
    /// The split asked for, or an error if it is one this plugin's plugin-api does not know.
    pub fn split(&self) -> Result<Split, PluginError> {
        self.split_ne.as_enum().copied().map_err(|_| {
            PluginError::invalid_input(format!(
                "the host asked for a split this plugin does not know (discriminant {})",
                self.split_ne.get_discriminant()
            ))
            .with_help("rebuild the plugin against the host's virb-plugin-api")
        })
    }
}

/// What a data set knows about one read beyond the index: the epoch and seed that drive random
/// training augmentation, and whether to apply it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleContext {
    /// Whether to apply the task's training augmentation. `false` for the test split, for a
    /// validation part of the training split and when building a feature cache: the sample is
    /// then a pure function of the index.
    pub augment: bool,
    /// The epoch (0-based) of a training read; a cache built with augmentation stores epoch 0.
    pub epoch: u32,
    /// The run's seed. A task draws its augmentation from (seed, epoch, index), so that a run is
    /// reproducible whatever the number of decode threads.
    pub seed: u64,
}

impl SampleContext {
    /// A read without augmentation.
    pub const PLAIN: SampleContext = SampleContext {
        augment: false,
        epoch: 0,
        seed: 0,
    };

    /// A seed for this read's augmentation, mixing (seed, epoch, index) (splitmix64).
    pub fn rng_seed(&self, index: u64) -> u64 {
        let mut z = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(u64::from(self.epoch).wrapping_mul(0xBF58_476D_1CE4_E5B9))
            .wrapping_add(index.wrapping_mul(0x94D0_49BB_1331_11EB));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One decoded, preprocessed sample.
#[repr(C)]
#[derive(StableAbi)]
pub struct Sample {
    /// The network input: `[3, H, W]` float32, normalised, or `[T, 3, H, W]` for `T` frames.
    /// Samples of one split may differ in `H` and `W` (the host batches equal sizes together).
    pub input: Tensor,
    /// The target: a scalar int64 class index for classification, a map for a pixel-wise task
    /// (`[H, W]` int64 class ids, `[C, H, W]` float32 values).
    pub target: Tensor,
}

/// Facts about an opened split.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct DatasetMeta {
    /// Number of samples.
    pub len: u64,
    /// Number of outputs the head must produce (classes for classification).
    pub num_outputs: u32,
    /// Class names in index order (empty for non-classification tasks). The host refuses a job
    /// whose train and test class lists differ.
    pub class_names: RVec<RString>,
    /// Human-readable location of the split (a folder or a list file), for messages.
    pub source: RString,
}

/// An opened split of a data set. `get` is called from several threads at once.
#[sabi_trait]
pub trait Dataset: Send + Sync {
    /// Facts about the split.
    fn meta(&self) -> RResult<DatasetMeta, PluginError>;

    /// Reads, decodes and preprocesses sample `index` (`0 <= index < len`), augmented as
    /// `context` says.
    fn get(&self, index: u64, context: SampleContext) -> RResult<Sample, PluginError>;

    /// A capability added after plugin-api 0.3.0, by name (see [`crate::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, call: ExtensionCall) -> ExtensionResult {
        let _ = (name, call);
        no_extension()
    }
}

/// How the host asks for a head.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct HeadRequest {
    /// Per-sample shapes of the encoder outputs the head will receive.
    pub features: RVec<FeatureSpec>,
    /// Number of outputs (from [`DatasetMeta::num_outputs`]).
    pub num_outputs: u32,
    /// Device for the parameters.
    pub device: RString,
    /// Seed for parameter initialisation.
    pub seed: u64,
    /// The job's task options as a JSON object (as in [`DatasetRequest::options_json`]).
    pub options_json: RString,
    /// Height and width of the training input, in pixels (the head may meet other sizes at test
    /// time: [`ForwardContext`] gives each batch's).
    pub input_height: u32,
    /// See [`HeadRequest::input_height`].
    pub input_width: u32,
    /// The encoder's state (its `state_dict`, as handles sharing storage) when the task asked for
    /// it with [`TaskInfo::wants_encoder_state`] and the encoder provides it; empty otherwise.
    pub encoder_state: RVec<NamedTensor>,
}

/// What a head's forward pass knows besides the features.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardContext {
    /// Training behaviour (dropout, batch-norm statistics).
    pub train: bool,
    /// Height of the batch's network input, in pixels (a pixel-wise head's output size).
    pub input_height: u32,
    /// Width of the batch's network input, in pixels.
    pub input_width: u32,
}

/// Accumulates a task's metrics over a whole split (dataset-level, not a mean of batch values).
#[sabi_trait]
pub trait Metric: Send {
    /// Adds one batch of head outputs and targets.
    fn update(&mut self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<(), PluginError>;

    /// The metric values so far, in the order of [`TaskInfo::metrics`].
    fn compute(&self) -> RResult<RVec<f64>, PluginError>;

    /// Details beside the values, as a JSON object written into `results.json` (per-class IoU,
    /// pixel counts); `{}` when none.
    fn details(&self) -> RResult<RString, PluginError> {
        RResult::ROk("{}".into())
    }

    /// A capability added after plugin-api 0.3.0, by name (see [`crate::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, call: ExtensionCall) -> ExtensionResult {
        let _ = (name, call);
        no_extension()
    }
}

/// A task's trainable head, with its loss and metrics.
#[sabi_trait]
pub trait Head: Send {
    /// The trainable parameters, as new handles sharing storage and gradients with the head's
    /// own (the host's optimiser updates them in place).
    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError>;

    /// Everything needed to restore the head (parameters and buffers), named like a PyTorch
    /// `state_dict`.
    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError>;

    /// Restores a state written by [`Head::state`], strictly.
    fn load_state(&mut self, state: RVec<NamedTensor>) -> RResult<(), PluginError>;

    /// Forward pass on a batch of features (first dimension = batch).
    fn forward(
        &self,
        features: RSlice<'_, NamedTensorRef<'_>>,
        context: ForwardContext,
    ) -> RResult<Tensor, PluginError>;

    /// The training loss (a scalar tensor with gradient) of `output` against `target`.
    fn loss(&self, output: TensorRef<'_>, target: TensorRef<'_>) -> RResult<Tensor, PluginError>;

    /// A fresh metric accumulator.
    fn new_metric(&self) -> RResult<MetricBox, PluginError>;

    /// A capability added after plugin-api 0.3.0, by name (see [`crate::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, call: ExtensionCall) -> ExtensionResult {
        let _ = (name, call);
        no_extension()
    }
}

/// How the host asks a task to write a small synthetic data set in its real layout.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FixtureRequest {
    /// The data root to write under (the task writes `<data_root>/<data_dir>`).
    pub data_root: RString,
    /// Number of classes (or the task's equivalent).
    pub classes: u32,
    /// Training samples per class.
    pub train_per_class: u32,
    /// Test samples per class.
    pub test_per_class: u32,
    /// Side of the generated images, in pixels.
    pub image_size: u32,
    /// Random seed.
    pub seed: u64,
    /// Task options as a JSON object (`{}` when none), as a job would give them.
    pub options_json: RString,
}

impl FixtureRequest {
    /// `(split, samples per class)` for the training and the test split.
    pub fn per_split(&self) -> [(Split, u32); 2] {
        [
            (Split::Train, self.train_per_class),
            (Split::Test, self.test_per_class),
        ]
    }

    /// The number of classes asked for, when the task can write between 2 and `max`; otherwise
    /// an error saying what the task can do (a generator never silently writes another number).
    pub fn classes_up_to(&self, task: &str, max: u32) -> Result<u32, PluginError> {
        if (2..=max).contains(&self.classes) {
            Ok(self.classes)
        } else {
            Err(PluginError::invalid_input(format!(
                "{task}: the fixture generator writes 2 to {max} classes, not {}",
                self.classes
            ))
            .with_help(format!("pass --classes between 2 and {max}")))
        }
    }
}

/// A task type.
#[sabi_trait]
pub trait Task: Send + Sync {
    /// What the task is.
    fn info(&self) -> RResult<TaskInfo, PluginError>;

    /// Opens one split, checking the layout (a missing folder or file is a [`PluginError`] that
    /// names it and says how to get it).
    fn open(&self, request: DatasetRequest) -> RResult<DatasetBox, PluginError>;

    /// Builds a freshly initialised head.
    fn build_head(&self, request: HeadRequest) -> RResult<HeadBox, PluginError>;

    /// Writes a small synthetic data set in the task's real layout, with a signal a head can
    /// learn. Returns a one-line description of what was written.
    fn write_fixture(&self, request: FixtureRequest) -> RResult<RString, PluginError>;

    /// A capability added after plugin-api 0.3.0, by name (see [`crate::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, call: ExtensionCall) -> ExtensionResult {
        let _ = (name, call);
        no_extension()
    }
}

/// An owned task trait object.
pub type TaskBox = Task_TO<'static, RBox<()>>;
/// An owned data set trait object.
pub type DatasetBox = Dataset_TO<'static, RBox<()>>;
/// An owned head trait object.
pub type HeadBox = Head_TO<'static, RBox<()>>;
/// An owned metric trait object.
pub type MetricBox = Metric_TO<'static, RBox<()>>;
