//! Code generated from `proto/tokend/v1/tokend.proto`, and the descriptor
//! set that server reflection serves.

// The proto comments are written for protobuf readers, not as rustdoc
// (`labels.<key>` is not an HTML tag).
#![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::invalid_html_tags)]

tonic::include_proto!("tokend.v1");

/// The encoded `FileDescriptorSet` of tokend's protos (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tokend_descriptor");
