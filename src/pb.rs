//! Code generated from `proto/tokend/v1/tokend.proto`, and the descriptor
//! set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("tokend.v1");

/// The encoded `FileDescriptorSet` of tokend's protos (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tokend_descriptor");
