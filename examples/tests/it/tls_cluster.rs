//! Clusters of real `synod node` processes with TLS on (certificates made here with rcgen):
//! `redis-cli --tls --cacert` and `synod kv --tls --cacert` work, a plain-text client is
//! told the port speaks TLS only and closed, garbage in place of a ClientHello closes that
//! connection alone, a peer whose certificate another authority signed is refused and
//! logged with its address while the cluster keeps serving, and each reference system
//! (Consistent Core, register, leaderless) replicates a write over its TLS peer links. Every
//! node runs with a client password and the cluster's secret as well as TLS: all three
//! together.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use synod_examples::resp::Value;
use synod_examples::resp::client::{encode_command, reply_limits};
use synod_examples::runtime::NodeOptions;
use synod_examples::runtime::tls::{NodeTls, TlsFiles, client_config};
use synod_transport::{ClusterId, Config, NodeId, TcpTransport};

use crate::core_cluster::{DEADLINE, TEST_PASSWORD, free_port_on, secure_args};

/// A CA and one certificate it signed for `localhost` and 127.0.0.1, as PEM files in `dir`
/// (`NAME-ca.pem`, `NAME-cert.pem`, `NAME-key.pem`).
fn authority(dir: &Path, name: &str) -> TlsFiles {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    let write = |what: &str, pem: String| {
        let path = dir.join(format!("{name}-{what}.pem"));
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    TlsFiles {
        ca: write("ca", ca.pem()),
        cert: write("cert", cert.pem()),
        key: write("key", key.serialize_pem()),
        client_auth: false,
    }
}

/// A cluster of three nodes of `system` with TLS on, a client password and the cluster's
/// secret.
struct TlsCluster {
    dir: tempfile::TempDir,
    files: TlsFiles,
    /// Each node's peer and client address.
    addrs: Vec<(String, String)>,
    children: Vec<Child>,
}

impl TlsCluster {
    fn up(system: &str) -> TlsCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = authority(dir.path(), "cluster");
        let secure = secure_args(dir.path());
        let addrs: Vec<(String, String)> = (0..3)
            .map(|_| {
                (
                    format!("127.0.0.1:{}", free_port_on("127.0.0.1")),
                    format!("127.0.0.1:{}", free_port_on("127.0.0.1")),
                )
            })
            .collect();
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, (peer, _))| format!("{}={peer}", i + 1))
            .collect();
        let children = (1..=3)
            .map(|id| {
                let log = std::fs::File::create(dir.path().join(format!("node{id}.log")))
                    .expect("log file");
                let (listen, client) = &addrs[id - 1];
                Command::new(env!("CARGO_BIN_EXE_synod"))
                    .args(["node", "--system", system, "--id", &id.to_string()])
                    .args(["--listen", listen, "--client", client])
                    .args(["--peers", &peers.join(",")])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("node{id}")))
                    .arg("--tls-cert-file")
                    .arg(&files.cert)
                    .arg("--tls-key-file")
                    .arg(&files.key)
                    .arg("--tls-ca-file")
                    .arg(&files.ca)
                    .args(&secure)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("synod node starts")
            })
            .collect();
        TlsCluster {
            dir,
            files,
            addrs,
            children,
        }
    }

    fn client(&self, id: usize) -> &str {
        &self.addrs[id - 1].1
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|id| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("node{id}.log")))
                    .unwrap_or_default();
                format!("--- node {id}\n{log}")
            })
            .collect()
    }

    /// One command to node `id` over TLS on a new connection.
    fn call(&self, id: usize, command: &[&str]) -> std::io::Result<Value> {
        tls_call(self.client(id), &self.files.ca, command)
    }

    /// Sends `command` to node `id` until it answers `want` (a leader elected, a write
    /// replicated), failing the test with the logs past [`DEADLINE`].
    fn settle(&self, id: usize, command: &[&str], want: &Value) {
        self.settle_on(id, command, want, |got| got == want);
    }

    /// Reads `key` from node `id` until it is `value`: one value, or siblings that are all
    /// `value` (the leaderless store keeps a blind write resent after an unknown outcome as
    /// a sibling of the first).
    fn settle_value(&self, id: usize, key: &str, value: &str) {
        let want = bulk(value);
        self.settle_on(id, &["GET", key], &want, |got| match got {
            Value::Array(siblings) => siblings.iter().all(|s| *s == want),
            one => *one == want,
        });
    }

    fn settle_on(&self, id: usize, command: &[&str], want: &Value, ok: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.call(id, command);
            if got.as_ref().is_ok_and(&ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} answered {got:?} to {command:?}, not {want:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one RESP command over TLS, trusting only the CA in `ca`, after authenticating with
/// the test password; reads its reply (or the refused AUTH's).
fn tls_call(addr: &str, ca: &Path, command: &[&str]) -> std::io::Result<Value> {
    tls_call_as(addr, ca, Some(TEST_PASSWORD), command)
}

/// [`tls_call`], authenticating with `password` first if `Some`.
fn tls_call_as(
    addr: &str,
    ca: &Path,
    password: Option<&str>,
    command: &[&str],
) -> std::io::Result<Value> {
    let mut conn = TlsConn::open(addr, ca)?;
    if let Some(password) = password {
        let authenticated = conn.call(&["AUTH", password])?;
        if authenticated != ok() {
            return Ok(authenticated);
        }
    }
    conn.call(command)
}

/// A client connection over TLS, trusting only the CA it was opened with.
struct TlsConn {
    stream: StreamOwned<ClientConnection, TcpStream>,
    /// Bytes read and not parsed yet.
    buf: Vec<u8>,
}

impl TlsConn {
    fn open(addr: &str, ca: &Path) -> std::io::Result<TlsConn> {
        let config = client_config(ca).map_err(std::io::Error::other)?;
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let session = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        Ok(TlsConn {
            stream: StreamOwned::new(session, socket),
            buf: Vec::new(),
        })
    }

    fn send(&mut self, command: &[&str]) -> std::io::Result<()> {
        let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
        self.stream.write_all(&encode_command(&args))?;
        self.stream.flush()
    }

    /// The next value the node sends: a reply, or a pushed message.
    fn next(&mut self) -> std::io::Result<Value> {
        let mut chunk = [0; 4096];
        loop {
            if let Some((value, used)) = Value::parse(&self.buf, &reply_limits())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            {
                self.buf.drain(..used);
                return Ok(value);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, command: &[&str]) -> std::io::Result<Value> {
        self.send(command)?;
        self.next()
    }
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

/// Everything the node sends before it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

#[test]
fn with_tls_redis_cli_and_synod_kv_work_plain_clients_and_foreign_peers_are_refused() {
    let cluster = TlsCluster::up("consistent-core");
    cluster.settle(1, &["SET", "k", "v1"], &ok());
    // A follower reads the write, which reached it over the peers' TLS links.
    for id in 2..=3 {
        cluster.settle(id, &["GET", "k"], &bulk("v1"));
    }
    // Over TLS the password is still asked for.
    let anonymous = tls_call_as(cluster.client(1), &cluster.files.ca, None, &["GET", "k"]);
    assert_eq!(
        anonymous.expect("a reply"),
        Value::Error("NOAUTH Authentication required.".into())
    );

    // A subscribed connection gets its pushed messages over TLS, as replies are.
    let channel = "__keyspace@0__:watched";
    let mut subscriber = TlsConn::open(cluster.client(2), &cluster.files.ca).expect("TLS");
    assert_eq!(
        subscriber.call(&["AUTH", TEST_PASSWORD]).expect("AUTH"),
        ok()
    );
    assert_eq!(
        subscriber.call(&["SUBSCRIBE", channel]).expect("SUBSCRIBE"),
        Value::Array(vec![bulk("subscribe"), bulk(channel), Value::Int(1)])
    );
    cluster.settle(3, &["SET", "watched", "w"], &ok());
    let Value::Array(message) = subscriber.next().expect("a pushed message") else {
        panic!("not a pub/sub message")
    };
    assert_eq!(message[..2], [bulk("message"), bulk(channel)]);
    assert!(
        matches!(&message[2], Value::Bulk(b) if b.starts_with(b"set ")),
        "{message:?}"
    );

    // redis-cli, when installed (Debian's is built with TLS).
    let port = |id: usize| cluster.client(id).rsplit_once(':').unwrap().1.to_string();
    let ca = cluster.files.ca.to_str().unwrap().to_string();
    let redis_cli = |id: usize, args: &[&str]| {
        Command::new("redis-cli")
            .env("REDISCLI_AUTH", TEST_PASSWORD)
            .args(["--tls", "--cacert", &ca, "-h", "127.0.0.1", "-p", &port(id)])
            .args(args)
            .output()
    };
    match redis_cli(2, &["SET", "r", "from-redis-cli"]) {
        Ok(out) => {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
            let out = redis_cli(3, &["GET", "r"]).expect("redis-cli");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "from-redis-cli"
            );
        }
        Err(e) => println!("redis-cli not run ({e}): install redis-tools to run this part"),
    }

    // synod kv --tls --cacert.
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .env("SYNOD_PASSWORD", TEST_PASSWORD)
        .args([
            "kv",
            "--addr",
            cluster.client(3),
            "--tls",
            "--cacert",
            &ca,
            "get",
            "k",
        ])
        .output()
        .expect("synod kv");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"v1\"");

    // A plain-text client is told why, in plain RESP, and closed.
    let mut plain = TcpStream::connect(cluster.client(1)).expect("connect");
    plain
        .write_all(&encode_command(&[b"GET", b"k"]))
        .expect("write");
    let told = String::from_utf8_lossy(&read_to_close(&mut plain)).to_string();
    assert!(
        told.starts_with("-ERR this port speaks TLS only"),
        "{told:?}"
    );
    assert!(!told.contains("v1"));

    // Garbage that starts like a TLS record closes that connection only.
    let mut garbage = TcpStream::connect(cluster.client(1)).expect("connect");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .expect("write");
    let _ = read_to_close(&mut garbage);

    // A peer whose certificate another authority signed, claiming to be node 3.
    let foreign = authority(cluster.dir.path(), "foreign");
    let peers = cluster
        .addrs
        .iter()
        .enumerate()
        .map(|(i, (peer, _))| format!("{}={peer}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let options = NodeOptions::new(
        3,
        &cluster.addrs[2].0,
        Some("127.0.0.1:0"),
        &peers,
        cluster.dir.path(),
    )
    .expect("options");
    let rogue_tls = NodeTls::load(foreign, 3, options.peers()).expect("foreign TLS");
    let rogue = TcpTransport::bind_layered(
        Config::builder(ClusterId(options.cluster_id()), NodeId::new(3))
            .build()
            .expect("config"),
        "127.0.0.1:0",
        rogue_tls.peers(),
        None,
    )
    .expect("bind");
    let node1_peer: std::net::SocketAddr = cluster.addrs[0].0.parse().expect("addr");
    rogue.add_peer(NodeId::new(1), node1_peer);
    let _ = rogue.send(NodeId::new(1), Bytes::from_static(b"a vote, perhaps"));
    let deadline = Instant::now() + DEADLINE;
    while !cluster
        .logs()
        .contains("refused a peer connection from 127.0.0.1:")
    {
        assert!(
            Instant::now() < deadline,
            "no refusal logged\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rogue.stats().connections_established, 0);
    println!(
        "{}",
        cluster
            .logs()
            .lines()
            .find(|l| l.contains("refused a peer"))
            .unwrap_or_default()
    );
    // The cluster keeps serving, and took nothing from the rogue.
    cluster.settle(2, &["SET", "k", "v2"], &ok());
    cluster.settle(1, &["GET", "k"], &bulk("v2"));
}

#[test]
fn the_register_and_the_leaderless_store_replicate_over_tls() {
    for system in ["register", "leaderless"] {
        let cluster = TlsCluster::up(system);
        cluster.settle(1, &["SET", "k", system], &ok());
        for id in 2..=3 {
            cluster.settle_value(id, "k", system);
        }
        // Plain text is refused here too.
        let mut plain = TcpStream::connect(cluster.client(2)).expect("connect");
        plain.write_all(&encode_command(&[b"PING"])).expect("write");
        let told = String::from_utf8_lossy(&read_to_close(&mut plain)).to_string();
        assert!(
            told.starts_with("-ERR this port speaks TLS only"),
            "{system}: {told:?}"
        );
    }
}

#[test]
fn tls_without_the_peer_secret_does_not_let_a_node_listen_open_on_the_network() {
    // A certificate is not tied to a node id: any holder of one the CA signed could claim
    // a member's id, so TLS alone is not a member's proof and the secret is still asked for.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = authority(dir.path(), "only");
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{TEST_PASSWORD}\n")).expect("write");
    let open = format!("0.0.0.0:{}", free_port_on("127.0.0.1"));
    let (code, err) = crate::core_cluster::synod(
        &[
            "node",
            "--id",
            "1",
            "--listen",
            &open,
            "--client",
            "127.0.0.1:0",
            "--peers",
            &format!("1={open}"),
            "--password-file",
            password.to_str().expect("utf-8 path"),
            "--tls-cert-file",
            files.cert.to_str().expect("utf-8 path"),
            "--tls-key-file",
            files.key.to_str().expect("utf-8 path"),
            "--tls-ca-file",
            files.ca.to_str().expect("utf-8 path"),
        ],
        &dir.path().join("d"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("not a loopback address") && err.contains("--peer-secret-file"),
        "{err}"
    );
}
