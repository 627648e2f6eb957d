use super::*;
use rtc::dtls::config::ConfigBuilder;

/// DTLS content type of a handshake record, and where a record's first handshake message type
/// sits (13-byte record header).
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_TYPE_AT: usize = 13;
const HELLO_VERIFY_REQUEST: u8 = 3;
const SERVER_HELLO: u8 = 2;

fn client_config(crypto: &Arc<dyn RTCCryptoProvider>) -> Arc<HandshakeConfig> {
    let cert = rtc::dtls::crypto::Certificate::generate_self_signed(
        vec!["viewer".to_owned()],
        crypto.crypto(),
    )
    .expect("certificate");
    Arc::new(
        ConfigBuilder::default()
            .with_crypto_provider(crypto.clone())
            .with_certificates(vec![cert])
            .with_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm])
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(true, None)
            .expect("client config"),
    )
}

/// Why the lean leg still pays the cookie round trip: `rtc-dtls`'s server answers a ClientHello
/// without a cookie with a HelloVerifyRequest, always. Its server flights (`Flight0` to
/// `Flight2`) are crate-private and no configuration skips the second; RFC 6347 §4.2.1 allows a
/// server to skip it, and with ICE having proven the address it would save one round trip. If
/// this test fails, `rtc-dtls` learned to skip it: then the lean leg's handshake should use that.
#[test]
fn the_dtls_server_always_asks_for_a_cookie() {
    let now = Instant::now();
    let shared = Shared::new(now, SrtpPolicy::default()).expect("shared");
    let client_addr: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let server_addr: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
    let mut client = Endpoint::new(client_addr, TransportProtocol::UDP, None);
    client
        .connect(now, server_addr, client_config(&shared.crypto), None)
        .expect("client starts");
    let hello = client.poll_transmit().expect("a ClientHello").message;
    assert_eq!(hello[0], CONTENT_HANDSHAKE);

    let mut server = Endpoint::new(
        server_addr,
        TransportProtocol::UDP,
        Some(shared.dtls.clone()),
    );
    server
        .read(now, client_addr, None, hello)
        .expect("the server reads the ClientHello");
    let reply = server.poll_transmit().expect("the server answers").message;
    assert_eq!(reply[0], CONTENT_HANDSHAKE);
    assert_eq!(reply[HANDSHAKE_TYPE_AT], HELLO_VERIFY_REQUEST);
    assert_ne!(reply[HANDSHAKE_TYPE_AT], SERVER_HELLO);
}

#[test]
fn fingerprints_are_written_as_sdp_writes_them() {
    assert_eq!(hex_colons(&[0x0a, 0xff, 0x10], true), "0A:FF:10");
    assert_eq!(hex_colons(&[0x0a, 0xff], false), "0a:ff");
}
