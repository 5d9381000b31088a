//! The HTTP health checker reading what a real server sends back (`http::fetch`): the
//! response arrives in arbitrary pieces and may be anything. Must never panic, and must
//! find the same status and digest however the bytes are split.
//!
//! Input: the response, with 0xFF bytes marking where one read ends and the next begins.
//!
//! Run from fuzz/: `cargo fuzz run -s none check_http corpus/check_http seeds/check_http`.

#![no_main]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use keeplb_check::http::{self, Response};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Runtime;

/// A server that accepts the request and answers with `reads`, one read each.
struct Server {
    reads: VecDeque<Vec<u8>>,
}

impl AsyncRead for Server {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut read) = self.reads.pop_front() {
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read[..n]);
            if n < read.len() {
                self.reads.push_front(read.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Server {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn fetch(reads: VecDeque<Vec<u8>>) -> Option<Response> {
    let mut server = Server { reads };
    runtime()
        .block_on(http::fetch(
            &mut server,
            "GET / HTTP/1.0\r\n\r\n",
            Duration::from_secs(5),
            true,
        ))
        .ok()
}

fuzz_target!(|data: &[u8]| {
    // Empty pieces would read as the end of the stream.
    let pieces: VecDeque<Vec<u8>> = data
        .split(|&b| b == 0xff)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let whole: Vec<u8> = pieces.iter().flatten().copied().collect();
    let whole_len = whole.len();
    let _ = http::status_code(&whole);
    let _ = http::content_length(&whole);
    let split = fetch(pieces);
    let at_once = fetch(std::iter::once(whole).filter(|w| !w.is_empty()).collect());
    match (split, at_once) {
        (Some(a), Some(b)) => {
            assert_eq!(
                (a.status, &a.digest, a.received),
                (b.status, &b.digest, b.received)
            );
            assert!(a.body.len() <= http::KEPT_BODY);
        }
        (None, None) => {}
        // Only a header longer than the limit may be refused in small pieces and not whole.
        (split, _) => assert!(
            split.is_none() && whole_len > 64 * 1024,
            "split and whole reads disagree"
        ),
    }
});
