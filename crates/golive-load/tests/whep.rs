//! `golive-load` with WHEP viewers and a WHIP publisher against the real `golive` binary: 20
//! viewers for 5 seconds on loopback, each signalling with one HTTP POST of its offer (201 with
//! the answer and a Location) and a DELETE at the end. Behaviour only, as in `load.rs`.

mod common;

use common::{assert_every_viewer_served, light_run, start_server};

const VIEWERS: usize = 20;

#[test]
fn twenty_whep_viewers_all_connect_receive_and_lose_nothing() {
    let server = start_server();
    let r = light_run(
        &server,
        "ci-whep",
        VIEWERS as u64,
        20,
        5,
        &["--protocol", "whep", "--publish-protocol", "whip"],
    );
    assert_every_viewer_served(&r, VIEWERS as u64);
    assert_eq!(
        r["delete_failures"].as_u64(),
        Some(0),
        "every DELETE is accepted"
    );
    assert_eq!(
        r["ws_messages_in"].as_u64(),
        Some(0),
        "no WebSocket is used"
    );
}
