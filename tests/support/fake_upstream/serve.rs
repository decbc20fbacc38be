//! The fake upstream's sockets: binding UDP and TCP on one port, the UDP receive loop, and the
//! TCP accept loop with framed, in-order serving per connection. Replies to send come from
//! `Shared::handle`; this module only carries them out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::{Proto, Shared, reply};

/// Binds UDP on `ip:port` (0: any free port), then TCP on the same port; with port 0, retries
/// on a new port when the TCP side is taken.
pub async fn bind_pair(ip: IpAddr, port: u16) -> (UdpSocket, TcpListener) {
    let mut last_err = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, port)).await.unwrap();
        let bound = udp.local_addr().unwrap();
        match TcpListener::bind(bound).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) if port == 0 => last_err = Some(e),
            Err(e) => panic!("cannot rebind TCP on {bound}: {e}"),
        }
    }
    panic!("no port with both UDP and TCP free on {ip}: {last_err:?}");
}

pub async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    // Replies run as children of this task, so aborting it cancels delayed replies too.
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65535];
    loop {
        tokio::select! {
            received = sock.recv_from(&mut buf) => {
                let Ok((len, peer)) = received else { continue };
                let sends = shared.handle(&buf[..len], Proto::Udp, peer);
                if !sends.is_empty() {
                    replies.spawn(send_udp(Arc::clone(&sock), peer, sends));
                }
            }
            Some(_) = replies.join_next(), if !replies.is_empty() => {}
        }
    }
}

async fn send_udp(sock: Arc<UdpSocket>, peer: SocketAddr, sends: Vec<reply::Send>) {
    for send in sends {
        tokio::time::sleep(send.delay).await;
        if send.other_source {
            let ip = sock.local_addr().unwrap().ip();
            let other = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
            let _ = other.send_to(&send.bytes, peer).await;
        } else {
            let _ = sock.send_to(&send.bytes, peer).await;
        }
    }
}

pub async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    // Connections are children of this task, so aborting it closes them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                shared.tcp_connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve_connection(stream, peer, Arc::clone(&shared)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves 2-byte-length-framed queries (RFC 1035 §4.2.2) one after another, replies in order.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        for send in shared.handle(&query, Proto::Tcp, peer) {
            tokio::time::sleep(send.delay).await;
            let Ok(len) = u16::try_from(send.bytes.len()) else {
                continue;
            };
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend_from_slice(&send.bytes);
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}
