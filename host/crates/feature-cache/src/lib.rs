//! On-disk feature cache (work in progress).
