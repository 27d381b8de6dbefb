//! Clusters of real `synod node` processes with TLS on (certificates made here with rcgen):
//! `redis-cli --tls --cacert` and `synod kv --tls --cacert` work, a plain-text client is
//! told the port speaks TLS only and closed, garbage in place of a ClientHello closes that
//! connection alone, a peer whose certificate another authority signed is refused and
//! logged with its address while the cluster keeps serving, a TLS client reading late gets
//! its last reply before its connection is closed, and each reference system
//! (Consistent Core, register, leaderless) replicates a write over its TLS peer links. Every
//! node runs with a client password and the cluster's secret as well as TLS: all three
//! together.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use synod_examples::resp::Value;
use synod_examples::resp::client::{encode_command, reply_limits};
use synod_examples::runtime::NodeOptions;
use synod_examples::runtime::auth::PeerSecret;
use synod_examples::runtime::tls::{
    NodeTls, TLS_HANDSHAKE_TIMEOUT, TlsFiles, client_config, node_name,
};
use synod_transport::{ClusterId, Config, NodeId, TcpTransport};

use crate::core_cluster::{DEADLINE, TEST_PASSWORD, free_port_on, names_itself, secure_args};

/// A CA made by the test, which signs node certificates.
struct Authority {
    dir: std::path::PathBuf,
    name: String,
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA's certificate, as a PEM file.
    ca: std::path::PathBuf,
}

impl Authority {
    /// A new CA called `name`, its files in `dir`.
    fn new(dir: &Path, name: &str) -> Authority {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).expect("CA");
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("write PEM");
        Authority {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cert,
            key,
            ca,
        }
    }

    /// Node `id`'s certificate and key, for `localhost`, 127.0.0.1 and its node name
    /// (`node-ID.synod`), as PEM files (`NAME-ID-cert.pem`, `NAME-ID-key.pem`).
    fn node(&self, id: u64) -> TlsFiles {
        let key = KeyPair::generate().expect("key");
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            node_name(id),
        ];
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        let write = |what: &str, pem: String| {
            let path = self.dir.join(format!("{}-{id}-{what}.pem", self.name));
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        TlsFiles {
            ca: self.ca.clone(),
            cert: write("cert", cert.pem()),
            key: write("key", key.serialize_pem()),
            client_auth: false,
        }
    }
}

/// A cluster of three nodes of `system` with TLS on, a client password and the cluster's
/// secret.
struct TlsCluster {
    dir: tempfile::TempDir,
    authority: Authority,
    /// Each node's peer and client address.
    addrs: Vec<(String, String)>,
    children: Vec<Child>,
}

impl TlsCluster {
    /// The options of a process claiming to be node `id` of this cluster, listening at its
    /// peer address.
    fn options_as(&self, id: usize) -> NodeOptions {
        let peers = self
            .addrs
            .iter()
            .enumerate()
            .map(|(i, (peer, _))| format!("{}={peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        NodeOptions::new(
            id as u64,
            &self.addrs[id - 1].0,
            Some("127.0.0.1:0"),
            &peers,
            self.dir.path(),
        )
        .expect("options")
    }

    /// Three nodes of `system`, each answering on its client port. A port picked free can be
    /// taken by another test's process before its node binds it: such a cluster is stopped
    /// and started afresh on new ports.
    fn up(system: &str) -> TlsCluster {
        crate::core_cluster::up_afresh(
            || TlsCluster::start(system),
            |cluster| (1..=3).all(|id| names_itself(&cluster.call(id, &["INFO"]), id)),
            TlsCluster::logs,
        )
    }

    fn start(system: &str) -> TlsCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let authority = Authority::new(dir.path(), "cluster");
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
                let files = authority.node(id as u64);
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
            authority,
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
        tls_call(self.client(id), &self.authority.ca, command)
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
        TlsConn::over(TcpStream::connect(addr)?, ca)
    }

    /// A client connection over TLS on the connected `socket`.
    fn over(socket: TcpStream, ca: &Path) -> std::io::Result<TlsConn> {
        let config = client_config(ca).map_err(std::io::Error::other)?;
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

/// Everything the node sends before it closes the connection; fails the test if the node
/// has not closed it (end of stream or a reset) within [`DEADLINE`].
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the node did not close the connection within {DEADLINE:?}: {e}"),
    }
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
    let anonymous = tls_call_as(
        cluster.client(1),
        &cluster.authority.ca,
        None,
        &["GET", "k"],
    );
    assert_eq!(
        anonymous.expect("a reply"),
        Value::Error("NOAUTH Authentication required.".into())
    );

    // A subscribed connection gets its pushed messages over TLS, as replies are.
    let channel = "__keyspace@0__:watched";
    let mut subscriber = TlsConn::open(cluster.client(2), &cluster.authority.ca).expect("TLS");
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
    let ca = cluster.authority.ca.to_str().unwrap().to_string();
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
    // Closed (the read ends), with at most a TLS alert for bytes that are not a ClientHello.
    let answered = read_to_close(&mut garbage);
    assert!(answered.len() < 64, "{answered:?}");

    // A peer whose certificate another authority signed, claiming to be node 3.
    let foreign = Authority::new(cluster.dir.path(), "foreign").node(3);
    let options = cluster.options_as(3);
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

/// A TLS client that reads its replies late still gets every one, then the error that
/// closes its connection, then the end: the node closes a TLS connection once its encrypted
/// records have gone out, not while they wait for the socket to take them.
#[test]
fn a_tls_client_reading_late_gets_its_reply_and_the_error_that_closes_its_connection() {
    let cluster = TlsCluster::up("consistent-core");
    // Replies smaller and larger than what the node encrypts at a time (64 KiB, rustls's
    // buffer), each on a connection whose small receive buffer makes its sockets hold less.
    for size in [16 << 10, 80 << 10, 256 << 10, 768 << 10] {
        cluster.settle(1, &["SET", "big", &"v".repeat(size)], &ok());
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(4 << 10).expect("SO_RCVBUF");
        let addr: std::net::SocketAddr = cluster.client(1).parse().expect("address");
        socket.connect(&addr.into()).expect("connect");
        let mut conn = TlsConn::over(socket.into(), &cluster.authority.ca).expect("TLS");
        assert_eq!(conn.call(&["AUTH", TEST_PASSWORD]).expect("AUTH"), ok());
        // A GET, then bytes that are no command: the node answers the GET, then a protocol
        // error, and closes.
        let mut pipelined = encode_command(&[b"GET", b"big"]);
        pipelined.extend_from_slice(b"*1\r\n$x\r\n");
        conn.stream.write_all(&pipelined).expect("sent");
        conn.stream.flush().expect("sent");
        // The client's pace: it reads only after a while, when the node has long written
        // what the sockets hold.
        std::thread::sleep(Duration::from_millis(300));
        let reply = conn.next();
        assert!(
            matches!(&reply, Ok(Value::Bulk(v)) if v.len() == size),
            "a reply of {size} bytes: {:?}",
            reply.map(|v| match v {
                Value::Bulk(b) => format!("{} bytes", b.len()),
                other => format!("{other:?}"),
            })
        );
        let end = conn.next();
        assert!(
            matches!(&end, Ok(Value::Error(e)) if e.contains("Protocol error")),
            "after a reply of {size} bytes: {end:?}\n{}",
            cluster.logs()
        );
        assert!(conn.next().is_err(), "the connection stays open");
    }
}

/// A member's certificate names its node id: a process holding node 3's certificate (from
/// the cluster's own CA) and the cluster's secret, claiming to be node 2, is refused by node
/// 1 before its hello is answered, and logged with its address; the cluster keeps serving.
#[test]
fn a_members_certificate_cannot_speak_as_another_member() {
    let cluster = TlsCluster::up("consistent-core");
    cluster.settle(1, &["SET", "k", "v1"], &ok());
    let options = cluster.options_as(2);
    // Node 3's certificate, valid for node 3 alone.
    let stolen = NodeTls::load(cluster.authority.node(3), 3, options.peers()).expect("TLS");
    let secret = std::fs::read(cluster.dir.path().join("peer-secret")).expect("secret");
    let secret = PeerSecret::new(&secret, 2).expect("secret");
    let rogue = TcpTransport::bind_layered(
        Config::builder(ClusterId(options.cluster_id()), NodeId::new(2))
            .authenticator(Arc::new(secret))
            .build()
            .expect("config"),
        "127.0.0.1:0",
        stolen.peers(),
        None,
    )
    .expect("bind");
    let node1_peer: std::net::SocketAddr = cluster.addrs[0].0.parse().expect("addr");
    rogue.add_peer(NodeId::new(1), node1_peer);
    let _ = rogue.send(NodeId::new(1), Bytes::from_static(b"a vote, perhaps"));
    let deadline = Instant::now() + DEADLINE;
    let refusal = loop {
        let logs = cluster.logs();
        if let Some(line) = logs.lines().find(|l| l.contains("it claims to be node 2")) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no refusal logged (established {})\n{logs}",
            rogue.stats().connections_established
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        refusal.contains("refused a peer connection from 127.0.0.1:"),
        "{refusal}"
    );
    assert!(refusal.contains(&node_name(2)), "{refusal}");
    assert_eq!(rogue.stats().connections_established, 0);
    cluster.settle(2, &["SET", "k", "v2"], &ok());
    cluster.settle(1, &["GET", "k"], &bulk("v2"));
}

/// A stranger that sends a TLS ClientHello a byte now and then, never finishing it, is cut
/// at the transport's handshake deadline (here 300 ms), as a plain hello is: long before
/// the client port's own TLS bound, and however often a byte arrives.
#[test]
fn a_client_hello_trickled_to_the_peer_port_is_cut_at_the_transport_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Authority::new(dir.path(), "cluster").node(1);
    let peers = [(1, "127.0.0.1:1".to_string())].into_iter().collect();
    let tls = NodeTls::load(files, 1, &peers).expect("TLS");
    let node = TcpTransport::bind_layered(
        Config::builder(ClusterId(7), NodeId::new(1))
            .connect_timeout_ms(300)
            .build()
            .expect("config"),
        "127.0.0.1:0",
        tls.peers(),
        None,
    )
    .expect("bind");
    // A handshake record that claims 2,000 bytes, sent a byte every 50 ms: it would take
    // 100 s to finish, and each byte comes well within any per-read timeout.
    let mut bytes = vec![0x16, 0x03, 0x01, 0x07, 0xd0];
    bytes.resize(2_005, 0x01);
    let mut stranger = TcpStream::connect(node.local_addr()).expect("connect");
    let mut writer = stranger.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for byte in bytes {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            // The stranger's pace, not a wait for a condition.
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    stranger
        .set_read_timeout(Some(TLS_HANDSHAKE_TIMEOUT / 2))
        .expect("timeout");
    let mut chunk = [0; 64];
    let closed = loop {
        match stranger.read(&mut chunk) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    };
    assert!(
        closed,
        "the peer port keeps a TLS handshake past the transport's deadline"
    );
    let _ = stranger.shutdown(std::net::Shutdown::Both);
    trickle.join().expect("trickle");
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
    // A certificate names a member of some cluster, not of this one: a CA that signs for
    // several clusters (or by mistake) makes another's node 1 pass as this one's. TLS alone
    // is not a member's proof, and the secret is still asked for.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Authority::new(dir.path(), "only").node(1);
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
