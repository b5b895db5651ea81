//! Training heads: every config of a job in one pass over the batches ([`pass`]), each head a
//! [`Trainee`] ([`trainee`]) with an optimiser and scheduler of PyTorch's semantics ([`optim`]:
//! schedulers really step, per epoch for StepLR and OneCycle, per batch for Poly), per-epoch
//! validation, checkpoints ([`checkpoint`]), then a dataset-level evaluation on the whole test
//! split. A grid's linear classifier heads train as one stacked computation ([`stacked`]).
pub mod checkpoint;
pub mod losses;
pub mod optim;
pub mod pass;
pub mod stacked;
pub mod trainee;

pub use pass::{evaluate, steps_per_epoch, train_pass, CheckpointPolicy, Pass};
pub use trainee::{RunOutcome, Stop, Trainee};
