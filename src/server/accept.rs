//! Accepting connections for the gRPC server: each accepted socket is
//! prepared (its TLS handshake, or its first bytes awaited) side by side
//! with the others and within a deadline, before tonic sees it. tonic
//! itself puts no deadline on a connection that never sends its HTTP/2
//! preface, so without this step such connections would stay open for good.

use std::{future::Future, sync::Arc, time::Duration};

use futures::Stream;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tracing::{debug, warn};

/// Most connections being prepared at once; accepting waits beyond it, so
/// a flood of connections that never speak costs a bounded amount of memory.
const MAX_PREPARING: usize = 1024;

/// Prepared connections waiting for the gRPC server to take them.
const HANDED_OVER: usize = 64;

/// After an accept error (such as too many open files), the pause before
/// trying again, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Waits until a plaintext client has sent something (peeked, not read).
pub async fn first_bytes(tcp: TcpStream) -> std::io::Result<TcpStream> {
    let mut byte = [0_u8; 1];
    match tcp.peek(&mut byte).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(tcp),
    }
}

/// Connections from `listener` once `prepare` finished with them within
/// `deadline`. A connection that fails or runs out of time is dropped and
/// logged at debug (port scanners make them all day). The listener is
/// closed once the server stops taking connections (drops the stream).
pub fn prepared<S, F, Fut>(
    listener: TcpListener,
    deadline: Duration,
    prepare: F,
) -> impl Stream<Item = Result<S, std::io::Error>>
where
    S: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(HANDED_OVER);
    tokio::spawn(async move {
        let preparing = Arc::new(Semaphore::new(MAX_PREPARING));
        loop {
            let permit = tokio::select! {
                permit = preparing.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = tx.closed() => break,
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
                _ = tx.closed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let ready = prepare(tcp);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(deadline, ready).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "connection dropped before it spoke"),
                    Err(_) => debug!(%peer, "connection dropped: nothing within the deadline"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) })
}
