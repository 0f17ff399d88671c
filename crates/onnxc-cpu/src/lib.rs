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
pub mod neon;
pub mod ukernel;

pub use jit::{JitModel, ParallelFor, Task};

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
    isa_for_cpu(triple, pic, None)
}

/// CPU names `--cpu` accepts besides `native`, for messages.
pub const CPU_NAMES: &str = "x86-64, x86-64-v2, x86-64-v3, x86-64-v4, haswell, broadwell, skylake, skylake-avx512, \
icelake, znver1, znver2, znver3, znver4 (and Cranelift's other x86 presets); aarch64 needs none";

/// [`isa_for`] with a CPU choice like rustc's `-C target-cpu`: `None` keeps
/// the triple's baseline (this machine's features when `triple` is `None`),
/// `native` takes this machine's features (the triple must be this
/// machine's architecture), any other name enables that Cranelift preset
/// (`x86-64-v3`, `haswell`, `znver3`, ...).
pub fn isa_for_cpu(triple: Option<&str>, pic: bool, cpu: Option<&str>) -> Result<OwnedTargetIsa, BackendError> {
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
    let host = target_lexicon::Triple::host();
    let native = || {
        cranelift_native::builder().map_err(|e| BackendError::Target { triple: "host".into(), reason: e.to_string() })
    };
    let mut builder = match triple {
        None => native()?,
        Some(t) if cpu == Some("native") => {
            let parsed = target_lexicon::Triple::from_str(t)
                .map_err(|e| BackendError::Target { triple: t.into(), reason: e.to_string() })?;
            if parsed.architecture != host.architecture {
                return Err(BackendError::Target {
                    triple: t.into(),
                    reason: format!("--cpu native describes this machine ({}), not this target", host.architecture),
                });
            }
            native()?
        }
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
    if let Some(name) = cpu.filter(|c| *c != "native") {
        builder.enable(name).map_err(|_| BackendError::Target {
            triple: triple.unwrap_or("host").into(),
            reason: format!("unknown --cpu '{name}'; use native or one of {CPU_NAMES}"),
        })?;
    }
    builder
        .finish(flags)
        .map_err(|e| BackendError::Target { triple: triple.unwrap_or("host").into(), reason: e.to_string() })
}

/// The CPU features an ISA enables (Cranelift's `has_*` flags that are on),
/// without the `has_` prefix: what `--cpu` chose, for the report.
pub fn isa_features(isa: &OwnedTargetIsa) -> Vec<String> {
    isa.isa_flags()
        .iter()
        .filter(|f| f.name.starts_with("has_") && f.as_bool() == Some(true))
        .map(|f| f.name.trim_start_matches("has_").to_string())
        .collect()
}

/// Compiles `program` to a relocatable object file for `triple` (`None`:
/// the host triple with baseline features, so the object runs on any CPU of
/// that architecture). Symbols are prefixed with `name`.
pub fn compile_object(program: &onnxc_kir::Program, name: &str, triple: Option<&str>) -> Result<Vec<u8>, BackendError> {
    compile_object_for_cpu(program, name, triple, None).map(|(o, _)| o)
}

/// The CPU features an object for `triple` and `cpu` may use (what
/// [`compile_object_for_cpu`] reports), without compiling anything.
pub fn object_features(triple: Option<&str>, cpu: Option<&str>) -> Result<Vec<String>, BackendError> {
    let host = target_lexicon::Triple::host().to_string();
    Ok(isa_features(&isa_for_cpu(Some(triple.unwrap_or(&host)), true, cpu)?))
}

/// [`compile_object`] for a CPU (see [`isa_for_cpu`]); also returns the CPU
/// features the code may use.
pub fn compile_object_for_cpu(
    program: &onnxc_kir::Program,
    name: &str,
    triple: Option<&str>,
    cpu: Option<&str>,
) -> Result<(Vec<u8>, Vec<String>), BackendError> {
    let host = target_lexicon::Triple::host().to_string();
    let isa = isa_for_cpu(Some(triple.unwrap_or(&host)), true, cpu)?;
    let features = isa_features(&isa);
    let builder =
        cranelift_object::ObjectBuilder::new(isa, format!("{name}.o"), cranelift_module::default_libcall_names())
            .map_err(|e| BackendError::Codegen { what: "object".into(), message: e.to_string() })?;
    let mut module = cranelift_object::ObjectModule::new(builder);
    codegen::define_program(&mut module, program, name)?;
    let object = module
        .finish()
        .emit()
        .map_err(|e| BackendError::Codegen { what: "object emission".into(), message: e.to_string() })?;
    Ok((object, features))
}
