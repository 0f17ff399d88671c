//! The GPU backend: the kernel IR mapped to CUDA launches ([`ir`]), math
//! functions expanded into primitive operations ([`math`]), PTX text
//! ([`ptx`]), a launch plan ([`plan`]) and an interpreter of the launch
//! semantics on the CPU ([`interp`]) that checks the mapping against the
//! CPU backend.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod deps;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod math;
pub mod plan;
pub mod ptx;
