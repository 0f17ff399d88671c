//! The CPU backend: kernel IR to native code with Cranelift.
//!
//! One code generator ([`codegen::define_program`]) is generic over
//! Cranelift's `Module`, so the object path (`cranelift-object`, any
//! supported target triple) and the in-process JIT path (`cranelift-jit`)
//! emit exactly the same functions:
//!
//! - one local function per kernel, taking a table of buffer base pointers;
//! - `NAME_run(inputs, outputs, arena) -> i32`, which fills that table on its
//!   stack (no globals) and calls the kernels in order;
//! - read-only data: constants (64-byte aligned) and the
//!   `NAME_input_bytes` / `NAME_output_bytes` size tables.
//!
//! Innermost loops whose loads and stores are contiguous or invariant and
//! whose arithmetic has vector forms run four f32 lanes at a time (128-bit
//! vectors, which Cranelift lowers on x86-64 and aarch64); the rest is
//! scalar. Transcendentals call libm (`expf`, `logf`, `tanhf`, ... listed in
//! [`codegen::LIBM_FUNCTIONS`]), the only undefined symbols an object has.

pub mod codegen;
mod jit;

pub use jit::JitModel;

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;

/// Errors of the CPU backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unsupported target '{triple}': {reason}")]
    Target { triple: String, reason: String },
    #[error("code generation failed in {what}: {message}")]
    Codegen { what: String, message: String },
    #[error("invalid call: {0}")]
    Call(String),
}

/// Builds the Cranelift ISA for `triple` (`None`: this machine, with its
/// CPU features). `pic` selects position-independent code (objects).
pub fn isa_for(triple: Option<&str>, pic: bool) -> Result<OwnedTargetIsa, BackendError> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, k: &str, v: &str| {
        flags
            .set(k, v)
            .map_err(|e| BackendError::Target { triple: triple.unwrap_or("host").into(), reason: e.to_string() })
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut flags, "enable_probestack", "false")?;
    set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
    let flags = settings::Flags::new(flags);
    let builder = match triple {
        None => cranelift_native::builder()
            .map_err(|e| BackendError::Target { triple: "host".into(), reason: e.to_string() })?,
        Some(t) => {
            let parsed = target_lexicon::Triple::from_str(t)
                .map_err(|e| BackendError::Target { triple: t.into(), reason: e.to_string() })?;
            if parsed.pointer_width().map(|w| w.bits()) != Ok(64) {
                return Err(BackendError::Target {
                    triple: t.into(),
                    reason: "only 64-bit targets are supported".into(),
                });
            }
            if parsed.endianness() != Ok(target_lexicon::Endianness::Little) {
                return Err(BackendError::Target {
                    triple: t.into(),
                    reason: "only little-endian targets are supported".into(),
                });
            }
            cranelift_codegen::isa::lookup(parsed)
                .map_err(|e| BackendError::Target { triple: t.into(), reason: e.to_string() })?
        }
    };
    builder
        .finish(flags)
        .map_err(|e| BackendError::Target { triple: triple.unwrap_or("host").into(), reason: e.to_string() })
}

/// Compiles `program` to a relocatable object file for `triple` (`None`:
/// the host triple with baseline features, so the object runs on any CPU of
/// that architecture). Symbols are prefixed with `name`.
pub fn compile_object(program: &onnxc_kir::Program, name: &str, triple: Option<&str>) -> Result<Vec<u8>, BackendError> {
    let host = target_lexicon::Triple::host().to_string();
    let isa = isa_for(Some(triple.unwrap_or(&host)), true)?;
    let builder =
        cranelift_object::ObjectBuilder::new(isa, format!("{name}.o"), cranelift_module::default_libcall_names())
            .map_err(|e| BackendError::Codegen { what: "object".into(), message: e.to_string() })?;
    let mut module = cranelift_object::ObjectModule::new(builder);
    codegen::define_program(&mut module, program, name)?;
    module.finish().emit().map_err(|e| BackendError::Codegen { what: "object emission".into(), message: e.to_string() })
}
