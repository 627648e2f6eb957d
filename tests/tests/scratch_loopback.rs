//! SCRATCH (to delete): validates the test peers against a tiny rtc ICE-lite answerer.

use bytes::BytesMut;
use golive_e2e::media::{MediaKind, SyntheticSource};
use golive_e2e::{TestPeer, VideoCodec};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

async fn answerer(
    offer: &str,
    send: bool,
) -> (
    RTCPeerConnection,
    UdpSocket,
    String,
    Vec<(RtpCodecKind, RTCRtpSenderId, u32, u8)>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let reg = register_default_interceptors(Registry::new(), &mut me).unwrap();
    let se = SettingEngineBuilder::new()
        .with_lite(true)
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(se)
        .with_media_engine(me)
        .with_interceptor_registry(reg)
        .build(Instant::now())
        .unwrap();
    pc.set_remote_description(
        Instant::now(),
        RTCSessionDescription::offer(offer.to_owned()).unwrap(),
    )
    .unwrap();
    let mut senders = vec![];
    if send {
        for (kind, mime, pt, clock, ch) in [
            (RtpCodecKind::Audio, "audio/opus", 111u8, 48000, 2),
            (RtpCodecKind::Video, "video/VP8", 96, 90000, 0),
        ] {
            let ssrc = 1000 + pt as u32;
            let track = MediaStreamTrack::new(
                "s".into(),
                format!("t{pt}"),
                "l".into(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
                        mime_type: mime.into(),
                        clock_rate: clock,
                        channels: ch,
                        sdp_fmtp_line: String::new(),
                        rtcp_feedback: vec![],
                    },
                    ..Default::default()
                }],
            );
            let id = pc.add_track(track).unwrap();
            senders.push((kind, id, ssrc, pt));
        }
    }
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: "127.0.0.1".into(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    pc.add_local_candidate(RTCIceCandidate::from(&c).to_json().unwrap())
        .unwrap();
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .unwrap();
    let answer = pc.create_answer(None).unwrap();
    pc.set_local_description(Instant::now(), answer).unwrap();
    let sdp = pc.local_description().unwrap().sdp;
    (pc, socket, sdp, senders)
}

async fn drive(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    senders: Vec<(RtpCodecKind, RTCRtpSenderId, u32, u8)>,
    dur: Duration,
) -> (usize, bool) {
    let local = socket.local_addr().unwrap();
    let end = Instant::now() + dur;
    let mut buf = vec![0u8; 2000];
    let mut got = 0;
    let mut connected = false;
    let mut pli_sent = false;
    let mut src = SyntheticSource::new(99);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0u32;
    let mut receivers: Vec<(RTCRtpReceiverId, u32)> = vec![];
    while Instant::now() < end {
        while let Some(m) = pc.poll_write() {
            let _ = socket.send_to(&m.message, m.transport.peer_addr).await;
        }
        while let Some(e) = pc.poll_event() {
            match e {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                    eprintln!("answerer state {s}");
                    if s == RTCPeerConnectionState::Connected {
                        connected = true;
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    receivers.push((init.receiver_id, init.ssrc))
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = pc.poll_read() {
            if let RTCMessage::RtpPacket(_, _) = message {
                got += 1;
            }
        }
        if got > 40 && !pli_sent {
            for (rid, ssrc) in receivers.clone() {
                if let Some(mut r) = pc.rtp_receiver(rid) {
                    if r.track().kind() == RtpCodecKind::Video {
                        r.write_rtcp(
                            Instant::now(),
                            vec![Box::new(PictureLossIndication {
                                sender_ssrc: 1,
                                media_ssrc: ssrc,
                            })],
                        )
                        .unwrap();
                        pli_sent = true;
                    }
                }
            }
        }
        let d = pc
            .poll_timeout()
            .unwrap_or(Instant::now() + Duration::from_millis(100))
            .saturating_duration_since(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(d) => { let _ = pc.handle_timeout(Instant::now()); }
            r = socket.recv_from(&mut buf) => { let (len, peer) = r.unwrap(); let _ = pc.handle_read(TaggedBytesMut { now: Instant::now(), transport: TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP }, message: BytesMut::from(&buf[..len]) }); }
            _ = tick.tick(), if connected && !senders.is_empty() => {
                n += 1;
                let mut pkts = vec![src.next_audio_packet(Duration::ZERO)];
                if n % 3 == 0 { pkts.extend(src.next_video_frame(Duration::ZERO)); }
                for p in pkts {
                    let want = if p.kind == MediaKind::Audio { RtpCodecKind::Audio } else { RtpCodecKind::Video };
                    let (_, id, ssrc, pt) = *senders.iter().find(|s| s.0 == want).unwrap();
                    let pkt = rtc::rtp::Packet { header: rtc::rtp::header::Header { version: 2, marker: p.marker, payload_type: pt, sequence_number: p.sequence_number, timestamp: p.timestamp, ssrc, ..Default::default() }, payload: p.payload };
                    if let Err(e) = pc.rtp_sender(id).unwrap().write_rtp(Instant::now(), pkt) { eprintln!("answerer write_rtp: {e}"); }
                }
            }
        }
    }
    (got, pli_sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_publisher_connects_sends_and_sees_pli() {
    golive_e2e::init_logging();
    let offered = TestPeer::publisher().await.unwrap();
    eprintln!("OFFER:\n{}", offered.sdp());
    let (pc, sock, answer, senders) = answerer(offered.sdp(), false).await;
    eprintln!("ANSWER:\n{answer}");
    let peer = offered.connect(&answer).unwrap();
    let h = tokio::spawn(drive(pc, sock, senders, Duration::from_secs(4)));
    peer.wait_connected(Duration::from_secs(5)).await.unwrap();
    let (got, pli) = h.await.unwrap();
    let rec = peer.snapshot();
    eprintln!(
        "answerer got {got} RTP, pli_sent {pli}; publisher sent {} kreqs {:?} errors {:?}",
        rec.sent.len(),
        rec.keyframe_requests,
        rec.errors
    );
    assert!(got > 100);
    assert!(!rec.keyframe_requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_viewer_connects_and_records() {
    let offered = TestPeer::viewer(VideoCodec::Vp8).await.unwrap();
    eprintln!("VIEWER OFFER:\n{}", offered.sdp());
    let (pc, sock, answer, senders) = answerer(offered.sdp(), true).await;
    eprintln!("ANSWER:\n{answer}");
    let peer = offered.connect(&answer).unwrap();
    let h = tokio::spawn(drive(pc, sock, senders, Duration::from_secs(3)));
    peer.wait_connected(Duration::from_secs(5)).await.unwrap();
    h.await.unwrap();
    let rec = peer.snapshot();
    eprintln!(
        "viewer got {} audio {} video errors {:?}",
        rec.received_of(MediaKind::Audio).len(),
        rec.received_of(MediaKind::Video).len(),
        rec.errors
    );
    assert!(rec.received_of(MediaKind::Audio).len() > 50);
    assert!(rec.received_of(MediaKind::Video).len() > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_h264_viewer_offer() {
    let offered = TestPeer::viewer(VideoCodec::H264).await.unwrap();
    eprintln!("H264 OFFER:\n{}", offered.sdp());
}
