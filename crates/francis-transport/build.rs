//! Compiles `proto/francis/v1/*.proto` (in this crate, so it is packaged with it) with protox: no system `protoc`.

use std::path::PathBuf;

fn main() {
    // Read when the script runs, not when it is compiled: a build script compiled for one
    // checkout may be reused for another that shares the target directory.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = PathBuf::from(manifest).join("proto");
    let dir = root.join("francis/v1");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root]).unwrap_or_else(|e| panic!("invalid .proto: {e}"));
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("cannot generate code from .proto: {e}"));
}
