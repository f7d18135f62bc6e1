fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/routeiq/v1/snapshot.proto",
            "proto/routeiq/v1/controlplane.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
