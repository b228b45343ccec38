//! # xtask
//!
//! Repository automation, run as `cargo xtask <command>` (matklad's cargo-xtask pattern; the
//! alias lives in `.cargo/config.toml`).
//!
//! * `cargo xtask build-kernels [--check]` compiles every `scan-cuda/kernels/*.cu` to PTX and
//!   writes `scan-cuda/kernels/*.ptx`, each headed by the SHA-256 of its source, the nvcc
//!   version and the flags. The PTX is committed so that building scan-cuda needs no nvcc.
//!   `--check` compiles in a scratch directory and fails when the committed PTX differs.
//!   Both print the ptxas resource usage (registers, spills, stack, shared memory) of every
//!   kernel.
//! * `cargo xtask cuda-toolchain` installs nvcc 13.0 from PyPI into `target/cuda-toolchain`
//!   and builds a link stub for `libcuda.so.1`, so GPU binaries compile and link on machines
//!   without a GPU; it prints the environment variables to use.
//!
//! Design decision: xtask depends on no workspace crate and shells out to `nvcc`, `ptxas`,
//! `python3 -m pip` and `gcc`, so it builds in seconds and has nothing to keep in sync with
//! the library crates except the header format of the PTX files, which
//! `scan-cuda`'s `kernels_are_current` test reads.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

/// The real architecture `ptxas -v` reports resource usage for (the H100/H200 machines).
const REPORT_ARCH: &str = "sm_90";
/// nvcc flags besides the input and output paths. compute_80 PTX (ISA 9.0 with the pinned
/// nvvm) is JIT-compiled by driver 580 for Ampere, Hopper and later GPUs. No fast-math (it flushes denormals), no
/// -lineinfo (it embeds paths, which would make the PTX depend on the checkout).
const NVCC_FLAGS: &[&str] = &["--ptx", "-arch=compute_80", "-std=c++17", "-O3"];
/// The PyPI wheels of the CUDA 13.0 compiler. nvidia-nvvm is pinned: unpinned, pip picks an
/// nvvm that emits PTX ISA 9.5, which ptxas 13.0 and driver 580 reject.
const TOOLCHAIN_WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
];
/// The cust_raw release whose `cu*` declarations the libcuda link stub must define.
const CUST_RAW: &str = "cust_raw-0.11.3";
/// What a PTX header line starts with, per field. scan-cuda's tests parse the same lines.
const HEADER_SOURCE: &str = "// source-sha256: ";
const HEADER_NVCC: &str = "// nvcc-version: ";
const HEADER_FLAGS: &str = "// nvcc-flags: ";

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build-kernels [--check]   compile scan-cuda/kernels/*.cu to committed PTX (--check: fail if stale)
  cuda-toolchain            install nvcc 13.0 and a libcuda link stub under target/cuda-toolchain";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["build-kernels"] => build_kernels(false),
        ["build-kernels", "--check"] => build_kernels(true),
        ["cuda-toolchain"] => cuda_toolchain(),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown arguments {args:?}\n\n{USAGE}"),
    }
}

/// The workspace root: xtask's manifest directory is `<root>/xtask`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn toolchain_dir() -> PathBuf {
    workspace_root().join("target").join("cuda-toolchain")
}

/// Where `cuda-toolchain` puts the CUDA root of the pip wheels (bin/nvcc, bin/ptxas, include/).
fn pip_cuda_root() -> PathBuf {
    toolchain_dir().join("pip").join("nvidia").join("cu13")
}

/// Where `cuda-toolchain` puts the libcuda stub root (lib64/libcuda.so, include/cuda.h).
fn stub_root() -> PathBuf {
    toolchain_dir().join("stub")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Runs a command and returns its stdout, failing with its stderr when it fails.
fn run_capture(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("could not start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------
// build-kernels

/// Finds nvcc: `$CUDA_PATH/bin/nvcc`, then `nvcc` on `PATH`, then the toolchain that
/// `cargo xtask cuda-toolchain` installs.
fn find_nvcc() -> Result<PathBuf> {
    if let Some(cuda_path) = std::env::var_os("CUDA_PATH") {
        let nvcc = PathBuf::from(cuda_path).join("bin").join("nvcc");
        ensure!(
            nvcc.is_file(),
            "CUDA_PATH is set but {} does not exist",
            nvcc.display()
        );
        return Ok(nvcc);
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(nvcc) = std::env::split_paths(&path)
            .map(|dir| dir.join("nvcc"))
            .find(|nvcc| nvcc.is_file())
        {
            return Ok(nvcc);
        }
    }
    let installed = pip_cuda_root().join("bin").join("nvcc");
    if installed.is_file() {
        return Ok(installed);
    }
    bail!(
        "nvcc not found in $CUDA_PATH/bin, on PATH or in {}; run `cargo xtask cuda-toolchain` \
         or set CUDA_PATH",
        toolchain_dir().display()
    )
}

/// nvcc's version line, e.g. "Cuda compilation tools, release 13.0, V13.0.88".
fn nvcc_version(nvcc: &Path) -> Result<String> {
    let text = run_capture(Command::new(nvcc).arg("--version"))?;
    text.lines()
        .find(|line| line.contains("release"))
        .map(|line| line.trim().to_string())
        .with_context(|| format!("unexpected `nvcc --version` output:\n{text}"))
}

fn kernel_sources(kernels_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut sources: Vec<PathBuf> = fs::read_dir(kernels_dir)
        .with_context(|| format!("reading {}", kernels_dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    sources.retain(|path| path.extension().is_some_and(|ext| ext == "cu"));
    sources.sort();
    ensure!(
        !sources.is_empty(),
        "no .cu files in {}",
        kernels_dir.display()
    );
    Ok(sources)
}

/// Compiles one kernel source into the full text of its committed PTX file.
fn compile_to_ptx(
    nvcc: &Path,
    version: &str,
    source: &Path,
    scratch: &Path,
) -> Result<(String, PathBuf)> {
    let file_name = source.file_name().context("kernel source has no name")?;
    let raw_ptx = scratch.join(Path::new(file_name).with_extension("ptx"));
    // Run from the kernel directory with a relative input path, so nothing in the output
    // depends on where the repository is checked out.
    let mut command = Command::new(nvcc);
    command
        .current_dir(source.parent().context("kernel source has no directory")?)
        .args(NVCC_FLAGS)
        .arg(file_name)
        .arg("-o")
        .arg(&raw_ptx);
    run_capture(&mut command)?;
    let body =
        fs::read_to_string(&raw_ptx).with_context(|| format!("reading {}", raw_ptx.display()))?;
    let source_bytes = fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    let name = Path::new(file_name).display();
    let header = format!(
        "// Generated by `cargo xtask build-kernels` from scan-cuda/kernels/{name}: do not edit.\n\
         {HEADER_SOURCE}{}\n\
         {HEADER_NVCC}{version}\n\
         {HEADER_FLAGS}{}\n",
        sha256_hex(&source_bytes),
        NVCC_FLAGS.join(" "),
    );
    Ok((header + &body, raw_ptx))
}

/// One kernel's resources as `ptxas -v` reports them.
#[derive(Debug, Default, PartialEq)]
struct KernelResources {
    name: String,
    registers: u32,
    stack_bytes: u32,
    spill_store_bytes: u32,
    spill_load_bytes: u32,
    shared_bytes: u32,
}

/// The number just before `unit` in `line`, e.g. 48 for ("Used 48 registers", "registers").
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let end = line.find(unit)?;
    line[..end].split_whitespace().last()?.parse().ok()
}

/// Parses `ptxas -v` output (which it writes to stderr) into one entry per kernel.
fn parse_ptxas_report(report: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or(rest).to_string();
            kernels.push(KernelResources {
                name,
                ..KernelResources::default()
            });
            continue;
        }
        let Some(kernel) = kernels.last_mut() else {
            continue;
        };
        if line.contains("stack frame") {
            kernel.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            kernel.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
            kernel.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("registers") {
            kernel.registers = number_before(line, "registers").unwrap_or(0);
            kernel.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    kernels.sort_by(|a, b| a.name.cmp(&b.name));
    kernels
}

/// Prints the resource usage of every kernel in a PTX file; warns about spills and stack.
fn report_resources(nvcc: &Path, ptx: &Path) -> Result<()> {
    let ptxas = nvcc.with_file_name("ptxas");
    let output = Command::new(&ptxas)
        .args(["-v", &format!("-arch={REPORT_ARCH}")])
        .arg(ptx)
        .args(["-o", "/dev/null"])
        .output()
        .with_context(|| format!("could not start {}", ptxas.display()))?;
    let report = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "ptxas rejected {}:\n{report}",
        ptx.display()
    );
    println!(
        "  {:<28} {:>9} {:>12} {:>11} {:>11} {:>10}",
        "kernel", "registers", "spill stores", "spill loads", "stack", "smem"
    );
    for kernel in parse_ptxas_report(&report) {
        let warn = if kernel.spill_store_bytes + kernel.spill_load_bytes + kernel.stack_bytes > 0 {
            "  <- uses local memory"
        } else {
            ""
        };
        println!(
            "  {:<28} {:>9} {:>10} B {:>9} B {:>9} B {:>8} B{warn}",
            kernel.name,
            kernel.registers,
            kernel.spill_store_bytes,
            kernel.spill_load_bytes,
            kernel.stack_bytes,
            kernel.shared_bytes
        );
    }
    Ok(())
}

fn build_kernels(check: bool) -> Result<()> {
    let kernels_dir = workspace_root().join("scan-cuda").join("kernels");
    let nvcc = find_nvcc()?;
    let version = nvcc_version(&nvcc)?;
    println!("nvcc: {} ({version})", nvcc.display());
    let scratch = toolchain_dir().join("scratch");
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut stale = Vec::new();
    for source in kernel_sources(&kernels_dir)? {
        let (ptx, raw_ptx) = compile_to_ptx(&nvcc, &version, &source, &scratch)?;
        let target = source.with_extension("ptx");
        println!("{} ({REPORT_ARCH}):", target.display());
        report_resources(&nvcc, &raw_ptx)?;
        let committed = fs::read_to_string(&target).unwrap_or_default();
        if committed == ptx {
            continue;
        }
        if check {
            stale.push(target.display().to_string());
        } else {
            fs::write(&target, ptx).with_context(|| format!("writing {}", target.display()))?;
            println!("  wrote {}", target.display());
        }
    }
    ensure!(
        stale.is_empty(),
        "stale PTX: {}; run `cargo xtask build-kernels` and commit",
        stale.join(", ")
    );
    if check {
        println!("all PTX files are current");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// cuda-toolchain

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

/// The directory of cust_raw's sources in the cargo registry, if it has been fetched.
fn find_cust_raw() -> Option<PathBuf> {
    let registry = cargo_home().join("registry").join("src");
    fs::read_dir(registry)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join(CUST_RAW))
        .find(|dir| dir.is_dir())
}

/// Every `pub fn cu…` that cust_raw declares: the symbols cust may reference from libcuda.
fn driver_symbols(cust_raw: &Path) -> Result<BTreeSet<String>> {
    let mut symbols = BTreeSet::new();
    let mut pending = vec![cust_raw.join("src")];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let text = fs::read_to_string(&path)?;
            for rest in text.split("pub fn ").skip(1) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name.starts_with("cu") {
                    symbols.insert(name);
                }
            }
        }
    }
    Ok(symbols)
}

/// Installs the nvcc wheels unless the stamp says these exact pins are already there.
fn install_nvcc(python: &OsString) -> Result<()> {
    let stamp = toolchain_dir().join("pip.stamp");
    let pins = TOOLCHAIN_WHEELS.join(" ");
    let nvcc = pip_cuda_root().join("bin").join("nvcc");
    if nvcc.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) {
        println!("nvcc wheels already installed ({pins})");
        return Ok(());
    }
    let pip_dir = toolchain_dir().join("pip");
    if pip_dir.exists() {
        fs::remove_dir_all(&pip_dir).with_context(|| format!("removing {}", pip_dir.display()))?;
    }
    println!("installing {pins} into {}", pip_dir.display());
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--target",
        ])
        .arg(&pip_dir)
        .args(TOOLCHAIN_WHEELS)
        .status()
        .with_context(|| format!("could not start {} -m pip", python.to_string_lossy()))?;
    ensure!(status.success(), "pip install failed with {status}");
    ensure!(
        nvcc.is_file(),
        "pip finished but {} does not exist",
        nvcc.display()
    );
    fs::write(&stamp, pins)?;
    Ok(())
}

/// Builds `stub/lib64/libcuda.so.1`: every driver symbol cust may use, each returning
/// CUDA_ERROR_NO_DEVICE (100). Only for linking; the real driver replaces it at run time.
fn build_link_stub() -> Result<()> {
    let cust_raw = match find_cust_raw() {
        Some(dir) => dir,
        None => {
            println!("{CUST_RAW} is not in the cargo registry yet; running `cargo fetch`");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .arg("fetch")
                .current_dir(workspace_root())
                .status()
                .context("could not start cargo fetch")?;
            ensure!(status.success(), "cargo fetch failed with {status}");
            find_cust_raw().with_context(|| {
                format!(
                    "{CUST_RAW} not found under {} after cargo fetch",
                    cargo_home().display()
                )
            })?
        }
    };
    let symbols = driver_symbols(&cust_raw)?;
    ensure!(
        symbols.len() > 300,
        "found only {} cu* functions in {}",
        symbols.len(),
        cust_raw.display()
    );
    let root = stub_root();
    let lib64 = root.join("lib64");
    let include = root.join("include");
    fs::create_dir_all(&lib64)?;
    fs::create_dir_all(&include)?;
    let mut source = String::from(
        "/* Generated by `cargo xtask cuda-toolchain`: a link stub for libcuda.so.1. Every\n \
         * function returns CUDA_ERROR_NO_DEVICE. Never put it on a GPU machine's library path. */\n",
    );
    for symbol in &symbols {
        let _ = writeln!(source, "int {symbol}(void) {{ return 100; }}");
    }
    let stub_c = root.join("libcuda_stub.c");
    fs::write(&stub_c, source)?;
    let library = lib64.join("libcuda.so.1");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "gcc".into());
    run_capture(
        Command::new(cc)
            .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(&library)
            .arg(&stub_c),
    )?;
    let link = lib64.join("libcuda.so");
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link)?;
    }
    std::os::unix::fs::symlink("libcuda.so.1", &link)?;
    fs::copy(
        pip_cuda_root().join("include").join("cuda.h"),
        include.join("cuda.h"),
    )
    .context("copying cuda.h from the nvcc wheels")?;
    println!(
        "built {} with {} driver symbols",
        library.display(),
        symbols.len()
    );
    Ok(())
}

fn cuda_toolchain() -> Result<()> {
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    install_nvcc(&python)?;
    build_link_stub()?;
    let cuda = pip_cuda_root();
    let stub = stub_root();
    println!(
        "\nUse this environment to build the PTX and link GPU binaries (the stub is for \
         linking only; on a GPU machine the driver's libcuda.so.1 is loaded):\n"
    );
    println!("export CUDA_PATH={}", cuda.display());
    println!("export CUDA_LIBRARY_PATH={}", stub.display());
    println!("export PATH={}:$PATH", cuda.join("bin").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_report() {
        let report = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'linrec_forward_f32' for 'sm_90'
ptxas info    : Function properties for linrec_forward_f32
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 48 registers, used 1 barriers, 3080 bytes smem
ptxas info    : Compiling entry function 'linrec_serial_forward_f32' for 'sm_90'
ptxas info    : Function properties for linrec_serial_forward_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 0 barriers
";
        let kernels = parse_ptxas_report(report);
        assert_eq!(
            kernels,
            vec![
                KernelResources {
                    name: "linrec_forward_f32".into(),
                    registers: 48,
                    stack_bytes: 8,
                    spill_store_bytes: 4,
                    spill_load_bytes: 12,
                    shared_bytes: 3080,
                },
                KernelResources {
                    name: "linrec_serial_forward_f32".into(),
                    registers: 30,
                    ..KernelResources::default()
                },
            ]
        );
    }

    #[test]
    fn hashes_like_sha256sum() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
