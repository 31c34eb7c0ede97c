//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates
//! prost messages and tonic clients and servers, plus the descriptor set that
//! gRPC reflection serves.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "zhengzhao/common/v1/common.proto",
    "zhengzhao/catalog/v1/catalog.proto",
    "zhengzhao/issuance/v1/issuance.proto",
    "zhengzhao/signing/v1/signing.proto",
    "zhengzhao/verification/v1/verification.proto",
    "zhengzhao/exchange/v1/exchange.proto",
    "zhengzhao/exchange/v1/holders.proto",
    "zhengzhao/gateway/v1/gateway.proto",
    "zhengzhao/auth/v1/auth.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    // Neither prost-build nor tonic-prost-build reports files outside the package.
    println!("cargo:rerun-if-changed={}", root.display());
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("zhengzhao_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
