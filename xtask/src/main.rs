//! Developer tasks for the onnxc workspace.
//!
//! Run through the cargo alias defined in `.cargo/config.toml`:
//!
//! ```text
//! cargo xtask gen-proto           # regenerate crates/onnxc-proto/src/onnx.rs
//! cargo xtask gen-proto --check   # fail if the committed file is stale
//! ```

mod bench;
mod conformance;
mod gemm_cross;
mod gpu;
mod models;
mod ptx;
mod quant;

use std::env;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  gen-proto [--check]   regenerate crates/onnxc-proto/src/onnx.rs from
                        crates/onnxc-proto/proto/onnx.proto; with --check,
                        only verify that the committed file is up to date
  corpus [DIR]          run the real models in DIR (default ../shared/corpus)
                        through the JIT and a linked object; compare with
                        ONNX Runtime's reference outputs
  conformance [--update] [--filter S] [--verbose]
                        run the ONNX node tests (generated with onnx in a
                        virtualenv under target/conformance) through onnxc;
                        fail on regressions against the committed manifest;
                        --update rewrites it and docs/operators.md
  cross-aarch64         compile the testdata models for aarch64, link with
                        aarch64-linux-gnu-gcc, run under qemu-aarch64 and
                        compare (installs both with apt-get if missing)
  baseline-x86          objects built without --cpu, run under qemu-x86_64
                        on a CPU without AVX (-cpu Nehalem: the baseline
                        kernels, chosen from CPUID), with AVX2 (-cpu max)
                        and natively (AVX-512 where the host has it)
  bench [DIR] [--seconds S] [--models a,b] [--write FILE.md] [--gemm]
                        time the corpus models with onnxc (-O0, -O3) and
                        ONNX Runtime (1 and 2 threads, in a virtualenv under
                        target/bench) side by side; print medians and ratios,
                        and a 512^3 GEMM's GFLOP/s against the measured FMA
                        peak (--gemm: only that)
  ptx [--corpus DIR | --no-corpus] [--no-node-tests] [--filter S]
                        the GPU path without a GPU: lower every model the
                        CPU gets right (testdata, corpus, passing node
                        tests), check its PTX with ptxas for sm_80 and sm_90
                        (nvidia-cuda-nvcc in a virtualenv under target/ptxas)
                        and run the launch interpreter against the references
  gpu [--arch SM] [--filter S] [--seconds S] [--no-conformance|--no-corpus|--no-bench]
                        on an NVIDIA GPU (rebuilds xtask in release with
                        --features cuda and runs `gpu-run`): the node tests
                        and corpus models that pass on the CPU, against their
                        references; resnet18/mobilenet_v2/minilm_l6 latency
                        at batch 1 and 32 next to PyTorch (onnx2torch) where
                        installed; writes target/gpu-results.md
  quant [DIR]           the quantization checks on the corpus: digits test
                        accuracy of int8 builds (each calibration method)
                        against float, MiniLM sentence-embedding cosines
                        (dynamic and static), the accuracy gate and
                        --fallback auto
  help                  show this message";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match cmd.as_str() {
        "gen-proto" => gen_proto(rest),
        "corpus" => models::corpus(&workspace_root(), rest),
        "conformance" => conformance::conformance(&workspace_root(), rest),
        "cross-aarch64" => models::cross_aarch64(&workspace_root()),
        "baseline-x86" => models::baseline_x86(&workspace_root()),
        "bench" => bench::bench(&workspace_root(), rest),
        "ptx" => ptx::ptx(&workspace_root(), rest),
        "quant" => quant::quant(&workspace_root(), rest),
        "gpu" => gpu::gpu(&workspace_root(), rest),
        "gpu-run" => gpu::gpu_run(&workspace_root(), rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes `WORK/venv` with `PACKAGE==VERSION` and numpy (pip, from PyPI)
/// unless it is already there; returns its python.
/// Versions pinned in every virtualenv besides its package: the node
/// tests' reference outputs come from numpy and ml_dtypes (ml_dtypes
/// 0.7.0 changed the float to INT2/INT4 casts the conformance manifest
/// was recorded with), so CI installs the same ones on every clone.
pub(crate) const PINNED: [&str; 2] = ["numpy==2.4.6", "ml_dtypes==0.6.0"];

fn ensure_venv(work: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let venv = work.join("venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("{package}-{version}+{}", PINNED.join("+")));
    if marker.exists() {
        return Ok(python);
    }
    fs::create_dir_all(work)?;
    eprintln!("xtask: creating {} with {package} {version}", venv.display());
    let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status()?.success()
        && Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("{package}=={version}"))
            .args(PINNED)
            .status()?
            .success();
    if !ok {
        return Err(format!(
            "could not create the virtualenv with {package} (needs python3 with venv and pip, and PyPI)"
        )
        .into());
    }
    fs::write(&marker, b"")?;
    Ok(python)
}

/// Root of the workspace (the parent of this crate's manifest directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Location of the vendored schema and of the generated file, relative to the workspace root.
const PROTO_DIR: &str = "crates/onnxc-proto/proto";
const PROTO_FILE: &str = "onnx.proto";
const GENERATED_FILE: &str = "crates/onnxc-proto/src/onnx.rs";

fn gen_proto(args: &[String]) -> Result<()> {
    let mut check = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check = true,
            other => return Err(format!("gen-proto: unexpected argument `{other}`").into()),
        }
    }

    let root = workspace_root();
    let generated = rustfmt(&root, &generate_onnx_rs(&root.join(PROTO_DIR))?)?;
    let out_path = root.join(GENERATED_FILE);

    if check {
        let committed =
            fs::read_to_string(&out_path).map_err(|e| format!("cannot read {}: {e}", out_path.display()))?;
        if committed != generated {
            return Err(format!(
                "{GENERATED_FILE} is out of date with {PROTO_DIR}/{PROTO_FILE}; \
                 run `cargo xtask gen-proto` to regenerate it"
            )
            .into());
        }
        println!("{GENERATED_FILE} is up to date");
    } else {
        let unchanged = fs::read_to_string(&out_path).is_ok_and(|old| old == generated);
        if unchanged {
            println!("{GENERATED_FILE} is already up to date");
        } else {
            fs::write(&out_path, &generated).map_err(|e| format!("cannot write {}: {e}", out_path.display()))?;
            println!("wrote {GENERATED_FILE}");
        }
    }
    Ok(())
}

/// Parses `onnx.proto` with the pure-Rust `protox` compiler (no `protoc` needed) and runs
/// `prost-build` on the resulting descriptors, returning the Rust source for package `onnx`.
///
fn generate_onnx_rs(proto_dir: &Path) -> Result<String> {
    let fds = protox::compile([proto_dir.join(PROTO_FILE)], [proto_dir])
        .map_err(|e| format!("failed to compile {PROTO_FILE}: {e:?}"))?;

    let requests: Vec<_> =
        fds.file.into_iter().map(|fd| (prost_build::Module::from_protobuf_package_name(fd.package()), fd)).collect();

    let mut modules = prost_build::Config::new().format(true).generate(requests)?;
    let onnx = prost_build::Module::from_protobuf_package_name("onnx");
    let code = modules.remove(&onnx).ok_or("prost-build produced no code for package `onnx`")?;
    if !modules.is_empty() {
        let extra: Vec<String> = modules.keys().map(|m| m.to_string()).collect();
        return Err(format!("unexpected extra protobuf packages: {extra:?}").into());
    }
    Ok(code)
}

/// Formats `code` with rustfmt (the one cargo would use: `$RUSTFMT` or `rustfmt` on `PATH`),
/// run from the workspace root so that any `rustfmt.toml` there applies, exactly as for
/// `cargo fmt`. This keeps the committed file clean under `rustfmt --check` even though
/// `cargo fmt` does not descend into `include!`d files.
fn rustfmt(root: &Path, code: &str) -> Result<String> {
    let rustfmt = env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into());
    let mut child = Command::new(&rustfmt)
        .args(["--edition", "2021"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", rustfmt.to_string_lossy()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = code.to_owned();
    // Feed stdin from another thread so a large output cannot deadlock the pipes.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    writer.join().expect("rustfmt stdin writer panicked")?;
    if !output.status.success() {
        return Err(format!("rustfmt failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8(output.stdout)?)
}
