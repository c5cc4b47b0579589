//! `-data postgres://...`: the worker opens PostgreSQL instead of an SQLite file. The
//! multi-host behaviour over PostgreSQL is tested in francis-host (`tests/postgres_cluster.rs`);
//! here, what the worker adds: the URL reaches the host builder, and an unreachable database
//! stops the worker at start with a clear error that never shows the password.

mod support;

use worker::{Config, DataStore, Worker, parse_args};

#[tokio::test]
async fn an_unreachable_postgres_stops_the_worker_with_a_clear_error() {
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://francis:sup3r-secret@127.0.0.1:{port}/cluster");
    let config = match parse_args(
        [
            "-worker-address",
            "127.0.0.1:0",
            "-actor-host-address",
            &format!("127.0.0.1:{}", support::free_udp_port()),
            "-data",
            &url,
        ],
        None,
    )
    .unwrap()
    {
        worker::Command::Run(c) => c,
        other => panic!("expected a config, got {other:?}"),
    };
    assert_eq!(config.data_store(), DataStore::Postgres(url.clone()));
    let err = Worker::bind(config).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("PostgreSQL"), "{text}");
    assert!(
        !text.contains("sup3r-secret"),
        "the password leaked: {text}"
    );
    assert_eq!(err.exit_code(), 1, "a start-up failure, not a usage error");
}

#[tokio::test]
async fn a_path_that_merely_mentions_postgres_is_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postgres.db");
    let config = Config {
        worker_address: "127.0.0.1:0".into(),
        actor_host_address: format!("127.0.0.1:{}", support::free_udp_port()),
        data: path.clone(),
        peers: Vec::new(),
        ..Config::default()
    };
    let worker = Worker::bind(config).await.expect("bind the worker");
    assert!(path.exists(), "the SQLite file was created");
    drop(worker);
}
