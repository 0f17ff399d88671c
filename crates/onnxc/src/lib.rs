//! onnxc: an ahead-of-time compiler from ONNX models to native code.
//!
//! The library drives the pipeline (frontend, passes, lowering, backend) and
//! writes the artifacts; the `onnxc` binary is a thin CLI over it. Use it
//! from `build.rs` to compile a model into a Rust program:
//!
//! ```no_run
//! let opts = onnxc::CompileOptions::default();
//! let artifacts = onnxc::compile_file(std::path::Path::new("model.onnx"), &opts).unwrap();
//! artifacts.write_to(std::path::Path::new("build")).unwrap();
//! ```

pub mod archive;
mod driver;
pub mod header;
pub mod npz;
pub mod quantize;
pub mod report;

pub use driver::*;
