mod sim;
use golive_sfu::PeerId;
use sim::{Kind, Sim, ms};
#[test]
fn debug() {
    let mut s = Sim::new();
    let p = s.add_publisher(PeerId(1), "live", 100000);
    s.run_until_connected(&[p], ms(5000));
    s.run_for(ms(500));
    let d0 = s.client(p).rtcp_datagrams;
    let v = s.add_viewer(PeerId(2), "live");
    s.run_until_connected(&[v], ms(5000));
    eprintln!("after connect: pli_sent {} pub rtcp dgrams {} -> {} plis {:?}", s.sfu.stats().pli_sent, d0, s.client(p).rtcp_datagrams, s.client(p).plis);
    s.run_for(ms(1000));
    eprintln!("later: stats {:?} pub rtcp dgrams {} rtcp_packets {} video {}", s.sfu.stats(), s.client(p).rtcp_datagrams, s.client(p).rtcp_packets, s.client(v).received_of(Kind::Video).len());
}
struct L;
impl log::Log for L {
    fn enabled(&self, m: &log::Metadata) -> bool { m.level() <= log::Level::Debug }
    fn log(&self, r: &log::Record) { if self.enabled(r.metadata()) { eprintln!("{} {}: {}", r.level(), r.target(), r.args()); } }
    fn flush(&self) {}
}
#[test]
fn zlog() { log::set_logger(&L).unwrap(); log::set_max_level(log::LevelFilter::Debug); debug(); }
