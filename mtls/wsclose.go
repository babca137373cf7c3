package mtls

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"
)

// closePolicyViolation is the websocket close code hearth sends when a
// connection's credentials no longer hold (RFC 6455 §7.4.1: 1008, "an
// endpoint is terminating the connection because it has received a message
// that violates its policy").
const closePolicyViolation = 1008

// errClosedByHearth ends the agent-to-client copy once hearth's close
// frame is out.
var errClosedByHearth = errors.New("mtls: websocket closed by hearth")

// wsCloser lets the gateway end a proxied websocket with a close frame.
// httputil.ReverseProxy hijacks the client connection and copies the
// agent's frames to it; wsCloser wraps that connection, follows the frame
// boundaries of what the agent sends, and writes the close frame only
// between two frames, so that the client never sees a frame cut in half.
type wsCloser struct {
	mu   sync.Mutex
	conn *wsConn // nil until the upgrade succeeded
}

// wrap returns w with a Hijack that hands out the tracked connection.
func (c *wsCloser) wrap(w http.ResponseWriter) http.ResponseWriter {
	return &upgradeWriter{ResponseWriter: w, c: c}
}

type upgradeWriter struct {
	http.ResponseWriter
	c *wsCloser
}

func (u *upgradeWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// Hijack hijacks the underlying connection. The 101 response goes out
// through the returned buffer, untracked; the frames after it through the
// tracked connection.
func (u *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	wc := &wsConn{Conn: conn}
	u.c.mu.Lock()
	u.c.conn = wc
	u.c.mu.Unlock()
	return wc, brw, nil
}

// close sends a close frame with code and reason (cut to the 123 bytes a
// control frame leaves, RFC 6455 §5.5) as soon as the agent's current
// frame has ended, waiting at most grace for that. Without an upgraded
// connection it does nothing.
func (c *wsCloser) close(code uint16, reason string, grace time.Duration) {
	frame := closeFrame(code, reason)
	c.mu.Lock()
	wc := c.conn
	if wc == nil {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	done := make(chan struct{})
	wc.mu.Lock()
	if wc.closed {
		wc.mu.Unlock()
		return
	}
	if wc.fr.atBoundary() {
		_, _ = wc.Conn.Write(frame) // best effort: the connection drops next
		wc.closed = true
		wc.mu.Unlock()
		return
	}
	wc.pending, wc.done = frame, done
	wc.mu.Unlock()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// wsConn is the hijacked client connection: reads pass through; writes
// (the agent's frames) are followed by a frameTracker.
type wsConn struct {
	net.Conn
	mu      sync.Mutex
	fr      frameTracker
	closed  bool
	pending []byte
	done    chan struct{}
}

func (w *wsConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, errClosedByHearth
	}
	if w.pending == nil {
		n, err := w.Conn.Write(p)
		w.fr.feed(p[:n])
		return n, err
	}
	// Finish the current frame, then the close frame, then nothing more.
	k := w.fr.consume(p)
	n, err := w.Conn.Write(p[:k])
	if err != nil || n < k || !w.fr.atBoundary() {
		if n < k {
			w.fr = frameTracker{inPayload: true, rest: 1} // never at a boundary again
		}
		return n, err
	}
	_, _ = w.Conn.Write(w.pending)
	w.closed, w.pending = true, nil
	close(w.done)
	return n, errClosedByHearth
}

func closeFrame(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
		for !utf8.ValidString(reason) { // a rune cut in half
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, 4, 4+len(reason))
	b[0] = 0x88 // FIN, opcode 8 (close)
	b[1] = byte(2 + len(reason))
	binary.BigEndian.PutUint16(b[2:], code)
	return append(b, reason...)
}

// frameTracker follows websocket frame boundaries (RFC 6455 §5.2) in a
// byte stream, across arbitrary write boundaries. It parses only lengths:
// a 2-byte header, 2 or 8 bytes of extended length, 4 bytes of mask key
// when the mask bit is set, then the payload.
type frameTracker struct {
	hdr       [14]byte
	nhdr      int    // header bytes of the current frame seen so far
	need      int    // header length, once the first two bytes are in
	rest      uint64 // payload bytes still to come
	inPayload bool
}

func (t *frameTracker) atBoundary() bool { return t.nhdr == 0 && !t.inPayload }

// consume eats bytes of p up to the end of the current frame (starting a
// new one at a boundary), or all of p if the frame does not end in it, and
// returns how many it ate.
func (t *frameTracker) consume(p []byte) int {
	i := 0
	for i < len(p) {
		if t.inPayload {
			n := uint64(len(p) - i)
			if n > t.rest {
				n = t.rest
			}
			i += int(n)
			t.rest -= n
			if t.rest == 0 {
				t.inPayload = false
				return i
			}
			continue
		}
		t.hdr[t.nhdr] = p[i]
		t.nhdr++
		i++
		if t.nhdr == 2 {
			t.need = 2
			switch t.hdr[1] & 0x7f {
			case 126:
				t.need += 2
			case 127:
				t.need += 8
			}
			if t.hdr[1]&0x80 != 0 {
				t.need += 4
			}
		}
		if t.nhdr >= 2 && t.nhdr == t.need {
			var n uint64
			switch l := t.hdr[1] & 0x7f; l {
			case 126:
				n = uint64(binary.BigEndian.Uint16(t.hdr[2:4]))
			case 127:
				n = binary.BigEndian.Uint64(t.hdr[2:10])
			default:
				n = uint64(l)
			}
			t.nhdr, t.need = 0, 0
			if n == 0 {
				return i
			}
			t.rest, t.inPayload = n, true
		}
	}
	return i
}

// feed eats all of p.
func (t *frameTracker) feed(p []byte) {
	for len(p) > 0 {
		p = p[t.consume(p):]
	}
}
