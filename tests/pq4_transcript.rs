//! A join recorded with the noise keys revealed later does not yield the network secret (issue 12:
//! "harvest now, decrypt later").
//!
//! How the test reveals noise: a relay between the joiner and the seed holds both nodes' libp2p
//! identity keys (the test installs the joiner's and reads the seed's `node.key`), so it ends one
//! real noise XX session with the joiner (as the seed) and opens another with the seed (as the
//! joiner), and relays the decrypted bytes while it records them. Those bytes are exactly what a
//! passive attacker who recorded the TCP stream and later broke X25519 (the static and ephemeral
//! Diffie-Hellman keys of the session) would read: noise is the only layer under X25519, and what
//! it carries — multistream-select, yamux frames, the Join request and answer in CBOR — is
//! relayed unchanged (the real `constella join` and the real seed speak through it and the join
//! succeeds). The test reassembles every yamux stream in both directions and checks that the
//! network secret (raw or hex), the bot token and its secret half appear nowhere, while the
//! invite token, the joiner's name and the seed's name do (so the decryption demonstrably
//! worked and the test can fail); and that the joiner did receive the secret: only the PQ4 seal
//! (X448 + ML-KEM-1024) carried it.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Cluster, Node};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::identity::Keypair;
use libp2p::noise;
use libp2p::tcp::tokio::TcpStream;

const TOKEN: &str = "123456789:AAHfakeTokenForConstellaTests_0123456789";
const TOKEN_SECRET: &str = "AAHfakeTokenForConstellaTests_0123456789";
const MULTISTREAM: &[u8] = b"/multistream/1.0.0\n";
const NOISE: &[u8] = b"/noise\n";

/// One multistream-select message: unsigned-varint length, then the line.
fn ms_message(line: &[u8]) -> Vec<u8> {
    assert!(line.len() < 128);
    [&[line.len() as u8][..], line].concat()
}

async fn read_ms_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 1];
    stream.read_exact(&mut len).await.unwrap();
    assert!(
        len[0] < 128,
        "a multistream line longer than this test reads"
    );
    let mut line = vec![0u8; usize::from(len[0])];
    stream.read_exact(&mut line).await.unwrap();
    line
}

/// Both directions of the decrypted stream, as relayed.
#[derive(Default)]
struct Recording {
    joiner_to_seed: Vec<u8>,
    seed_to_joiner: Vec<u8>,
}

/// Relays one connection from the joiner to the seed, ending noise on both sides.
async fn relay(
    inbound: tokio::net::TcpStream,
    seed_addr: String,
    (seed_key, joiner_key): (Keypair, Keypair),
    recording: Arc<Mutex<Recording>>,
) {
    let mut inbound = TcpStream(inbound);
    // The joiner proposes noise (multistream-select, as libp2p's dialer does); we accept.
    assert_eq!(read_ms_message(&mut inbound).await, MULTISTREAM);
    assert_eq!(read_ms_message(&mut inbound).await, NOISE);
    inbound
        .write_all(&[ms_message(MULTISTREAM), ms_message(NOISE)].concat())
        .await
        .unwrap();
    let (joiner, from_joiner) = noise::Config::new(&seed_key)
        .unwrap()
        .upgrade_inbound(inbound, "/noise")
        .await
        .expect("noise with the joiner");
    assert_eq!(joiner, joiner_key.public().to_peer_id());

    let mut outbound = TcpStream(tokio::net::TcpStream::connect(seed_addr).await.unwrap());
    outbound
        .write_all(&[ms_message(MULTISTREAM), ms_message(NOISE)].concat())
        .await
        .unwrap();
    assert_eq!(read_ms_message(&mut outbound).await, MULTISTREAM);
    assert_eq!(read_ms_message(&mut outbound).await, NOISE);
    let (seed, to_seed) = noise::Config::new(&joiner_key)
        .unwrap()
        .upgrade_outbound(outbound, "/noise")
        .await
        .expect("noise with the seed");
    assert_eq!(seed, seed_key.public().to_peer_id());

    let (mut joiner_read, mut joiner_write) = from_joiner.split();
    let (mut seed_read, mut seed_write) = to_seed.split();
    let up = {
        let recording = recording.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = joiner_read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                recording
                    .lock()
                    .unwrap()
                    .joiner_to_seed
                    .extend_from_slice(&buf[..n]);
                if seed_write.write_all(&buf[..n]).await.is_err()
                    || seed_write.flush().await.is_err()
                {
                    break;
                }
            }
            let _ = seed_write.close().await;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = seed_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            recording
                .lock()
                .unwrap()
                .seed_to_joiner
                .extend_from_slice(&buf[..n]);
            if joiner_write.write_all(&buf[..n]).await.is_err()
                || joiner_write.flush().await.is_err()
            {
                break;
            }
        }
        let _ = joiner_write.close().await;
    };
    futures::future::join(up, down).await;
}

/// The data of every yamux stream in one direction, reassembled from the frames (12-byte
/// header: version, type, flags, stream id, length; only data frames carry a payload).
fn yamux_streams(bytes: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    let mut streams: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    // First the multiplexer is negotiated: "/multistream/1.0.0\n", "/yamux/1.0.0\n".
    let mut at = 0;
    for expected in [MULTISTREAM, b"/yamux/1.0.0\n"] {
        let len = usize::from(bytes[at]);
        assert_eq!(
            &bytes[at + 1..at + 1 + len],
            expected,
            "no multiplexer negotiation"
        );
        at += 1 + len;
    }
    while at + 12 <= bytes.len() {
        let header = &bytes[at..at + 12];
        assert_eq!(
            header[0], 0,
            "not a yamux frame at {at}: the relay lost the framing"
        );
        let kind = header[1];
        let stream = u32::from_be_bytes(header[4..8].try_into().unwrap());
        let length = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
        at += 12;
        if kind == 0 {
            let end = (at + length).min(bytes.len());
            streams
                .entry(stream)
                .or_default()
                .extend_from_slice(&bytes[at..end]);
            at = end;
        }
    }
    streams
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_join_recorded_with_the_noise_keys_revealed_does_not_yield_the_secret() {
    let cluster = Cluster::start_with(&["alpha"], &[10], None, |node: &mut Node| {
        node.init_args = vec!["--bot-token".into(), TOKEN.into()];
        // A Bot API that is not there: the bot's polling fails quietly, the token stays set.
        node.run_args = vec!["--telegram-api-url".into(), "http://127.0.0.1:9/".into()];
    });
    let alpha = cluster.node("alpha");
    let seed_key =
        Keypair::from_protobuf_encoding(&std::fs::read(alpha.dir.join("node.key")).unwrap())
            .unwrap();
    let joiner_key = Keypair::generate_ed25519();
    let bravo = Node::new(cluster.root.path(), "bravo");
    bravo.install_key(&joiner_key);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let relay_addr = listener.local_addr().unwrap().to_string();
    let recording = Arc::new(Mutex::new(Recording::default()));
    {
        let (recording, seed_addr) = (recording.clone(), alpha.addr());
        let keys = (seed_key.clone(), joiner_key.clone());
        runtime.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(
                    inbound,
                    seed_addr.clone(),
                    keys.clone(),
                    recording.clone(),
                ));
            }
        });
    }

    // The joiner dials the relay instead of the seed; everything else in the link is the seed's.
    let link = alpha.invite("5m");
    let relayed = link.replacen(&alpha.addr(), &relay_addr, 1);
    assert_ne!(relayed, link);
    cluster.or_logs(|| bravo.ok_owned(&bravo.join_args(&relayed, 20)));
    // Every byte either side read went through the recording first: nothing to wait for.
    let recording = recording.lock().unwrap();

    let secret_hex = alpha.state_json().unwrap()["network_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_raw = hex::decode(&secret_hex).unwrap();
    let joined: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bravo.dir.join("network_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        joined["network_secret"],
        secret_hex.as_str(),
        "the joiner got the secret"
    );

    let up = yamux_streams(&recording.joiner_to_seed);
    let down = yamux_streams(&recording.seed_to_joiner);
    let all_up: Vec<u8> = up.values().flatten().copied().collect();
    let all_down: Vec<u8> = down.values().flatten().copied().collect();
    println!(
        "recorded: {} bytes to the seed ({} streams), {} bytes back ({} streams)",
        recording.joiner_to_seed.len(),
        up.len(),
        recording.seed_to_joiner.len(),
        down.len()
    );
    // The decryption worked: what the join says in the clear is there.
    let token = link
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        contains(&all_up, b"/constella/join"),
        "no join protocol in the transcript"
    );
    assert!(
        contains(&all_up, token.as_bytes()),
        "the invite token is not in the transcript"
    );
    assert!(
        contains(&all_up, b"bravo"),
        "the joiner's name is not in the transcript"
    );
    assert!(
        contains(&all_down, b"alpha"),
        "the seed's answer is not in the transcript"
    );
    // And what only the PQ4 seal carries is not, in either direction, framed or not.
    for (what, needle) in [
        ("the network secret (hex)", secret_hex.as_bytes()),
        ("the network secret (raw)", &secret_raw[..]),
        ("the bot token", TOKEN.as_bytes()),
        ("the bot token's secret half", TOKEN_SECRET.as_bytes()),
    ] {
        for (direction, bytes) in [
            ("joiner to seed", &all_up),
            ("seed to joiner", &all_down),
            ("joiner to seed, raw", &recording.joiner_to_seed),
            ("seed to joiner, raw", &recording.seed_to_joiner),
        ] {
            assert!(
                !contains(bytes, needle),
                "{what} is readable in the decrypted {direction} transcript"
            );
        }
    }
    drop(recording);
    runtime.shutdown_background();
}
