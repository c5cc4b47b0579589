//! The conformance suite against the in-memory provider.

francis_store::provider_conformance_tests!(francis_store::testing::harness_fn(|| async {
    francis_store::MemoryProvider::new()
}));
