//! Limits on the HTTP server itself, before any route runs: how many
//! connections it holds, how long one may sit without a byte moving, how long
//! a request's head may take to arrive, how long a shutdown waits for them,
//! heads and bodies refused by their size, and the headers every answer
//! carries.

use super::error::ApiError;
use super::state::BODY_BYTES_MAX;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most connections held open at once; more wait in the listen queue.
pub const CONNECTIONS_MAX: usize = 1_024;
/// How long a shutdown waits for open connections before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a connection may go without a byte read or written before it is
/// closed: an idle keep-alive connection, a request sent half-way (headers
/// or body) and a client that stops reading its answer all free their place.
/// Longer than the longest `?wait=` (60 s), so a caller waiting for a saga's
/// end is never cut off.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a request's line and headers may take to arrive in full, however
/// slowly their bytes trickle in: the idle timeout alone would let a client
/// send one byte a minute for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request target (path and query) answered; longer gets 414.
pub const URI_BYTES_MAX: usize = 8 * 1024;
/// Most header bytes (names and values) in one request; more gets 431.
pub const HEADER_BYTES_MAX: usize = 32 * 1024;
/// Most headers in one request; more gets 431.
pub const HEADERS_MAX: usize = 100;
/// What the HTTP library itself buffers of a request's head. Above the limits
/// this module checks (and answers in JSON); a head beyond even this is closed
/// by the library with a bare 431 before any route runs.
pub const HEAD_BUFFER_BYTES: usize = 128 * 1024;
/// Headers the HTTP library parses before refusing with a bare 431: above
/// [`HEADERS_MAX`], so the JSON answer is the one normally seen.
pub const HEADERS_BUFFERED_MAX: usize = 4 * HEADERS_MAX;

/// The server's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections_max: usize,
    pub shutdown_grace: Duration,
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_max: CONNECTIONS_MAX,
            shutdown_grace: SHUTDOWN_GRACE,
            idle_timeout: IDLE_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// A listener that accepts a connection only while fewer than its limit are
/// open: a flood of idle connections waits in the kernel's queue instead of
/// taking every file descriptor.
#[derive(Debug)]
pub struct Bounded {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl Bounded {
    #[must_use]
    pub fn new(inner: TcpListener, limits: Limits) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(limits.connections_max.max(1))),
            idle_timeout: limits.idle_timeout,
        }
    }
}

impl Listener for Bounded {
    type Io = Counted;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so a permit always comes.
        let permit = self.permits.clone().acquire_owned().await;
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        let idle = self.idle_timeout;
        let timer = Box::pin(tokio::time::sleep(idle));
        (Counted { stream, idle, timer, _permit: permit.ok() }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(&self.inner)
    }
}

/// The client's address, as handlers see it (`Extension<ConnectInfo<Peer>>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// A connection holding its place under the limit until it closes, closed
/// (an I/O error to the server) once no byte has moved for its idle timeout.
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    idle: Duration,
    /// Fires `idle` after the last byte read or written.
    timer: Pin<Box<tokio::time::Sleep>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Counted {
    fn moved(&mut self) {
        let idle = self.idle;
        self.timer.as_mut().reset(tokio::time::Instant::now() + idle);
    }

    /// What a write did: bytes written count as movement; a write that
    /// waits is bounded by the idle timeout like a read.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.waiting(cx),
        }
    }

    /// While the socket waits: an error once the connection has been idle too long.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Refuse a body by its declared `Content-Length` (413, the API's JSON error)
/// before reading any of it.
pub async fn refuse_declared_large_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_BYTES_MAX as u64) {
        return ApiError::TooLarge { limit_bytes: BODY_BYTES_MAX }.into_response();
    }
    next.run(request).await
}

/// Refuse a request whose target or headers are longer than this server
/// answers (414 and 431, the API's JSON error), before any route runs.
pub async fn refuse_large_heads(request: Request, next: Next) -> Response {
    let target = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > URI_BYTES_MAX {
        return ApiError::UriTooLong { limit_bytes: URI_BYTES_MAX }.into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > HEADERS_MAX || bytes > HEADER_BYTES_MAX {
        return ApiError::HeadersTooLarge {
            limit_bytes: HEADER_BYTES_MAX,
            limit_count: HEADERS_MAX,
        }
        .into_response();
    }
    next.run(request).await
}

/// Headers on every answer (the console sets a stricter policy of its own,
/// kept): no sniffing, no framing, no referrer to other sites; JSON answers
/// may load nothing and are not stored by caches.
pub async fn security_headers(mut response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let h = response.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::X_FRAME_OPTIONS).or_insert(HeaderValue::from_static("DENY"));
    h.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("same-origin"));
    if is_json {
        h.entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
        h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    response
}
