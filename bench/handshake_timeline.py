#!/usr/bin/env python3
"""The ICE and DTLS handshake of each WebRTC client on loopback, from a packet capture.

    tcpdump -i lo -w cap.pcap udp &   # while clients connect
    bench/handshake_timeline.py cap.pcap rtc=54125,42555 lean=45196,52025 pion=50089 \
        [--players connect-output.txt]

Each label names a server's media UDP ports. For every client flow (client address to one of
those ports) it prints, in ms from the client's first STUN check: the server's first STUN
answer, the server's own first check (a full ICE agent sends them, an ICE-lite one does not),
the client's first check with USE-CANDIDATE, the first DTLS ClientHello (from whichever side is
the DTLS client), the HelloVerifyRequest (a cookie round trip) if any, the ServerHello, and the
first RTP/RTCP from the server; then every DTLS handshake record of the flow in order, and per
label the median of each step. With --players (the output of tests/browser/connect.mjs run with
CONNECT_RAW=1) the page's own events (answer applied, ICE, DTLS and connection `connected`,
first frame presented) join each flow's timeline, on the same clock (same machine).
Reads classic pcap (tcpdump -w) with Ethernet or Linux cooked framing; standard library only.
"""
import json
import statistics
import struct
import sys

STUN_MAGIC = 0x2112A442
USE_CANDIDATE = 0x0025
HANDSHAKE = {1: "ClientHello", 2: "ServerHello", 3: "HelloVerifyRequest"}


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            endian = "<"
        elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
            endian = ">"
        else:
            sys.exit(f"{path}: not a classic pcap file (tcpdump -w writes one)")
        nanos = magic in (0xA1B23C4D, 0x4D3CB2A1)
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        offset = {1: 14, 113: 16, 0: 4}.get(linktype)
        if offset is None:
            sys.exit(f"{path}: link type {linktype} not handled")
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, caplen, _ = struct.unpack(endian + "IIII", rec)
            data = f.read(caplen)
            t = sec + frac / (1e9 if nanos else 1e6)
            ip = data[offset:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 15) * 4
            src = ".".join(map(str, ip[12:16]))
            dst = ".".join(map(str, ip[16:20]))
            sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
            yield t, (src, sport), (dst, dport), ip[ihl + 8:]


def classify(payload):
    """('stun', type, use_candidate) | ('dtls', handshake type or None) | ('media',) | None"""
    if len(payload) >= 20 and payload[0] < 4 and struct.unpack(">I", payload[4:8])[0] == STUN_MAGIC:
        mtype, length = struct.unpack(">HH", payload[:4])
        use = False
        pos = 20
        while pos + 4 <= 20 + length and pos + 4 <= len(payload):
            atype, alen = struct.unpack(">HH", payload[pos:pos + 4])
            use = use or atype == USE_CANDIDATE
            pos += 4 + alen + (-alen % 4)
        return ("stun", mtype, use)
    if len(payload) >= 13 and 20 <= payload[0] <= 63:
        epoch = struct.unpack(">H", payload[3:5])[0]
        # An unencrypted handshake record; a message split over several datagrams (Chromium's
        # ClientHello with its post-quantum key share is) is counted at its first fragment.
        if payload[0] == 22 and epoch == 0 and len(payload) >= 25 and payload[19:22] == b"\0\0\0":
            name = HANDSHAKE.get(payload[13])
            if name == "ClientHello" and len(payload) > 25 + 35:
                session_id = payload[25 + 34]
                cookie_at = 25 + 35 + session_id
                if cookie_at < len(payload) and payload[cookie_at] > 0:
                    name = "ClientHello+cookie"
            return ("dtls", name)
        return ("dtls", None)
    if len(payload) >= 12 and 128 <= payload[0] <= 191:
        # RTP, not RTCP (packet types 192-223 where RTP has marker and payload type).
        return ("media", not 192 <= payload[1] <= 223)
    return None


PAGE_EVENTS = [("applied", "page: answer applied"), ("ice", "page: ICE connected"),
               ("dtls", "page: DTLS connected"), ("connected", "page: connected"),
               ("frame", "page: first frame")]


def page_events(path):
    """(label, port) -> {event: wall-clock seconds} from connect.mjs's `raw {...}` lines."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("raw "):
                r = json.loads(line[4:])
                out[(r["label"], r["port"])] = {k: v / 1000 for k, v in r["wall"].items()}
    return out


def main():
    args = sys.argv[1:]
    players = {}
    if "--players" in args:
        i = args.index("--players")
        players = page_events(args[i + 1])
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    labels = {}
    for arg in args[1:]:
        label, ports = arg.split("=", 1)
        for p in ports.split(","):
            labels[int(p)] = label
    flows = {}
    for t, src, dst, payload in packets(args[0]):
        if dst[1] in labels and src[1] not in labels:
            key, from_client = (src, dst), True
        elif src[1] in labels and dst[1] not in labels:
            key, from_client = (dst, src), False
        else:
            continue
        kind = classify(payload)
        if kind is None:
            continue
        f = flows.setdefault(key, {"label": labels[key[1][1]], "dtls": []})
        if "page" not in f:
            f["page"] = players.get((f["label"], src[1] if from_client else dst[1]), {})
            for k, name in PAGE_EVENTS:
                if k in f["page"]:
                    f[name] = f["page"][k]
        who = "C" if from_client else "S"
        if kind[0] == "stun" and kind[1] == 0x0001:
            f.setdefault("check" if from_client else "server check", t)
            if from_client and kind[2]:
                f.setdefault("use-candidate", t)
        elif kind[0] == "stun" and not from_client and kind[1] == 0x0101:
            f.setdefault("stun answer", t)
        elif kind[0] == "dtls" and kind[1] is not None:
            f.setdefault(kind[1].removesuffix("+cookie"), t)
            f["dtls"].append((t, f"{who}:{kind[1]}"))
        elif kind[0] == "media" and not from_client:
            f.setdefault("first RTP/RTCP", t)
        elif kind[0] == "media" and kind[1]:
            f["rtp from client"] = f.get("rtp from client", 0) + 1
    steps = ["stun answer", "server check", "use-candidate", "ClientHello", "HelloVerifyRequest",
             "ServerHello", "first RTP/RTCP"]
    if players:
        steps += [name for _, name in PAGE_EVENTS]
    per_label = {}
    unused = {}
    print("ms from the client's first STUN check (C: from the client, S: from the server)")
    for (client, _server), f in sorted(flows.items(), key=lambda kv: kv[1].get("check", 0)):
        if "check" not in f:
            continue
        if not f["dtls"] and "first RTP/RTCP" not in f:
            # A candidate pair Chromium checked but did not select.
            unused[f["label"]] = unused.get(f["label"], 0) + 1
            continue
        if f.get("rtp from client", 0) > 10:
            print(f"{f['label']} client :{client[1]}: the publisher (sends RTP), left out")
            continue
        ms = lambda t: (t - f["check"]) * 1000  # noqa: E731
        cells = []
        for s in steps:
            v = ms(f[s]) if s in f else None
            per_label.setdefault(f["label"], {}).setdefault(s, []).append(v)
            if v is not None:
                cells.append(f"{s} {v:.1f}")
        print(f"{f['label']} client :{client[1]}: " + ", ".join(cells))
        print("    DTLS handshake records: " + " ".join(f"{n}@{ms(t):.1f}" for t, n in f["dtls"]))
    print("\nmedian per server (ms from the first check; n = flows with the step)")
    for label, seen in per_label.items():
        cells = []
        for s in steps:
            vals = [v for v in seen.get(s, []) if v is not None]
            if vals:
                cells.append(f"{s} {statistics.median(vals):.1f} (n={len(vals)})")
        print(f"{label}: " + "; ".join(cells) + f"; pairs checked but unused: {unused.get(label, 0)}")

if __name__ == "__main__":
    main()
