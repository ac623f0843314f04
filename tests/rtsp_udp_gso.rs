//! RTP over UDP with segmentation offload (one send carrying many packets, cut by the kernel)
//! and without it (`FERROCAST_UDP_GSO=off`, the path taken when the kernel refuses GSO): a
//! live RTSP/UDP session gets separate RTP packets, sequenced one by one, whose transport
//! stream ffmpeg decodes without errors. The same holds with the point-wide fan-out (the
//! default, which takes over a session's sending once it has caught up) and without it
//! (`FERROCAST_UDP_FANOUT=off`, every session sending its own chunks).

use std::time::Duration;

use ferrocast_tests::rtsp_rig::{standard_points_over, RtspRig};
use ferrocast_tests::watch::RtpWatch;
use ferrocast_tests::*;

/// Start the server (with `env`) serving a live point over RTSP/UDP, push to it, and watch
/// one session for a few seconds.
fn watch_live_over_udp(env: &[(&str, &str)]) -> (RtspRig, RtpWatch) {
    let rig = RtspRig::start_with(&["udp"], &standard_points_over(&["rtsp", "udp"]), "", env);
    let (server, rtsp) = (&rig.server, rig.rtsp);
    let mut encoder = Encoder::push_live(server, 8);
    let watch = RtpWatch::rtsp_udp(rtsp, "live");
    assert!(
        watch.wait_packets(200, Duration::from_secs(10)),
        "{}: too few RTP packets\n{}",
        watch.label,
        server.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    watch.stop();
    encoder.wait(Duration::from_secs(15));
    (rig, watch)
}

fn assert_sequenced_and_decodable(server: &Ferrocast, watch: &RtpWatch) {
    // A datagram holding several packets would show as a jump in the sequence numbers.
    assert_eq!(watch.seq_gaps(), vec![], "{}", server.logs());
    assert_eq!(watch.continuity_errors(), Vec::<String>::new());
    assert_decodes(server.dir.path(), &watch.transport_stream(), 50);
}

#[test]
fn rtp_over_udp_with_segmentation_offload_arrives_packet_by_packet_and_decodes() {
    let (rig, watch) = watch_live_over_udp(&[("FERROCAST_UDP_FANOUT", "off")]);
    let server = &rig.server;
    assert_sequenced_and_decodable(server, &watch);
    assert!(
        !server.logs().contains("UDP_GSO_REFUSED"),
        "this kernel refused GSO, so the offload path was not tested:\n{}",
        server.logs()
    );
}

#[test]
fn rtp_over_udp_without_segmentation_offload_arrives_packet_by_packet_and_decodes() {
    let (rig, watch) = watch_live_over_udp(&[("FERROCAST_UDP_GSO", "off")]);
    let server = &rig.server;
    assert_sequenced_and_decodable(server, &watch);
    assert!(server
        .logs()
        .contains("UDP segmentation offload turned off"));
}

#[test]
fn rtp_over_udp_from_the_point_wide_fan_out_arrives_packet_by_packet_and_decodes() {
    let (rig, watch) = watch_live_over_udp(&[]);
    let server = &rig.server;
    assert_sequenced_and_decodable(server, &watch);
    assert!(
        server.logs().contains("RTP/UDP fan-out started"),
        "the session never handed its sending to the point's fan-out:\n{}",
        server.logs()
    );
}
