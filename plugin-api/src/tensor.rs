//! Tensors across the boundary, without copies.
//!
//! * [`Tensor`] is an owned handle: passing it by value **moves** the libtorch tensor to the
//!   receiver, which frees it when the handle (or the `tch::Tensor` made from it) is dropped.
//! * [`TensorRef`] is a **loan** for the duration of one call: the receiver reads it, or calls
//!   [`TensorRef::shallow_clone`] to keep its own reference-counted handle to the same storage.
//!
//! Autograd works across the boundary: a tensor moved or lent keeps its graph.
use abi_stable::{
    std_types::{RString, RVec},
    StableAbi,
};
use std::{ffi::c_void, marker::PhantomData};
use torch_sys::C_tensor;

/// An owned libtorch tensor. Dropping it frees the tensor.
#[repr(C)]
#[derive(StableAbi)]
pub struct Tensor {
    ptr: *mut c_void,
}

// SAFETY: a libtorch tensor handle may be sent between threads; libtorch reference counts are atomic.
unsafe impl Send for Tensor {}
// SAFETY: the handle exposes no interior mutation without `&mut`.
unsafe impl Sync for Tensor {}

impl Tensor {
    /// Moves a tch tensor into a handle.
    pub fn new(mut tensor: tch::Tensor) -> Self {
        let ptr = tensor.as_mut_ptr() as *mut c_void;
        std::mem::forget(tensor);
        Tensor { ptr }
    }

    /// Turns the handle back into a tch tensor, which now owns the libtorch object.
    pub fn into_tch(self) -> tch::Tensor {
        let ptr = self.ptr as *mut C_tensor;
        std::mem::forget(self);
        // SAFETY: `ptr` came from `Tensor::new`, which gave up ownership of a live tensor.
        unsafe { tch::Tensor::from_ptr(ptr) }
    }

    /// Lends the tensor for one call.
    pub fn lend(&self) -> TensorRef<'_> {
        TensorRef {
            ptr: self.ptr,
            _borrow: PhantomData,
        }
    }
}

impl Tensor {
    /// A new owned handle to the same tensor (same storage, same autograd node).
    pub fn shallow_clone(&self) -> Tensor {
        Tensor::new(self.lend().shallow_clone())
    }
}

/// Cloning a handle shares the tensor's storage, like `tch::Tensor::shallow_clone`.
impl Clone for Tensor {
    fn clone(&self) -> Self {
        self.shallow_clone()
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.lend().shallow_clone();
        write!(f, "Tensor({:?}, {:?})", t.kind(), t.size())
    }
}

impl From<tch::Tensor> for Tensor {
    fn from(t: tch::Tensor) -> Self {
        Tensor::new(t)
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: the handle owns a live tensor; rebuilding the tch tensor frees it on drop.
            drop(unsafe { tch::Tensor::from_ptr(self.ptr as *mut C_tensor) });
        }
    }
}

/// A tensor lent for the duration of one call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct TensorRef<'a> {
    ptr: *mut c_void,
    _borrow: PhantomData<&'a ()>,
}

// SAFETY: see `Tensor`.
unsafe impl Send for TensorRef<'_> {}
// SAFETY: see `Tensor`.
unsafe impl Sync for TensorRef<'_> {}

impl<'a> TensorRef<'a> {
    /// Lends a tch tensor.
    pub fn of(tensor: &'a tch::Tensor) -> Self {
        TensorRef {
            ptr: tensor.as_ptr() as *mut c_void,
            _borrow: PhantomData,
        }
    }

    /// A new reference-counted handle to the same tensor (same storage, same autograd node).
    pub fn shallow_clone(&self) -> tch::Tensor {
        // SAFETY: the lender keeps the tensor alive for the duration of the call.
        unsafe { tch::Tensor::clone_from_ptr(self.ptr as *mut C_tensor) }
    }
}

/// A named owned tensor (an encoder output, a head parameter). Cloning shares the storage.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct NamedTensor {
    /// The name (`embedding`, `block4`, `head.weight`, ...).
    pub name: RString,
    /// The tensor.
    pub tensor: Tensor,
}

impl NamedTensor {
    /// A named tensor.
    pub fn new(name: impl Into<String>, tensor: tch::Tensor) -> Self {
        NamedTensor {
            name: name.into().into(),
            tensor: Tensor::new(tensor),
        }
    }
}

/// A named lent tensor.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct NamedTensorRef<'a> {
    /// The name.
    pub name: abi_stable::std_types::RStr<'a>,
    /// The tensor.
    pub tensor: TensorRef<'a>,
}

/// The shape of one named feature, per sample (without the batch dimension).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    /// Output name, as the encoder names it (`embedding`, `conv`, `block1`..`block4`).
    pub name: RString,
    /// Per-sample shape, e.g. `[2048]` or `[2, 2048]` for a two-frame sample.
    pub shape: RVec<i64>,
}
