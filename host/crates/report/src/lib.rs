//! Reports of virb results (work in progress).
