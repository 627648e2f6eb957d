//! Checks of what a viewer received against what the publisher sent. Each returns a message that
//! says what is wrong, so a failing test explains itself.

use crate::peer::{Record, TestPeer};
use anyhow::{Result, anyhow, bail, ensure};
use golive_client::{MediaKind, PayloadTypes, ReceivedPacket, TrackRun, check_track};
use std::time::{Duration, Instant};

/// Checks one track of a viewer against the publisher: at least `min_packets` arrived, then
/// everything [`check_track`] checks: each payload exactly what was sent, one SSRC, the payload
/// type the viewer offered, a contiguous run of the publisher's packets without a sequence gap,
/// the publisher's marker bits and timestamp steps.
pub fn forwarded_faithfully(
    publisher: &Record,
    viewer: &Record,
    kind: MediaKind,
    min_packets: usize,
) -> Result<TrackRun> {
    let got = viewer.received_of(kind);
    ensure!(
        got.len() >= min_packets,
        "{kind:?}: only {} packets received, expected at least {min_packets} (viewer errors: {:?})",
        got.len(),
        viewer.errors
    );
    let sent: Vec<_> = publisher.sent.iter().filter(|p| p.kind == kind).collect();
    let pt = PayloadTypes::default();
    let payload_type = match kind {
        MediaKind::Video => pt.vp8,
        MediaKind::Audio => pt.opus,
    };
    check_track(&sent, &got, payload_type, false).map_err(|e| anyhow!("{kind:?}: {e}"))
}

/// The layer (index into [`Record::layer_sources`]) of each run of a viewer's video that came
/// from one simulcast layer, in order: (layer, packets).
pub fn layer_runs<'a>(
    publisher: &Record,
    viewer: &'a Record,
) -> Result<Vec<(usize, Vec<&'a ReceivedPacket>)>> {
    let mut runs: Vec<(usize, Vec<&ReceivedPacket>)> = Vec::new();
    for r in viewer.received_of(MediaKind::Video) {
        let source = r
            .stamp
            .ok_or_else(|| anyhow!("a video packet without a stamp: {r:?}"))?
            .source_id;
        let layer = publisher
            .layer_sources
            .iter()
            .position(|s| *s == source)
            .ok_or_else(|| anyhow!("a video packet of no layer: {r:?}"))?;
        match runs.last_mut() {
            Some((l, packets)) if *l == layer => packets.push(r),
            _ => runs.push((layer, vec![r])),
        }
    }
    Ok(runs)
}

/// Checks a viewer's last run of simulcast video against what that layer sent (everything
/// [`check_track`] checks, at least `min_packets`, from a keyframe), and that the whole video
/// is one line (one SSRC, no sequence gap). Returns the layer of the last run.
pub fn last_layer_forwarded_faithfully(
    publisher: &Record,
    viewer: &Record,
    min_packets: usize,
) -> Result<usize> {
    let runs = layer_runs(publisher, viewer)?;
    let (layer, run) = runs.last().ok_or_else(|| anyhow!("no video received"))?;
    ensure!(
        run.len() >= min_packets,
        "layer {layer}: only {} packets in the last run, expected at least {min_packets}",
        run.len()
    );
    ensure!(
        run[0].keyframe_start,
        "the run of layer {layer} does not start at a keyframe"
    );
    let video = viewer.received_of(MediaKind::Video);
    let seqs: Vec<u16> = video.iter().map(|r| r.seq).collect();
    golive_client::verify::gap_free(&seqs).map_err(|e| anyhow!("video across layers: {e}"))?;
    ensure!(
        video.iter().all(|r| r.ssrc == video[0].ssrc),
        "more than one SSRC across layers"
    );
    let sent: Vec<_> = publisher.sent_of_layer(*layer).collect();
    check_track(&sent, run, PayloadTypes::default().vp8, false)
        .map_err(|e| anyhow!("layer {layer}: {e}"))?;
    Ok(*layer)
}

/// Waits until `viewer`'s latest run of video is simulcast `layer` of `publisher`, at least
/// `min_packets` long, then checks it with [`last_layer_forwarded_faithfully`] and that the
/// viewer saw no peer error. Returns the layer of every run the viewer saw, in order.
pub async fn wait_on_layer(
    publisher: &TestPeer,
    viewer: &TestPeer,
    layer: usize,
    min_packets: usize,
    timeout: Duration,
) -> Result<Vec<usize>> {
    let deadline = Instant::now() + timeout;
    loop {
        let sent = publisher.snapshot();
        let got = viewer.snapshot();
        let runs = layer_runs(&sent, &got)?;
        if let Some((l, run)) = runs.last()
            && *l == layer
            && run.len() >= min_packets
        {
            let on = last_layer_forwarded_faithfully(&sent, &got, min_packets)?;
            ensure!(on == layer, "on layer {on}, not {layer}");
            ensure!(got.errors.is_empty(), "viewer errors: {:?}", got.errors);
            return Ok(runs.iter().map(|(l, _)| *l).collect());
        }
        if Instant::now() >= deadline {
            let seen: Vec<(usize, usize)> = runs.iter().map(|(l, r)| (*l, r.len())).collect();
            bail!("not on layer {layer} within {timeout:?}; runs (layer, packets): {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that the first video packet a viewer received begins a VP8 key frame (S=1, PID=0, P=0).
pub fn first_video_starts_keyframe(viewer: &Record) -> Result<()> {
    let video = viewer.received_of(MediaKind::Video);
    let first = video.first().ok_or_else(|| anyhow!("no video received"))?;
    ensure!(
        first.keyframe_start,
        "the first video packet (seq {}, {} bytes, stamp {:?}) does not start a key frame",
        first.seq,
        first.payload_len,
        first.stamp
    );
    Ok(())
}

/// Generous minimum packet counts for "it is flowing" after a few seconds (the synthetic
/// publisher sends about 30 video and 50 audio packets a second).
pub const MIN_VIDEO_PACKETS: usize = 30;
pub const MIN_AUDIO_PACKETS: usize = 50;

/// Every viewer got a contiguous, byte-identical run of what the publisher sent, video and
/// audio, with at least the minimum packet counts, and its video starts at a keyframe; neither
/// side saw a peer error. Prints each viewer's runs.
pub fn every_viewer_got_the_broadcast(sent: &Record, viewers: &[Record]) -> Result<()> {
    ensure!(
        sent.errors.is_empty(),
        "publisher errors: {:?}",
        sent.errors
    );
    for (i, got) in viewers.iter().enumerate() {
        ensure!(got.errors.is_empty(), "viewer {i} errors: {:?}", got.errors);
        for (kind, min) in [
            (MediaKind::Video, MIN_VIDEO_PACKETS),
            (MediaKind::Audio, MIN_AUDIO_PACKETS),
        ] {
            let run = forwarded_faithfully(sent, got, kind, min)
                .map_err(|e| anyhow!("viewer {i}: {e:#}"))?;
            eprintln!("viewer {i} {kind:?}: {run:?}");
        }
        first_video_starts_keyframe(got).map_err(|e| anyhow!("viewer {i}: {e:#}"))?;
    }
    Ok(())
}
