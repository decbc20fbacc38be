//! Batched receive and send on loopback, and socket address conversion.

#![allow(clippy::unwrap_used)]
use super::*;
use std::net::UdpSocket;
use std::os::fd::AsFd;

#[test]
fn addresses_round_trip_through_c_storage() {
    let v4: SocketAddr = "127.0.0.7:5353".parse().unwrap();
    let v6: SocketAddr = "[fe80::1%3]:53".parse().unwrap();
    for addr in [v4, v6] {
        let mut ss = zeroed_storage();
        let len = to_storage(addr, &mut ss);
        assert_eq!(from_storage(&ss, len), Some(addr));
    }
}

#[test]
fn a_batch_of_datagrams_is_received_and_answered_in_one_call_each() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (saddr, caddr) = (server.local_addr().unwrap(), client.local_addr().unwrap());
    let mut rx = RecvBatch::new();
    let err = rx.recv(server.as_fd()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "empty socket");
    for i in 0..5u8 {
        client.send_to(&[i; 20], saddr).unwrap();
    }
    // Loopback delivers within `send_to`: all five are queued already.
    assert_eq!(rx.recv(server.as_fd()).unwrap(), 5);
    let mut tx = SendBatch::new();
    for (pkt, src) in rx.packets() {
        assert_eq!(src, Some(caddr));
        let buf = tx.next_buf().unwrap();
        buf.clear();
        buf.extend_from_slice(pkt);
        buf.push(0xff);
        tx.commit(caddr);
    }
    assert_eq!(tx.send(server.as_fd()).unwrap(), tx.len);
    assert_eq!(tx.pending(), 0);
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    for i in 0..5u8 {
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, saddr);
        assert_eq!(&buf[..n], [[i; 20].as_slice(), &[0xff]].concat());
    }
}
