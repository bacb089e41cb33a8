//! HTTP/2 and protocol abuse on the gRPC port: a rapid-reset flood, streams
//! a client makes the server reset ("MadeYouReset"), oversized header
//! lists, frames larger than the server reads, idle connections and random
//! bytes. Each test checks what the abuser sees (its connection closed, or
//! its one call refused), that another client's calls go on being answered
//! meanwhile, and that the process's memory and open sockets come back
//! within a stated bound. The limits are in src/server/layers.rs and
//! README.md's "Protocol limits".
//!
//! The server runs in this process, so the process's RSS is the server's
//! plus the abuser's own buffers (small beside the bounds). The tests take
//! `SERIAL` so that no two measure the process at once.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::*;
use recur::pb::v1 as pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;

/// Held by every test: each one measures the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long an ordinary call may take while the server is being abused.
/// Measured: 2-4 ms; the margin is for a loaded 2-core machine.
const CALL_BOUND: Duration = Duration::from_secs(10);

/// The bystander's pause between calls, so that it samples the whole abuse
/// without competing with it for the two cores.
const BYSTANDER_PACE: Duration = Duration::from_millis(20);

/// MAX_LOCAL_ERROR_RESET_STREAMS in src/server/layers.rs.
const MAX_LOCAL_ERROR_RESETS: u64 = 1024;

/// GOAWAY and RST_STREAM error codes (RFC 9113, section 7).
const FRAME_SIZE_ERROR: u32 = 0x6;
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_is_cut_off_and_others_are_served() {
    // Streams opened and reset on each connection unless the server cuts
    // it off first. Measured over four runs: cut off after 84-1,170 streams
    // (the limit is 20 reset streams waiting at once to be taken up), in
    // under 40 ms; with the limit lifted, all 100,000 of a larger flood went
    // through in 27 s and the process grew by 195 MB.
    const FLOOD: u32 = 20_000;
    const ROUNDS: usize = 5;
    // Measured: +0.3 to +0.9 MiB over the five floods.
    const GROWTH_BOUND_KIB: u64 = 16 * 1024;

    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    warm_up(server.addr).await;
    let before = Usage::now();
    let bystander = Bystander::start(server.addr).await;
    for round in 0..ROUNDS {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let (mut send, connection) = h2::client::handshake(tcp).await.expect("handshake");
        let connection = tokio::spawn(connection);
        let mut opened = 0;
        let mut send_error = None;
        while opened < FLOOD {
            send = match send.ready().await {
                Ok(send) => send,
                Err(e) => {
                    send_error = Some(e);
                    break;
                }
            };
            match send.send_request(list_tasks_request(server.addr), false) {
                Ok((_response, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(e) => {
                    send_error = Some(e);
                    break;
                }
            }
            opened += 1;
        }
        assert!(
            opened < FLOOD,
            "round {round}: the server took all {FLOOD} reset streams without closing the connection"
        );
        let ended = tokio::time::timeout(WAIT, connection)
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: the connection was not closed within {WAIT:?}")
            })
            .expect("connection task");
        let error = ended
            .err()
            .or(send_error)
            .expect("a connection the server closed ends with an error");
        assert!(
            cut_off(&error),
            "round {round}: after {opened} streams the connection ended with {error:?}, not a GOAWAY (ENHANCE_YOUR_CALM) or the server closing it"
        );
    }
    bystander.finish().await;
    assert_served_on_a_new_connection(server.addr).await;
    before.assert_sockets_released().await;
    before.assert_growth_within(GROWTH_BOUND_KIB, "five rapid-reset floods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_made_to_fail_close_the_connection_and_others_are_served() {
    // HEADERS saying `content-length: 0`, then one byte of DATA: the server
    // takes the call, then must reset the stream. Measured with the limit:
    // GOAWAY (ENHANCE_YOUR_CALM, "too_many_internal_resets") within 50 ms
    // every time, with 384 RST_STREAMs before it; without it (tonic's
    // default), 100,000 such streams were all taken, in 5 s, and the
    // connection stayed open.
    const FLOOD: u32 = 20_000;
    const BATCH: u32 = 100;
    const ROUNDS: usize = 3;
    // Measured: +1.2 to +2.4 MiB over the three floods.
    const GROWTH_BOUND_KIB: u64 = 16 * 1024;

    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    warm_up(server.addr).await;
    let before = Usage::now();
    let bystander = Bystander::start(server.addr).await;
    let mut block = raw::list_tasks_block(&server.addr.to_string());
    raw::literal(&mut block, b"content-length", b"0");
    for round in 0..ROUNDS {
        let (mut reader, mut writer) = raw::connect(server.addr).await.into_split();
        let outcome = tokio::spawn(async move {
            let mut resets = 0u64;
            loop {
                match raw::read_frame(&mut reader).await {
                    Ok(frame) if frame.kind == raw::GOAWAY => return (resets, frame.goaway_code()),
                    Ok(frame) if frame.kind == raw::RST_STREAM => resets += 1,
                    Ok(_) => {}
                    Err(_) => return (resets, None),
                }
            }
        });
        let mut stream = 1;
        while stream < 2 * FLOOD && !outcome.is_finished() {
            let mut batch = Vec::new();
            for _ in 0..BATCH {
                raw::frame(&mut batch, raw::HEADERS, raw::END_HEADERS, stream, &block);
                raw::frame(&mut batch, raw::DATA, raw::END_STREAM, stream, &[0]);
                stream += 2;
            }
            if writer.write_all(&batch).await.is_err() {
                // Closed by the server; the reader has what it sent before.
                break;
            }
        }
        // Without a GOAWAY the reader ends at the end of the connection.
        let _ = writer.shutdown().await;
        let (resets, goaway) = tokio::time::timeout(WAIT, outcome)
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: the connection was not closed within {WAIT:?}")
            })
            .expect("reader task");
        assert_eq!(
            goaway,
            Some(ENHANCE_YOUR_CALM),
            "round {round}: the connection should end with GOAWAY (ENHANCE_YOUR_CALM) after at most {MAX_LOCAL_ERROR_RESETS} resets; got {resets} resets"
        );
        assert!(
            resets <= MAX_LOCAL_ERROR_RESETS,
            "round {round}: the server reset {resets} streams before closing the connection"
        );
    }
    bystander.finish().await;
    assert_served_on_a_new_connection(server.addr).await;
    before.assert_sockets_released().await;
    before.assert_growth_within(GROWTH_BOUND_KIB, "three floods of streams made to fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_lists_are_refused_and_others_are_served() {
    const ROUNDS: usize = 3;
    // Measured: +3.4 to +4.0 MiB over the three rounds, much of it this
    // test's own 1 MiB header and its encoding.
    const GROWTH_BOUND_KIB: u64 = 24 * 1024;

    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    warm_up(server.addr).await;
    let before = Usage::now();
    let bystander = Bystander::start(server.addr).await;
    for round in 0..ROUNDS {
        // Over the 16 KiB limit: that call is refused (tonic clients do not
        // check the limit the server advertises), and the same client's
        // next call, with 8 KiB, is answered.
        let mut client = server.new_client().await;
        let mut oversized = tonic::Request::new(pb::ListTasksRequest::default());
        oversized
            .metadata_mut()
            .insert("x-pad", "a".repeat(20 * 1024).parse().expect("ascii"));
        let refused = tokio::time::timeout(CALL_BOUND, client.list_tasks(oversized))
            .await
            .expect("the oversized call is answered")
            .expect_err("a call with 20 KiB of metadata is refused");
        assert_eq!(refused.code(), tonic::Code::Unknown, "{refused:?}");
        assert!(refused.message().contains("431"), "{refused:?}");
        let mut fitting = tonic::Request::new(pb::ListTasksRequest::default());
        fitting
            .metadata_mut()
            .insert("x-pad", "a".repeat(8 * 1024).parse().expect("ascii"));
        tokio::time::timeout(CALL_BOUND, client.list_tasks(fitting))
            .await
            .expect("answered")
            .unwrap_or_else(|s| panic!("round {round}: a call with 8 KiB of metadata: {s:?}"));

        // Over four times the limit: the connection is closed.
        for size in [100 * 1024, 1024 * 1024] {
            let tcp = TcpStream::connect(server.addr).await.expect("connect");
            let (mut send, connection) = h2::client::handshake(tcp).await.expect("handshake");
            let connection = tokio::spawn(connection);
            let mut request = list_tasks_request(server.addr);
            request
                .headers_mut()
                .insert("x-pad", "a".repeat(size).parse().expect("ascii"));
            let (response, mut body) = send.send_request(request, false).expect("send");
            let _ = body.send_data(Bytes::from_static(EMPTY_MESSAGE), true);
            let answer = tokio::time::timeout(WAIT, response)
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: {size} bytes of headers: no answer within {WAIT:?}")
                });
            let error = answer.expect_err("headers past four times the limit close the connection");
            assert!(
                cut_off(&error),
                "round {round}: {size} bytes of headers: {error:?}, not a GOAWAY (ENHANCE_YOUR_CALM) or the server closing the connection"
            );
            drop(send);
            tokio::time::timeout(WAIT, connection)
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: {size} bytes of headers: the connection stayed open")
                })
                .expect("connection task")
                .expect_err("the server closed the connection");
        }
    }
    bystander.finish().await;
    assert_served_on_a_new_connection(server.addr).await;
    before.assert_sockets_released().await;
    before.assert_growth_within(GROWTH_BOUND_KIB, "oversized header lists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_larger_than_the_limit_is_refused_before_its_payload() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    warm_up(server.addr).await;
    let mut tcp = raw::connect(server.addr).await;
    // A DATA frame header announcing 16 MiB - 1 and no payload: a server
    // that waited for the payload would hold the connection and a buffer
    // that size. Measured: GOAWAY and close within a millisecond.
    let mut frame = vec![0xff, 0xff, 0xff, raw::DATA, 0];
    frame.extend_from_slice(&1u32.to_be_bytes());
    tcp.write_all(&frame).await.expect("write");
    let goaway = tokio::time::timeout(WAIT, async {
        loop {
            match raw::read_frame(&mut tcp).await {
                Ok(frame) if frame.kind == raw::GOAWAY => return frame.goaway_code(),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("the server answers a frame past its limit at once");
    assert_eq!(goaway, Some(FRAME_SIZE_ERROR));
    assert_closed(&mut tcp, "after the GOAWAY").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_little_are_closed_and_others_are_served() {
    // Measured: 500 connections added 7.5-7.6 MiB while held (about 16 KiB
    // each, server and client ends); allowed: 128 KiB each.
    const GROWTH_BOUND_KIB_PER_CONNECTION: u64 = 128;

    let _serial = SERIAL.lock().await;
    // Each is two descriptors here (both ends): stay well under the soft
    // limit where it is the common 1024.
    let count = 500.min(fd_soft_limit().saturating_sub(128) / 2);
    let mut config = test_config();
    // Short, so the test need not wait out the default 10 s.
    config.first_byte_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(config, |s| s).await;
    warm_up(server.addr).await;
    let before = Usage::now();
    let bystander = Bystander::start(server.addr).await;
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    assert_served_on_a_new_connection(server.addr).await;
    before.assert_growth_within(
        count as u64 * GROWTH_BOUND_KIB_PER_CONNECTION,
        &format!("{count} idle connections"),
    );
    // None ever sent a preface: each is closed once its deadline passed.
    for tcp in &mut idle {
        assert_closed(tcp, "a connection that never spoke").await;
    }
    drop(idle);
    bystander.finish().await;
    before.assert_sockets_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_stop_answering_are_closed_by_keepalive() {
    // Idle after the preface, unlike the connections above: keepalive
    // PINGs apply from there on.
    const SILENT: usize = 50;
    let _serial = SERIAL.lock().await;
    let mut config = test_config();
    // Short, so the test need not wait out the defaults (30 s / 10 s).
    // Measured: all closed 1.0 s after they went silent.
    config.keepalive_interval = Duration::from_millis(500);
    config.keepalive_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(config, |s| s).await;
    warm_up(server.addr).await;
    let before = Usage::now();
    let bystander = Bystander::start(server.addr).await;
    // A preface and SETTINGS, then nothing: no SETTINGS ack, no PING ack.
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(raw::start(server.addr).await);
    }
    for tcp in &mut silent {
        assert_closed(tcp, "a connection that answers no PING").await;
    }
    drop(silent);
    bystander.finish().await;
    before.assert_sockets_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_are_refused_and_others_are_served() {
    const CONNECTIONS: u64 = 8;
    const BYTES: usize = 64 * 1024;
    // Measured: +16 to +28 KiB. Each connection was closed within 2 ms:
    // without a preface after the server's SETTINGS, with one after its
    // GOAWAY (the first random frame breaks a rule at once).
    const GROWTH_BOUND_KIB: u64 = 8 * 1024;

    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    warm_up(server.addr).await;
    let before = Usage::now();
    let bystander = Bystander::start(server.addr).await;
    for with_preface in [false, true] {
        for seed in 1..=CONNECTIONS {
            let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
            let mut bytes = Vec::with_capacity(BYTES + raw::PREFACE.len());
            if with_preface {
                bytes.extend_from_slice(raw::PREFACE);
            }
            bytes.extend(random_bytes(seed, BYTES));
            // The server may close before it has read them all.
            let _ = tcp.write_all(&bytes).await;
            assert_closed(
                &mut tcp,
                &format!("random bytes (seed {seed}, preface {with_preface})"),
            )
            .await;
        }
    }
    bystander.finish().await;
    assert_served_on_a_new_connection(server.addr).await;
    before.assert_sockets_released().await;
    before.assert_growth_within(GROWTH_BOUND_KIB, "random bytes");
}

/// Whether an h2 client error shows the server cutting the connection off:
/// GOAWAY with ENHANCE_YOUR_CALM, or the socket closed under the client.
/// The server closes the socket right after its GOAWAY while the client's
/// frames are still in flight, so the client may meet the closed socket
/// (broken pipe, reset) before it reads the GOAWAY.
fn cut_off(error: &h2::Error) -> bool {
    (error.is_go_away()
        && error.is_remote()
        && error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM))
        || error.is_io()
}

/// The body of a ListTasks call: one empty message.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

fn list_tasks_request(addr: SocketAddr) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/recur.v1.TaskService/ListTasks"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A few calls first, so what the server allocates once is in the baseline.
async fn warm_up(addr: SocketAddr) {
    let mut client = connect(addr).await;
    for _ in 0..50 {
        client
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .expect("warm-up call");
    }
}

/// An ordinary client on a connection of its own, calling ListTasks
/// throughout the abuse; every call must be answered within `CALL_BOUND`.
struct Bystander {
    stop: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

impl Bystander {
    async fn start(addr: SocketAddr) -> Bystander {
        let mut client = connect(addr).await;
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                for call in 1.. {
                    let started = Instant::now();
                    let answer = tokio::time::timeout(
                        CALL_BOUND,
                        client.list_tasks(pb::ListTasksRequest::default()),
                    )
                    .await
                    .map_err(|_| format!("call {call} not answered within {CALL_BOUND:?}"))?;
                    answer.map_err(|s| {
                        format!("call {call} failed after {:?}: {s:?}", started.elapsed())
                    })?;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(BYSTANDER_PACE) => {}
                    }
                }
                Ok(())
            }
        });
        Bystander { stop, task }
    }

    /// Stops it, failing the test if any of its calls was not answered.
    async fn finish(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("bystander task")
            .unwrap_or_else(|e| panic!("the bystander was not served during the abuse: {e}"));
    }
}

async fn assert_served_on_a_new_connection(addr: SocketAddr) {
    let mut client = connect(addr).await;
    tokio::time::timeout(
        CALL_BOUND,
        client.list_tasks(pb::ListTasksRequest::default()),
    )
    .await
    .expect("a new client is answered after the abuse")
    .expect("a new client's call succeeds after the abuse");
}

/// Reads until the server closes the connection (end of stream, or reset).
async fn assert_closed(tcp: &mut TcpStream, what: &str) {
    let mut buf = [0; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the server kept the connection open for {WAIT:?}"
    );
}

/// xorshift64: the same bytes on every run, so a failure can be replayed.
fn random_bytes(seed: u64, len: usize) -> impl Iterator<Item = u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.to_le_bytes()
    })
    .flatten()
    .take(len)
}

/// The process's resident memory and open descriptors at one moment.
struct Usage {
    rss_kib: u64,
    fds: usize,
}

impl Usage {
    fn now() -> Usage {
        Usage {
            rss_kib: rss_kib(),
            fds: open_fds(),
        }
    }

    fn assert_growth_within(&self, bound_kib: u64, what: &str) {
        let now = rss_kib();
        let growth = now.saturating_sub(self.rss_kib);
        assert!(
            growth <= bound_kib,
            "{what}: RSS grew by {growth} KiB ({} -> {now} KiB), more than {bound_kib} KiB",
            self.rss_kib
        );
    }

    /// Waits until the process holds no more descriptors than before: the
    /// server has closed its end of every abusive connection.
    async fn assert_sockets_released(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let fds = open_fds();
            if fds <= self.fds {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} descriptors still open {WAIT:?} after the abuse ({} before)",
                fds,
                self.fds
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn fd_soft_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .expect("/proc/self/limits")
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .expect("Max open files in /proc/self/limits")
}

/// HTTP/2 by hand, for what no client library sends: frames on a bare
/// socket, and header blocks encoded as HPACK literals (RFC 7541) without
/// Huffman coding or the dynamic table.
mod raw {
    use std::net::SocketAddr;

    use tokio::{
        io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;

    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    /// A connection that has sent its preface and an empty SETTINGS.
    pub async fn start(addr: SocketAddr) -> TcpStream {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut out = PREFACE.to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        tcp.write_all(&out).await.expect("preface");
        tcp
    }

    /// A connection past the handshake: preface sent, the server's
    /// SETTINGS read and acknowledged, so its limits are in force.
    pub async fn connect(addr: SocketAddr) -> TcpStream {
        let mut tcp = start(addr).await;
        loop {
            let frame = read_frame(&mut tcp).await.expect("the server's SETTINGS");
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                break;
            }
        }
        let mut ack = Vec::new();
        frame(&mut ack, SETTINGS, ACK, 0, &[]);
        tcp.write_all(&ack).await.expect("SETTINGS ack");
        tcp
    }

    pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("payload under 16 MiB");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// An HPACK integer with a `prefix_bits` prefix in a byte starting `first`.
    fn integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
        let max = (1 << prefix_bits) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        integer(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }

    /// A field not to be indexed, its name from the static table.
    fn literal_indexed_name(out: &mut Vec<u8>, name_index: usize, value: &[u8]) {
        integer(out, 0, 4, name_index);
        string(out, value);
    }

    /// A field not to be indexed, its name spelled out.
    pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0);
        string(out, name);
        string(out, value);
    }

    /// The header block of a ListTasks call.
    pub fn list_tasks_block(authority: &str) -> Vec<u8> {
        // Static table: 3 is `:method: POST`, 6 `:scheme: http`; names 4
        // `:path`, 1 `:authority`, 31 `content-type`.
        let mut out = vec![0x80 | 3, 0x80 | 6];
        literal_indexed_name(&mut out, 4, b"/recur.v1.TaskService/ListTasks");
        literal_indexed_name(&mut out, 1, authority.as_bytes());
        literal_indexed_name(&mut out, 31, b"application/grpc");
        literal(&mut out, b"te", b"trailers");
        out
    }

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a GOAWAY.
        pub fn goaway_code(&self) -> Option<u32> {
            let code = self.payload.get(4..8)?;
            Some(u32::from_be_bytes(code.try_into().ok()?))
        }
    }

    pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Frame> {
        let mut head = [0; 9];
        r.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        r.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: head[3],
            flags: head[4],
            payload,
        })
    }
}
