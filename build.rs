//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed)
//! and writes the descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build only emits rerun-if-changed when it runs protoc itself.
    println!("cargo:rerun-if-changed=proto");

    // Source info keeps the proto comments, so reflection clients can show them.
    let fds = protox::Compiler::new(["proto"])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(["recur/v1/recur.proto"])?
        .file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("recur_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // A result's output is shared, not copied, by every stream that
        // sends it: the domain keeps it as `Bytes`, so converting a result
        // for a stream is a reference-count bump for its largest field.
        .bytes(".recur.v1.TaskResult.output")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    // The Redis store's own records: compiled apart so reflection never
    // serves them, with the public types they embed taken from `pb`.
    let store_fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .open_files(["recur/store/v1/store.proto"])?
        .file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .extern_path(".recur.v1", "crate::pb::v1")
        .bytes(".recur.v1.TaskResult.output")
        .compile_fds(store_fds)?;
    Ok(())
}
