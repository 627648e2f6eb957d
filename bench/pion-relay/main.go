// pion-relay: the baseline SFU of golive's side-by-side benchmarks. A plain pion v3 relay, written
// the way pion's own examples write one, that speaks the same WHIP and WHEP as golive:
//
//	POST   /whip/<stream>       SDP offer in, 201 with the SDP answer and a Location (one publisher)
//	POST   /whep/<stream>       SDP offer in, 201 with the SDP answer and a Location (any viewers)
//	DELETE <Location>           ends that session
//	GET    /                    a blank page (a same-origin place for a browser script to run)
//
// Every published track gets a TrackLocalStaticRTP; each packet read from the publisher is
// written to it, and pion fans it out to the viewers' senders (SRTP per viewer). There is no
// keyframe cache: a joining viewer (and any PLI or FIR a viewer sends) asks the publisher for a
// keyframe. Media use one UDP socket (pion's UDP mux) on 127.0.0.1, the candidate golive's
// loopback tests advertise too; ICE is pion's default full agent (controlled, as the answerer).
//
// Prints `listening on http://ADDR` on stdout once it serves. Built offline by build.sh.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v3"
)

// An SDP body larger than this is refused: offers are a few kilobytes.
const maxSDPBytes = 64 << 10

// How long an answer waits for the relay's own candidates (one host candidate on the mux).
const gatherTimeout = 5 * time.Second

// A publisher's packets are read into buffers of this size (pion's default receive MTU).
const rtpBufferBytes = 1500

type stream struct {
	mu        sync.Mutex
	publisher *webrtc.PeerConnection
	tracks    []*webrtc.TrackLocalStaticRTP
	// The publisher's video SSRCs, for keyframe requests on a viewer's behalf.
	videoSSRCs []webrtc.SSRC
	// How many of the offered tracks have arrived; viewers are refused until all have.
	expected int
}

type relay struct {
	api     *webrtc.API
	mu      sync.Mutex
	streams map[string]*stream
	// Session id (the Location's last segment) to its peer connection and stream name.
	sessions map[string]*session
	nextID   uint64
}

type session struct {
	pc        *webrtc.PeerConnection
	name      string
	publisher bool
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "HTTP address (port 0: any free port)")
	udpAddr := flag.String("udp", "127.0.0.1:0", "the one UDP socket all media use")
	flag.Parse()

	udp, err := net.ListenUDP("udp4", mustResolveUDP(*udpAddr))
	if err != nil {
		log.Fatalf("UDP %s: %v", *udpAddr, err)
	}
	settings := webrtc.SettingEngine{}
	settings.SetICEUDPMux(webrtc.NewICEUDPMux(nil, udp))
	settings.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	settings.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	settings.SetIncludeLoopbackCandidate(true)

	media := &webrtc.MediaEngine{}
	if err := media.RegisterDefaultCodecs(); err != nil {
		log.Fatal(err)
	}
	// NACK responder and generator, RTCP reports, TWCC header extension: what a pion app gets
	// from pion's defaults.
	registry := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(media, registry); err != nil {
		log.Fatal(err)
	}
	r := &relay{
		api:      webrtc.NewAPI(webrtc.WithSettingEngine(settings), webrtc.WithMediaEngine(media), webrtc.WithInterceptorRegistry(registry)),
		streams:  map[string]*stream{},
		sessions: map[string]*session{},
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("HTTP %s: %v", *listen, err)
	}
	fmt.Printf("listening on http://%s (media on udp %s)\n", ln.Addr(), udp.LocalAddr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, r))
}

func mustResolveUDP(a string) *net.UDPAddr {
	addr, err := net.ResolveUDPAddr("udp4", a)
	if err != nil {
		log.Fatalf("UDP address %q: %v", a, err)
	}
	return addr
}

func (r *relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// Pages of any origin may call it, as they may call golive's WHIP and WHEP.
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Set("Access-Control-Expose-Headers", "Location")
	if req.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	switch {
	case req.Method == http.MethodGet && req.URL.Path == "/":
		h.Set("Content-Type", "text/html")
		io.WriteString(w, "<!doctype html><title>pion relay</title><body></body>")
	case req.Method == http.MethodPost && len(parts) == 2 && (parts[0] == "whip" || parts[0] == "whep"):
		r.post(w, req, parts[0] == "whip", parts[1])
	case req.Method == http.MethodDelete && len(parts) == 3 && (parts[0] == "whip" || parts[0] == "whep"):
		r.delete(w, parts[2])
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

func (r *relay) post(w http.ResponseWriter, req *http.Request, publish bool, name string) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxSDPBytes+1))
	if err != nil || len(body) > maxSDPBytes {
		http.Error(w, "unreadable or oversized offer", http.StatusBadRequest)
		return
	}
	offer := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(body)}

	r.mu.Lock()
	s := r.streams[name]
	if publish && s != nil {
		r.mu.Unlock()
		http.Error(w, "stream is already published", http.StatusConflict)
		return
	}
	if !publish && (s == nil || !s.ready()) {
		r.mu.Unlock()
		http.Error(w, "no such stream", http.StatusNotFound)
		return
	}
	if publish {
		s = &stream{}
		r.streams[name] = s
	}
	r.nextID++
	id := fmt.Sprintf("%d", r.nextID)
	r.mu.Unlock()

	pc, err := r.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		r.fail(w, name, publish, err)
		return
	}
	if publish {
		err = r.setUpPublisher(pc, s, offer)
	} else {
		err = r.setUpViewer(pc, s)
	}
	if err != nil {
		pc.Close()
		r.fail(w, name, publish, err)
		return
	}
	answer, err := answer(pc, offer)
	if err != nil {
		pc.Close()
		r.fail(w, name, publish, err)
		return
	}
	r.mu.Lock()
	r.sessions[id] = &session{pc: pc, name: name, publisher: publish}
	r.mu.Unlock()
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			// No keyframe cache: a new viewer can only start at the publisher's next keyframe.
			if !publish {
				s.requestKeyframe()
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			r.end(id)
		}
	})
	kind := "whep"
	if publish {
		kind = "whip"
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", fmt.Sprintf("/%s/%s/%s", kind, name, id))
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer.SDP)
}

// Answers without trickle: the answer carries the relay's candidate.
func answer(pc *webrtc.PeerConnection, offer webrtc.SessionDescription) (*webrtc.SessionDescription, error) {
	if err := pc.SetRemoteDescription(offer); err != nil {
		return nil, err
	}
	a, err := pc.CreateAnswer(nil)
	if err != nil {
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(a); err != nil {
		return nil, err
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
		return nil, fmt.Errorf("no candidates within %v", gatherTimeout)
	}
	return pc.LocalDescription(), nil
}

func (r *relay) fail(w http.ResponseWriter, name string, publish bool, err error) {
	if publish {
		r.mu.Lock()
		delete(r.streams, name)
		r.mu.Unlock()
	}
	log.Printf("%s: %v", name, err)
	http.Error(w, err.Error(), http.StatusBadRequest)
}

func (s *stream) ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expected > 0 && len(s.tracks) == s.expected
}

func (r *relay) setUpPublisher(pc *webrtc.PeerConnection, s *stream, offer webrtc.SessionDescription) error {
	s.publisher = pc
	// One track per offered audio or video section that sends.
	for _, line := range strings.Split(offer.SDP, "\n") {
		if strings.HasPrefix(line, "m=audio") || strings.HasPrefix(line, "m=video") {
			s.expected++
		}
	}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return err
		}
	}
	pc.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, remote.ID(), remote.StreamID())
		if err != nil {
			log.Printf("track %s: %v", remote.ID(), err)
			return
		}
		s.mu.Lock()
		s.tracks = append(s.tracks, local)
		if remote.Kind() == webrtc.RTPCodecTypeVideo {
			s.videoSSRCs = append(s.videoSSRCs, remote.SSRC())
		}
		s.mu.Unlock()
		buf := make([]byte, rtpBufferBytes)
		for {
			n, _, err := remote.Read(buf)
			if err != nil {
				return
			}
			// ErrClosedPipe only says no viewer is bound yet.
			if _, err := local.Write(buf[:n]); err != nil && err != io.ErrClosedPipe {
				return
			}
		}
	})
	return nil
}

func (r *relay) setUpViewer(pc *webrtc.PeerConnection, s *stream) error {
	s.mu.Lock()
	tracks := append([]*webrtc.TrackLocalStaticRTP(nil), s.tracks...)
	s.mu.Unlock()
	for _, t := range tracks {
		sender, err := pc.AddTrack(t)
		if err != nil {
			return err
		}
		// Reading the sender's RTCP runs the interceptors (NACKs answered, reports read);
		// PLI and FIR go on to the publisher.
		go func() {
			for {
				packets, _, err := sender.ReadRTCP()
				if err != nil {
					return
				}
				for _, p := range packets {
					switch p.(type) {
					case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
						s.requestKeyframe()
					}
				}
			}
		}()
	}
	return nil
}

func (s *stream) requestKeyframe() {
	s.mu.Lock()
	pc, ssrcs := s.publisher, append([]webrtc.SSRC(nil), s.videoSSRCs...)
	s.mu.Unlock()
	for _, ssrc := range ssrcs {
		_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}

func (r *relay) delete(w http.ResponseWriter, id string) {
	if !r.end(id) {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// Closes a session; a publisher's end ends its stream (its viewers' tracks stop).
func (r *relay) end(id string) bool {
	r.mu.Lock()
	sess := r.sessions[id]
	delete(r.sessions, id)
	if sess != nil && sess.publisher {
		delete(r.streams, sess.name)
	}
	r.mu.Unlock()
	if sess == nil {
		return false
	}
	go sess.pc.Close()
	return true
}
