//! Serving the router over TCP, with the limits that keep one client from
//! taking the server from everyone else:
//!
//! - a cap on open connections in all and per client address, counted for as
//!   long as the socket lives (an agent's upgraded WebSocket included); a
//!   connection over a cap is answered `503 too_many_connections` and closed;
//! - a deadline for a request's headers (hyper's, which also closes a
//!   keep-alive connection that sends nothing) and one for its body (the
//!   router's `read_body_in_time` middleware), so slow senders cannot hold a
//!   connection open;
//! - a bounded drain at shutdown.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::error::{AppError, ErrorCode};

/// How a server treats its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Open connections in all, agents' WebSockets included.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's headers, and then its
    /// body; an idle keep-alive connection is closed after the same time.
    pub request_read_timeout: Duration,
    /// How long open requests and streams get to finish at shutdown.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `stop` is cancelled, then gives open
/// connections `limits.drain` to finish.
///
/// Requests carry [`ConnectInfo`]`<SocketAddr>` for the per-address rate limits.
/// The body deadline is the router's (`read_body_in_time`), so that it also
/// holds for a router served some other way.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    stop: CancellationToken,
) -> io::Result<()> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.request_read_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before it
                    // was accepted: neither ends the server.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Some(slot) = Slot::take(&tally, peer.ip(), &limits) else {
            connections.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Counted { stream, _slot: slot });
        let service = app.clone().map_request(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection =
            http.serve_connection(io, TowerToHyperService::new(service)).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    // Closed now, not when this returns: a client (an agent told to connect
    // again) is refused at once instead of waiting in the backlog for the drain.
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.drain, connections.wait()).await.is_err() {
        tracing::warn!(
            "open connections did not finish within {} s; stopping",
            limits.drain.as_secs()
        );
    }
    Ok(())
}

/// Middleware: reads the whole request body (at most `max_bytes`) within the
/// deadline before the handler runs, so a client trickling its body cannot
/// hold a handler, and every handler sees a body already in memory.
pub(crate) async fn read_body_in_time(
    deadline: Duration,
    max_bytes: usize,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, max_bytes)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) if is_length_limit(&e) => AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {max_bytes} bytes"),
        )
        .into_response(),
        Ok(Err(_)) => AppError::new(ErrorCode::InvalidJson, "the request body could not be read")
            .into_response(),
        Err(_) => AppError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {} s", deadline.as_secs_f32()),
        )
        .into_response(),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Answers a connection over a cap with `503` and closes it, without reading
/// its request.
async fn refuse(mut stream: TcpStream) {
    let body = AppError::new(
        ErrorCode::TooManyConnections,
        "too many open connections; retry in a moment",
    )
    .body()
    .to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    };
    // A client that does not read gets no more than a second of our time.
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Open connections, in all and per client address.
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One connection's place under the caps, given back when dropped.
#[derive(Debug)]
struct Slot {
    tally: Arc<Mutex<Tally>>,
    ip: IpAddr,
}

impl Slot {
    /// A place for a connection from `ip`, unless a cap is reached.
    fn take(tally: &Arc<Mutex<Tally>>, ip: IpAddr, limits: &ServeLimits) -> Option<Slot> {
        let mut counts = tally.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Some(Slot { tally: Arc::clone(tally), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that holds its [`Slot`] for as long as it lives, through a
/// WebSocket upgrade too (hyper hands this same stream to the upgrade).
struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> ServeLimits {
        ServeLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            request_read_timeout: Duration::from_secs(1),
            drain: Duration::from_secs(1),
        }
    }

    #[test]
    fn slots_respect_both_caps_and_come_back_when_dropped() {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let limits = limits(3, 2);
        let a1 = Slot::take(&tally, a, &limits).expect("first from a");
        let a2 = Slot::take(&tally, a, &limits).expect("second from a");
        assert!(Slot::take(&tally, a, &limits).is_none(), "a is at its cap");
        let b1 = Slot::take(&tally, b, &limits).expect("b has room");
        assert!(Slot::take(&tally, b, &limits).is_none(), "the server is at its cap");
        drop(a1);
        let b2 = Slot::take(&tally, b, &limits).expect("a's slot came back");
        drop((a2, b1, b2));
        let counts = tally.lock().expect("lock");
        assert_eq!((counts.total, counts.per_ip.len()), (0, 0), "nothing left counted");
    }
}
