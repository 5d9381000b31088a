//! The HTTP listener over loopback on ephemeral ports, spoken to with raw HTTP/1.1 so the
//! exact status lines and headers are what is checked.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keeplb_control::api::{ApiError, Request, RequestBody, Response, ResponseBody};
use keeplb_control::http::{HttpError, HttpServer, status_of};
use keeplb_control::metrics::{Metrics, VrrpInstanceMetrics, VrrpState};
use keeplb_control::table::MemoryTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bound on every wait: generous, because other builds share the machine.
const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "s3cret-Token_42";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A listener serving a MemoryTable and a Metrics, stopped (and awaited) on drop of
/// `stop`.
struct Running {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Running {
    async fn stop(mut self) {
        drop(self.stop.take());
        timeout(WAIT, &mut self.serving).await.unwrap().unwrap();
    }
}

fn metrics() -> Arc<Metrics> {
    let metrics = Metrics::new();
    metrics.set_vrrp(vec![VrrpInstanceMetrics {
        name: "VI_1".into(),
        state: VrrpState::Backup,
        priority: 100,
        effective_priority: 100,
        ..VrrpInstanceMetrics::default()
    }]);
    Arc::new(metrics)
}

async fn start(server: HttpServer) -> Running {
    let address = server.local_addr().unwrap();
    let table = Arc::new(Mutex::new(MemoryTable::new()));
    let handler = move |request: Request| {
        let response = table.lock().unwrap().handle(&request);
        async move { response }
    };
    let metrics = metrics();
    let scrape = {
        let metrics = Arc::clone(&metrics);
        move || {
            let text = metrics.render();
            async move { text }
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(handler, scrape, async move {
        let _ = stopped.await;
    }));
    Running {
        address,
        stop: Some(stop),
        serving,
        metrics,
    }
}

async fn loopback(token: Option<&str>) -> HttpServer {
    HttpServer::bind("127.0.0.1:0".parse().unwrap(), token.map(str::to_owned))
        .await
        .unwrap()
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request with `Connection: close`, a Content-Length for POSTs, and `extra` headers.
fn request(method: &str, path: &str, extra: &[&str], body: &str) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: keeplb\r\nConnection: close\r\n");
    for header in extra {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// Sends raw bytes and reads the response until the server closes. A reset after the
/// response (the server closing with request bytes unread) still yields the response.
async fn send(address: SocketAddr, raw: &[u8]) -> Reply {
    timeout(WAIT, async {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        parse(&received)
    })
    .await
    .unwrap()
}

fn parse(received: &[u8]) -> Reply {
    let text = String::from_utf8(received.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(address: SocketAddr, path: &str, extra: &[&str]) -> Reply {
    send(address, &request("GET", path, extra, "")).await
}

async fn post_api(address: SocketAddr, body: &str) -> Reply {
    let auth = format!("Authorization: Bearer {TOKEN}");
    send(address, &request("POST", "/api", &[&auth], body)).await
}

#[tokio::test]
async fn bind_refuses_unsafe_settings() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let error = HttpServer::bind(any, None).await.unwrap_err();
    assert!(
        matches!(error, HttpError::NonLoopbackWithoutToken { address } if address == any),
        "{error}"
    );
    let v6_any: SocketAddr = "[::]:0".parse().unwrap();
    assert!(HttpServer::bind(v6_any, None).await.is_err());
    for token in ["", "two words", "tab\there", "ünï"] {
        let error = HttpServer::bind("127.0.0.1:0".parse().unwrap(), Some(token.to_owned()))
            .await
            .unwrap_err();
        assert!(
            matches!(error, HttpError::InvalidToken),
            "{token:?}: {error}"
        );
    }
    // with a token, any address may be bound; without, loopback only
    let with_token = HttpServer::bind(any, Some(TOKEN.to_owned())).await.unwrap();
    assert!(with_token.local_addr().unwrap().port() != 0);
    let running = start(loopback(None).await).await;
    let reply = get(running.address, "/healthz", &[]).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    running.stop().await;
}

#[tokio::test]
async fn bearer_token_is_required() {
    let running = start(loopback(Some(TOKEN)).await).await;
    let address = running.address;
    let good = format!("Authorization: Bearer {TOKEN}");
    let lower_scheme = format!("Authorization: bearer {TOKEN}");
    let same_length = format!("Authorization: Bearer {}", "x".repeat(TOKEN.len()));
    let prefix = format!("Authorization: Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Authorization: Bearer {TOKEN}x");
    let basic = format!("Authorization: Basic {TOKEN}");
    for (header, path, status) in [
        (None, "/metrics", 401),
        (None, "/healthz", 401),
        // refused before routing: an unauthenticated client learns no paths
        (None, "/nope", 401),
        (Some(same_length.as_str()), "/metrics", 401),
        (Some(prefix.as_str()), "/metrics", 401),
        (Some(longer.as_str()), "/metrics", 401),
        (Some(basic.as_str()), "/metrics", 401),
        (Some("Authorization: Bearer"), "/metrics", 401),
        (Some(good.as_str()), "/metrics", 200),
        (Some(lower_scheme.as_str()), "/healthz", 200),
        (Some(good.as_str()), "/nope", 404),
    ] {
        let extra: Vec<&str> = header.into_iter().collect();
        let reply = get(address, path, &extra).await;
        assert_eq!(reply.status, status, "{header:?} {path}: {reply:?}");
        if status == 401 {
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"keeplb\"")
            );
            assert!(!reply.body.contains("keeplb_"), "{reply:?}");
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn metrics_endpoint() {
    let running = start(loopback(None).await).await;
    let address = running.address;
    let reply = get(address, "/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(OPENMETRICS));
    assert!(
        reply
            .body
            .contains("keeplb_vrrp_state{vrrp_instance=\"VI_1\",state=\"BACKUP\"} 1\n"),
        "{}",
        reply.body
    );
    assert!(reply.body.ends_with("# EOF\n"));
    // scraped at request time: a change shows in the next scrape
    running.metrics.set_vrrp(Vec::new());
    let after = get(address, "/metrics", &[]).await;
    assert!(
        !after.body.contains("vrrp_instance=\"VI_1\""),
        "{}",
        after.body
    );
    assert_eq!(after.body, running.metrics.render());

    let head = send(address, &request("HEAD", "/metrics", &[], "")).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    for method in ["POST", "PUT", "DELETE"] {
        let reply = send(address, &request(method, "/metrics", &[], "")).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    // query strings do not change the route
    assert_eq!(get(address, "/metrics?x=1", &[]).await.status, 200);
    running.stop().await;
}

#[tokio::test]
async fn api_round_trip() {
    let running = start(loopback(Some(TOKEN)).await).await;
    let address = running.address;
    let add = r#"{"version":1,"request":"adm","command":{"command":"add_service","service":{"kind":"addr","protocol":"tcp","address":"10.0.0.10","port":80,"scheduler":"rr","netmask":"255.255.255.255"}}}"#;
    let reply = post_api(address, add).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body, "{\"version\":1,\"response\":\"done\"}\n");

    // the same request again: the table's refusal, in the socket's words
    let again = post_api(address, add).await;
    assert_eq!(again.status, 409);
    let response: Response = serde_json::from_str(&again.body).unwrap();
    assert!(
        matches!(response.body, ResponseBody::Error { .. }),
        "{response:?}"
    );
    assert!(
        again.body.contains("Service already exists"),
        "{}",
        again.body
    );

    let snapshot = serde_json::to_string(&Request::new(RequestBody::Snapshot)).unwrap();
    let reply = post_api(address, &snapshot).await;
    let response: Response = serde_json::from_str(&reply.body).unwrap();
    let ResponseBody::Snapshot { snapshot } = response.body else {
        panic!("{response:?}")
    };
    assert_eq!(snapshot.services.len(), 1);
    assert_eq!(snapshot.services[0].config.scheduler, "rr");

    for (body, kind) in [
        (
            r#"{"version":2,"request":"snapshot"}"#,
            "unsupported_version",
        ),
        ("not json", "bad_request"),
        ("", "bad_request"),
    ] {
        let reply = post_api(address, body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert!(
            reply.body.contains(&format!("\"kind\":\"{kind}\"")),
            "{body}: {}",
            reply.body
        );
    }
    let auth = format!("Authorization: Bearer {TOKEN}");
    let reply = get(address, "/api", &[&auth]).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    running.stop().await;
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let running = start(loopback(None).await.with_body_limit(64)).await;
    let address = running.address;
    let snapshot = r#"{"version":1,"request":"snapshot"}"#;
    assert!(snapshot.len() <= 64);
    assert_eq!(post_api(address, snapshot).await.status, 200);

    // declared too long: refused from the headers alone, the body is never awaited
    let declared = b"POST /api HTTP/1.1\r\nHost: keeplb\r\nContent-Length: 65\r\n\r\n";
    let reply = send(address, declared).await;
    assert_eq!(reply.status, 413, "{reply:?}");

    // chunked, so only counting tells: refused once past the limit
    let padded = format!(
        r#"{{"version":1,"request":"snapshot","pad":"{}"}}"#,
        "x".repeat(100)
    );
    let chunked = format!(
        "POST /api HTTP/1.1\r\nHost: keeplb\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{padded}\r\n0\r\n\r\n",
        padded.len()
    );
    let reply = send(address, chunked.as_bytes()).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    running.stop().await;

    // the default limit is the control socket's 1 MiB
    let running = start(loopback(None).await).await;
    let declared = format!(
        "POST /api HTTP/1.1\r\nHost: keeplb\r\nContent-Length: {}\r\n\r\n",
        (1 << 20) + 1
    );
    assert_eq!(send(running.address, declared.as_bytes()).await.status, 413);
    running.stop().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let server = loopback(None).await;
    let address = server.local_addr().unwrap();
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let handler = {
        let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
        move |_request: Request| {
            let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
            async move {
                entered.notify_one();
                release.notified().await;
                Response::new(ResponseBody::Reloaded)
            }
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let mut serving = tokio::spawn(
        server.serve(handler, || async { String::new() }, async move {
            let _ = stopped.await;
        }),
    );
    // an idle keep-alive connection must not hold the shutdown up
    let idle = TcpStream::connect(address).await.unwrap();
    // (a read-only request: without a token, one that changes the daemon gets 403)
    let status = serde_json::to_string(&Request::new(RequestBody::Status)).unwrap();
    let in_flight =
        tokio::spawn(async move { send(address, &request("POST", "/api", &[], &status)).await });
    timeout(WAIT, entered.notified()).await.unwrap();
    stop.send(()).unwrap();
    // the listener closes while the request is still being answered
    timeout(WAIT, async {
        while TcpStream::connect(address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(!serving.is_finished());
    release.notify_one();
    let reply = timeout(WAIT, in_flight).await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "{\"version\":1,\"response\":\"reloaded\"}\n");
    timeout(WAIT, &mut serving).await.unwrap().unwrap();
    drop(idle);
}

#[tokio::test]
async fn without_a_token_the_api_is_read_only() {
    let running = start(loopback(None).await).await;
    let address = running.address;
    let post =
        |body: String| async move { send(address, &request("POST", "/api", &[], &body)).await };
    let add = r#"{"version":1,"request":"adm","command":{"command":"add_service","service":{"kind":"addr","protocol":"tcp","address":"10.0.0.10","port":80,"scheduler":"rr","netmask":"255.255.255.255"}}}"#;
    for body in [
        add.to_owned(),
        r#"{"version":1,"request":"adm","command":{"command":"flush"}}"#.to_owned(),
        r#"{"version":1,"request":"adm","command":{"command":"zero","service":null}}"#.to_owned(),
        serde_json::to_string(&Request::new(RequestBody::Reload)).unwrap(),
    ] {
        let reply = post(body.clone()).await;
        assert_eq!(reply.status, 403, "{body}: {reply:?}");
        let response: Response = serde_json::from_str(&reply.body).unwrap();
        assert!(
            matches!(&response.body, ResponseBody::Error { error: ApiError::Forbidden { message } }
                if message.contains("--http-token-file")),
            "{body}: {response:?}"
        );
    }
    let snapshot = serde_json::to_string(&Request::new(RequestBody::Snapshot)).unwrap();
    let reply = post(snapshot).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let response: Response = serde_json::from_str(&reply.body).unwrap();
    let ResponseBody::Snapshot { snapshot } = response.body else {
        panic!("{response:?}")
    };
    assert!(snapshot.services.is_empty(), "the add was not applied");
    assert_eq!(get(address, "/metrics", &[]).await.status, 200);
    running.stop().await;
}

#[test]
fn error_responses_have_error_statuses() {
    use keeplb_control::error::{KernelError, Operation, Unsupported};
    let error = |error| Response::new(ResponseBody::Error { error });
    let kernel = |e| Response::kernel_error(e, Operation::AddDest);
    for (response, status) in [
        (Response::new(ResponseBody::Done), 200),
        (Response::new(ResponseBody::Reloaded), 200),
        (
            error(ApiError::ConfigRejected {
                diagnostics: vec!["keepalived.conf:1:1: error".into()],
            }),
            422,
        ),
        (
            error(ApiError::BadRequest {
                message: "x".into(),
            }),
            400,
        ),
        (
            error(ApiError::UnsupportedVersion {
                requested: 2,
                supported: 1,
            }),
            400,
        ),
        (
            error(ApiError::Forbidden {
                message: "x".into(),
            }),
            403,
        ),
        (kernel(KernelError::NoSuchService), 404),
        (kernel(KernelError::NotFound), 404),
        (kernel(KernelError::Exists), 409),
        (kernel(KernelError::InvalidArgument), 400),
        (kernel(KernelError::Errno(34)), 400),
        (kernel(KernelError::PermissionDenied), 403),
        (kernel(KernelError::NeedsKernel(Unsupported::Fwmark)), 501),
        (kernel(KernelError::NoMemory), 503),
    ] {
        assert_eq!(status_of(&response).as_u16(), status, "{response:?}");
    }
}
