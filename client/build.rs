//! Compiles the service's `proto/` (the same file the server compiles) into
//! client stubs with the pure-Rust `protox`, so no `protoc` is needed; and
//! the example's small greeter service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/tokend/v1/tokend.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;

    // Only `examples/protected.rs` includes this; the library never does.
    let greeter = "examples/greeter.proto";
    println!("cargo:rerun-if-changed={greeter}");
    let fds = protox::compile([greeter], ["examples"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
