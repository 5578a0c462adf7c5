//! Compiles `proto/` with the pure-Rust `protox` compiler, so a fresh machine
//! builds with `cargo build` alone (no `protoc`), and writes the descriptor
//! set that server reflection serves.

use std::{env, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tokend/v1/tokend.proto";
    println!("cargo:rerun-if-changed={proto}");

    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("tokend_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // The admin CLI and the tests are clients, so clients are generated too.
        .build_client(true)
        .build_server(true)
        // Details in key order: the message is then also the audit chain's
        // canonical form (`audit::Event`), encoded the same way every time.
        .btree_map(".tokend.v1.AuditEvent.details")
        .compile_fds(fds)?;
    Ok(())
}
