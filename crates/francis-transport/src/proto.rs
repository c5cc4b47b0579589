//! The peer protocol's messages, generated from `proto/francis/v1/*.proto` at build time.
//!
//! Helpers to build and read them (`Response::invoke_ok`, `WireError::from(&Error)`...) live
//! beside the generated types.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/francis.v1.rs"));
