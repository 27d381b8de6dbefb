//! etcd beside the Consistent Core: a three-member etcd cluster of real processes on
//! loopback (Debian's `etcd-server`, etcd 3.4), each under the same watchdog as the
//! Consistent Core's nodes, and a small blocking client of etcd's gRPC API (`Put`, a
//! linearizable `Range`, `Status`), spoken over HTTP/2 with `h2`, its few protobuf messages
//! encoded and decoded by hand. Included by a bench with `#[path]`, beside `cluster.rs`
//! (which it uses as `crate::cluster`); needs the `peers` feature.

// Each bench uses part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::cluster::{ELECTION_DEADLINE, Members, free_port};

/// The largest gRPC reply the client reads (a `Range` of one small key, a `Status`).
const REPLY_BYTES_MAX: usize = 64 << 10;

/// The `etcd` program to run: `$SYNOD_ETCD` if set, else `etcd` on the `PATH`; `None` if
/// there is none.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SYNOD_ETCD") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("etcd"))
        .find(|p| p.is_file())
}

/// The first line of `etcd --version` (`etcd Version: 3.4.23`).
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "etcd version unknown".into())
}

/// A cluster of `etcd` processes on loopback, with etcd's defaults otherwise (an
/// `fdatasync` per batch of its log, no authentication). Dropping it kills them and
/// removes their data.
pub struct Etcd {
    members: Members,
    client_addrs: Vec<String>,
}

impl Etcd {
    pub fn start(binary: &Path, root: &Path, members: usize) -> Etcd {
        let peer_urls: Vec<String> = (0..members)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let client_addrs: Vec<String> = (0..members)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let initial = peer_urls
            .iter()
            .enumerate()
            .map(|(i, url)| format!("etcd{}={url}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut processes = Members::new(root, "etcd");
        for (i, peer_url) in peer_urls.iter().enumerate() {
            let client_url = format!("http://{}", client_addrs[i]);
            let data_dir = processes.dir().join(format!("etcd{}", i + 1));
            let args: Vec<OsString> = [
                "--name",
                &format!("etcd{}", i + 1),
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "synod-bench",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            processes.spawn(binary.as_os_str(), &args);
        }
        Etcd {
            members: processes,
            client_addrs,
        }
    }

    /// Panics with the members' logs if one has exited.
    pub fn check_running(&mut self) {
        self.members.check_running();
    }

    /// CPU time the members have used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.members.cpu_seconds()
    }

    /// Polls every member's `Status` until one says it is the leader (the leader's id it
    /// reports is its own); returns its client address.
    pub fn wait_leader(&mut self) -> String {
        let deadline = Instant::now() + ELECTION_DEADLINE;
        while Instant::now() < deadline {
            self.check_running();
            for addr in &self.client_addrs {
                let leads = EtcdClient::connect(addr)
                    .and_then(|mut c| c.status())
                    .is_ok_and(|s| s.leader != 0 && s.leader == s.member);
                if leads {
                    return addr.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no etcd leader in {ELECTION_DEADLINE:?}; logs:\n{}",
            self.members.logs()
        );
    }
}

/// A member's `Status`: its own id and the leader's it knows (0 for none).
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub member: u64,
    pub leader: u64,
}

/// A blocking client of one etcd member over one HTTP/2 connection: each call sends one
/// unary gRPC request and waits for its answer. The connection is driven by a runtime of
/// the calling thread's own (no other thread is involved in a call), as a blocking client
/// of the Consistent Core reads and writes its socket itself.
pub struct EtcdClient {
    runtime: tokio::runtime::Runtime,
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    timeout: Duration,
}

impl EtcdClient {
    /// Connects to the member at `addr` (`host:port`, plain-text HTTP/2).
    pub fn connect(addr: &str) -> Result<EtcdClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let send = runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            let (send, connection) = h2::client::handshake(tcp)
                .await
                .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
            // Runs whenever the thread waits in a call.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, String>(send)
        })?;
        Ok(EtcdClient {
            runtime,
            send,
            authority: addr.to_string(),
            timeout: Duration::from_secs(20),
        })
    }

    /// `Put key value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let mut request = Vec::with_capacity(key.len() + value.len() + 8);
        put_bytes_field(&mut request, 1, key);
        put_bytes_field(&mut request, 2, value);
        self.unary("/etcdserverpb.KV/Put", &request).map(drop)
    }

    /// `Range key` with etcd's default, linearizable, consistency: the value of `key`, if
    /// it exists.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, String> {
        let mut request = Vec::with_capacity(key.len() + 4);
        put_bytes_field(&mut request, 1, key);
        let reply = self.unary("/etcdserverpb.KV/Range", &request)?;
        // RangeResponse.kvs = 2, KeyValue.value = 5.
        let Some(Field::Bytes(kv)) = find_field(&reply, 2)? else {
            return Ok(None);
        };
        match find_field(kv, 5)? {
            Some(Field::Bytes(value)) => Ok(Some(reply.slice_ref(value))),
            // An empty value is left out of the message.
            None => Ok(Some(Bytes::new())),
            Some(_) => Err("KeyValue.value is not bytes".into()),
        }
    }

    /// The member's `Status` (Maintenance service).
    pub fn status(&mut self) -> Result<Status, String> {
        let reply = self.unary("/etcdserverpb.Maintenance/Status", &[])?;
        // StatusResponse.header = 1 (ResponseHeader.member_id = 2), .leader = 4.
        let member = match find_field(&reply, 1)? {
            Some(Field::Bytes(header)) => match find_field(header, 2)? {
                Some(Field::Varint(id)) => id,
                _ => 0,
            },
            _ => 0,
        };
        let leader = match find_field(&reply, 4)? {
            Some(Field::Varint(id)) => id,
            _ => 0,
        };
        Ok(Status { member, leader })
    }

    /// Sends one unary gRPC call and returns its reply message.
    fn unary(&mut self, path: &str, message: &[u8]) -> Result<Bytes, String> {
        let length = u32::try_from(message.len()).map_err(|_| "request too large")?;
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0); // not compressed
        frame.put_u32(length);
        frame.extend_from_slice(message);
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| format!("request: {e}"))?;
        let send = self.send.clone();
        let timeout = self.timeout;
        let call = async move {
            let mut send = send.ready().await.map_err(|e| format!("connection: {e}"))?;
            let (response, mut body) = send
                .send_request(request, false)
                .map_err(|e| format!("send: {e}"))?;
            body.send_data(frame.freeze(), true)
                .map_err(|e| format!("send: {e}"))?;
            let response = response.await.map_err(|e| format!("response: {e}"))?;
            let (head, mut body) = response.into_parts();
            if head.status != http::StatusCode::OK {
                return Err(format!("HTTP status {}", head.status));
            }
            // A call that fails at once is answered with headers alone ("trailers-only").
            grpc_status(&head.headers)?;
            let mut data = BytesMut::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| format!("reply: {e}"))?;
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
                if data.len() > REPLY_BYTES_MAX {
                    return Err(format!("reply longer than {REPLY_BYTES_MAX} B"));
                }
            }
            if let Some(trailers) = body.trailers().await.map_err(|e| format!("reply: {e}"))? {
                grpc_status(&trailers)?;
            }
            Ok(data.freeze())
        };
        let data = self.runtime.block_on(async {
            tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| format!("no reply in {timeout:?}"))?
        })?;
        // One length-prefixed message: a flag byte (0: not compressed) and a big-endian
        // length.
        if data.len() < 5 || data[0] != 0 {
            return Err("reply is not one uncompressed gRPC message".into());
        }
        let length = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.len() != 5 + length {
            return Err(format!(
                "reply of {} B holds a message of {length} B",
                data.len()
            ));
        }
        Ok(data.slice(5..))
    }
}

/// `Ok` if `headers` carry no `grpc-status` or status 0; the error and its message
/// otherwise.
fn grpc_status(headers: &http::HeaderMap) -> Result<(), String> {
    match headers.get("grpc-status").map(http::HeaderValue::as_bytes) {
        None | Some(b"0") => Ok(()),
        Some(code) => Err(format!(
            "gRPC status {}: {}",
            String::from_utf8_lossy(code),
            headers
                .get("grpc-message")
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The few protobuf messages, by hand.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field) << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A decoded field's value.
#[derive(Debug, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(msg: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = msg.split_first().ok_or("truncated varint")?;
        *msg = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The first occurrence of field `want` in the message `msg`.
fn find_field(mut msg: &[u8], want: u32) -> Result<Option<Field<'_>>, String> {
    while !msg.is_empty() {
        let tag = varint(&mut msg)?;
        let field = match tag & 7 {
            0 => Field::Varint(varint(&mut msg)?),
            1 | 5 => {
                let n = if tag & 7 == 1 { 8 } else { 4 };
                msg = msg.get(n..).ok_or("truncated fixed field")?;
                Field::Fixed
            }
            2 => {
                let n = usize::try_from(varint(&mut msg)?).map_err(|_| "length too large")?;
                let bytes = msg.get(..n).ok_or("truncated length-delimited field")?;
                msg = &msg[n..];
                Field::Bytes(bytes)
            }
            other => return Err(format!("unknown wire type {other}")),
        };
        if tag >> 3 == u64::from(want) {
            return Ok(Some(field));
        }
    }
    Ok(None)
}
