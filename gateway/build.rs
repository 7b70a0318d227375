//! Fetches the ONNX Runtime shared library so that a fresh clone builds and runs with no manual step.
//!
//! `ort` is built with `load-dynamic`: nothing links against ONNX Runtime at build time, and the library is opened at
//! run time. This script gets that library from PyPI's `onnxruntime` wheel (the vendor's CDN is not reachable from
//! our machines), pinned by version and sha256 so every host gets the same bytes, and bakes its path into the binary
//! as `VANE_ORT_DYLIB`. At run time `ORT_DYLIB_PATH` overrides the baked path (see `gateway::runtime`).
//!
//! When `ORT_DYLIB_PATH` is already set at build time, nothing is fetched: the builder brings their own library.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ONNX Runtime release `ort` 2.0.0-rc.15 targets (API level 31).
const ORT_VERSION: &str = "1.31.1";
/// sha256 of `onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl` on PyPI; pip refuses any other bytes.
const WHEEL_SHA256: &str = "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f";
/// The library's path inside the wheel.
const MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.31.1";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    compile_protos();
    println!("cargo:rerun-if-env-changed=ORT_DYLIB_PATH");
    println!("cargo:rerun-if-env-changed=VANE_PYTHON");

    if env::var_os("ORT_DYLIB_PATH").is_some() {
        println!("cargo:rustc-env=VANE_ORT_DYLIB=");
        return;
    }
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" {
        println!("cargo:warning=no pinned ONNX Runtime wheel for {target}; set ORT_DYLIB_PATH to libonnxruntime");
        println!("cargo:rustc-env=VANE_ORT_DYLIB=");
        return;
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Keyed by the hash, so changing the pin can never reuse a library fetched for another one.
    let dir = out_dir.join(format!("onnxruntime-{}", &WHEEL_SHA256[..16]));
    let lib = dir.join(Path::new(MEMBER).file_name().expect("MEMBER names a file"));
    if !lib.is_file() {
        if let Err(message) = fetch(&dir, &lib) {
            panic!("could not fetch ONNX Runtime {ORT_VERSION}: {message}\nSet ORT_DYLIB_PATH to an existing libonnxruntime.so.{ORT_VERSION} to build without fetching.");
        }
    }
    println!("cargo:rustc-env=VANE_ORT_DYLIB={}", lib.display());
}

/// Downloads the pinned wheel with pip (hash-checked) and extracts the library from it with Python's `zipfile`.
fn fetch(dir: &Path, lib: &Path) -> Result<(), String> {
    let python = env::var("VANE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let download = dir.join("download");
    fs::create_dir_all(&download).map_err(|e| format!("creating {}: {e}", download.display()))?;
    let requirements = download.join("requirements.txt");
    fs::write(&requirements, format!("onnxruntime=={ORT_VERSION} --hash=sha256:{WHEEL_SHA256}\n"))
        .map_err(|e| format!("writing {}: {e}", requirements.display()))?;
    // The platform flags make every host (whatever its own Python) fetch the one wheel the hash pins.
    run(Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--require-hashes"])
        .args(["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp"])
        .args(["--abi", "cp311", "--disable-pip-version-check", "-d"])
        .arg(&download)
        .arg("-r")
        .arg(&requirements))?;
    let wheel = fs::read_dir(&download)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or("pip reported success but left no wheel")?;
    // Extract to a temporary name and rename, so an interrupted build never leaves a truncated library behind.
    let partial = lib.with_extension("partial");
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
                  shutil.copyfileobj(src, dst)\n";
    run(Command::new(&python).arg("-c").arg(script).arg(&wheel).arg(MEMBER).arg(&partial))?;
    fs::rename(&partial, lib).map_err(|e| format!("moving {} into place: {e}", partial.display()))?;
    fs::remove_dir_all(&download).map_err(|e| format!("removing {}: {e}", download.display()))
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("running {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr)))
    }
}

/// Generates the gRPC service from `proto/grpc_service.proto`: protox parses it (no system `protoc`), and
/// tonic-prost-build writes the messages and the server and client code into OUT_DIR.
fn compile_protos() {
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    let descriptors = protox::compile(["proto/grpc_service.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("proto/grpc_service.proto: {e}"));
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Raw tensor contents as `Bytes`: decoded as a view of tonic's receive buffer instead of a copy, and an
        // answer's raw outputs handed to the encoder without one.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the gRPC code: {e}"));
}
