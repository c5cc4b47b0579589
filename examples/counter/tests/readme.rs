//! The README's example is this crate's `main.rs`, word for word: the crate is built with the
//! workspace, so the README's code cannot stop compiling without this test failing.

#[test]
fn the_readme_shows_this_crate_s_main() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    let start = readme
        .find("```rust\n")
        .expect("a rust block in the README")
        + "```rust\n".len();
    let end = start + readme[start..].find("```").expect("the rust block ends");
    let main = include_str!("../src/main.rs");
    assert_eq!(
        &readme[start..end],
        main,
        "the README's first rust block and examples/counter/src/main.rs differ; make them the same"
    );
}
