//! The control socket end to end: a server on a temporary socket answering from a
//! MemoryTable, and `keeplb_control::run` talking to it through the blocking client.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keeplb_control::api::ApiBackend;
use keeplb_control::names::NoNames;
use keeplb_control::socket::{ControlClient, ControlServer};
use keeplb_control::table::MemoryTable;
use keeplb_control::{AdmOutput, run};

const WAIT: Duration = Duration::from_secs(20);

/// A directory of its own under the system's temporary directory, removed on drop (also
/// when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("keeplb-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn adm(path: &Path, line: &str) -> AdmOutput {
    let client = ControlClient::connect(path, WAIT).unwrap();
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    run(
        "ipvsadm",
        &args,
        &mut std::io::empty(),
        &mut ApiBackend(client),
        &NoNames,
    )
}

fn raw_exchange(path: &Path, line: &str) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adm_over_the_control_socket() {
    let dir = TempDir::new("adm");
    let path = dir.0.join("control.sock");
    // a stale socket from an earlier run is replaced
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let server = ControlServer::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let table = Arc::new(Mutex::new(MemoryTable::new()));
    let handler = {
        let table = Arc::clone(&table);
        move |request| {
            let response = table.lock().unwrap().handle(&request);
            async move { response }
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(handler, async move {
        let _ = stopped.await;
    }));

    let client_path = path.clone();
    let outputs = tokio::task::spawn_blocking(move || {
        let path = client_path.as_path();
        [
            adm(path, "-A -t 10.0.0.1:80 -s rr"),
            adm(path, "-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 2"),
            adm(path, "-a -t 10.0.0.9:80 -r 10.0.1.1"),
            adm(path, "-Ln"),
            adm(path, "-S -n"),
        ]
    });
    let outputs = tokio::time::timeout(WAIT, outputs).await.unwrap().unwrap();
    let status: Vec<i32> = outputs.iter().map(|o| o.exit_code).collect();
    assert_eq!(status, [0, 0, 255, 0, 0]);
    assert_eq!(outputs[2].stderr, "Service not defined\n");
    assert_eq!(
        outputs[3].stdout,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  10.0.0.1:80 rr\n  \
         -> 10.0.1.1:8080                Masq    2      0          0         \n"
    );
    assert_eq!(
        outputs[4].stdout,
        "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 2\n"
    );
    assert_eq!(table.lock().unwrap().content().services.len(), 1);

    let raw_path = path.clone();
    let answers = tokio::task::spawn_blocking(move || {
        [
            raw_exchange(&raw_path, "not json\n"),
            raw_exchange(&raw_path, "{\"version\":2,\"request\":\"snapshot\"}\n"),
        ]
    });
    let answers = tokio::time::timeout(WAIT, answers).await.unwrap().unwrap();
    assert!(
        answers[0].starts_with(r#"{"version":1,"response":"error","error":{"kind":"bad_request""#),
        "{}",
        answers[0]
    );
    assert_eq!(
        answers[1],
        "{\"version\":1,\"response\":\"error\",\"error\":{\"kind\":\"unsupported_version\",\"requested\":2,\"supported\":1}}\n"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, serving).await.unwrap().unwrap();
    assert!(!path.exists(), "the socket is removed on shutdown");
}

#[tokio::test]
async fn bind_refuses_to_replace_a_regular_file() {
    let dir = TempDir::new("file");
    let path = dir.0.join("control.sock");
    std::fs::write(&path, "precious").unwrap();
    let error = ControlServer::bind(&path).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test]
async fn bind_refuses_a_socket_a_daemon_answers_on() {
    let dir = TempDir::new("taken");
    let path = dir.0.join("control.sock");
    let running = ControlServer::bind(&path).unwrap();
    let error = ControlServer::bind(&path).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    assert!(
        std::os::unix::net::UnixStream::connect(&path).is_ok(),
        "the running server keeps its socket"
    );
    drop(running);
    assert!(!path.exists(), "a server removes its socket when dropped");
}

#[tokio::test]
async fn a_server_leaves_alone_a_socket_another_has_put_at_its_path() {
    let dir = TempDir::new("replaced");
    let path = dir.0.join("control.sock");
    let first = ControlServer::bind(&path).unwrap();
    // Someone removed our socket and another program bound the path since.
    std::fs::remove_file(&path).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(first);
    assert!(
        std::os::unix::net::UnixStream::connect(&path).is_ok(),
        "the other program keeps its socket"
    );
    drop(other);
}

#[tokio::test]
async fn a_second_daemon_is_refused_even_when_the_first_has_no_answering_socket() {
    let dir = TempDir::new("race");
    let path = dir.0.join("control.sock");
    let first = ControlServer::bind(&path).unwrap();
    // What a second daemon sees while the first is still starting, or once its socket
    // file was lost: a socket file nobody answers on.
    std::fs::remove_file(&path).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
    let error = ControlServer::bind(&path).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    drop(first);
    // Once the first is gone, the stale socket is replaced.
    let second = ControlServer::bind(&path).unwrap();
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    drop(second);
}
