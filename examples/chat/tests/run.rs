//! Runs the chat example: a message reaches every member, a non-member is refused, and the
//! rooms are listed.

#[path = "../../support/run_example.rs"]
mod run_example;

#[test]
fn messages_fan_out_to_members() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        run_example::run_in(env!("CARGO_BIN_EXE_chat"), dir.path()),
        "alice cannot post to tea: invalid from: alice is not a member\n\
         rust members: alice, bob\n\
         bob got [rust] alice: hello, rustaceans\n\
         bob got [tea] bob: kettle's on\n\
         rooms: rust, tea\n"
    );
}
