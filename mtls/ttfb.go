package mtls

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// ttfbKey carries a route's Timeout in the request context.
type ttfbKey struct{}

// errAgentTimeout is a wait for the agent's response headers that took
// longer than the route allows; proxyError answers it 504.
var errAgentTimeout = fmt.Errorf("mtls: the agent sent no response headers in time: %w", context.DeadlineExceeded)

// ttfbTransport bounds the time to the agent's response headers per
// request (the route's Timeout, else def) — what http.Transport's
// ResponseHeaderTimeout does for all requests alike. Once the headers are
// in, the body (a stream of server-sent events, an upgraded websocket) may
// take as long as it likes. A request whose bound is covered (the
// gateway's own transport's ResponseHeaderTimeout) goes straight through:
// the transport bounds it, and a timer and a context per request would
// only cost (both 504, see proxyError).
type ttfbTransport struct {
	rt      http.RoundTripper
	def     time.Duration
	covered time.Duration // rt's ResponseHeaderTimeout; 0 for none
}

func (t ttfbTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	d := t.def
	if v, ok := r.Context().Value(ttfbKey{}).(time.Duration); ok && v > 0 {
		d = v
	}
	if d == t.covered {
		return t.rt.RoundTrip(r)
	}
	// The context lives as long as the request's: cancelling it after the
	// headers would cut the body off. The timer only cancels before them.
	ctx, cancel := context.WithCancelCause(r.Context())
	timer := time.AfterFunc(d, func() { cancel(errAgentTimeout) })
	res, err := t.rt.RoundTrip(r.WithContext(ctx))
	if !timer.Stop() {
		if err == nil {
			res.Body.Close()
		}
		return nil, errAgentTimeout
	}
	return res, err
}
