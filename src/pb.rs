//! Code generated from `proto/recur/v1/recur.proto`. Only the `api` module
//! and clients use these types; the domain never sees them.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The `recur.v1` package.
pub mod v1 {
    tonic::include_proto!("recur.v1");
}

/// Encoded `FileDescriptorSet` of the proto and its imports, served by
/// gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/recur_descriptor.bin"));
