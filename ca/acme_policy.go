package ca

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/smallstep/certificates/acme"
	"go.step.sm/crypto/jose"

	"github.com/hearth-home/hearth/audit"
)

// ACMEOrderResource is the audit resource of an ACME new-order refusal.
const ACMEOrderResource = "acme:new-order"

// acmeGuard stands in front of smallstep's ACME handlers:
//
//   - Every ACME POST is an attempt under the per-address budget of failed
//     attempts the other CA endpoints share (see newFailThrottle): it takes
//     a token before its body is read, and gives it back if it succeeds, so
//     only failures count. Over budget the answer is ACME's rateLimited
//     problem with Retry-After (RFC 8555 §6.6), audited in aggregate.
//   - A new-order naming an identifier the CA will not issue for (a DNS
//     name outside ca.acme_domains, a public IP address, hearth's own
//     names, any other type) is refused at once with rejectedIdentifier
//     (RFC 8555 §6.7, §7.4: "the server MUST return an error if it cannot
//     fulfill the request"), one subproblem per identifier (§6.7.1), and
//     a detail naming the setting; before any authorization or challenge
//     exists, and audited like every other refusal. Without it the order
//     was accepted, its challenge validated against whatever answered on
//     the LAN, and only finalize refused, with serverInternal.
//
// The order is read from the JWS payload without verifying the signature:
// a refusal needs no proof of who asked, and an order that passes goes on
// to smallstep, which verifies everything. It is parsed with the same
// parser smallstep uses (go.step.sm/crypto/jose.ParseJWS, then
// encoding/json), so both see the same identifiers (OWASP ASVS 5.0
// V1.5.3).
func (c *CA) acmeGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		ev := audit.Event{Name: audit.EventCertIssue, Client: r.RemoteAddr, Resource: "acme:" + acmeAction(r.URL.Path)}
		if !c.admitWith(w, r, ev, c.acmeThrottled) {
			return
		}
		if strings.HasSuffix(r.URL.Path, "/new-order") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				c.acmeProblem(w, r, acme.NewError(acme.ErrorMalformedType, "request body is too large"))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if prob, refused := c.acmeOrderPolicy(body); refused != nil {
				ev.Resource = ACMEOrderResource
				ev.Outcome, ev.Reason = audit.OutcomeFailure, prob.Detail
				ev.Meta = map[string]string{"setting": "ca.acme_domains", "identifiers": strings.Join(refused, ",")}
				if err := c.audit.Record(r.Context(), ev); err != nil {
					c.log.Error().Err(err).Msg("ca: audit entry failed; refusing")
					c.acmeProblem(w, r, acme.NewError(acme.ErrorServerInternalType, "the audit log cannot be written; try again shortly"))
					return
				}
				c.acmeProblem(w, r, prob)
				return
			}
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status != 0 && sw.status < 400 {
			c.thr.GiveBack(r.RemoteAddr)
		}
	})
}

// acmeAction is the last element of an ACME path (new-order, finalize, …).
func acmeAction(p string) string {
	p = strings.TrimRight(p, "/")
	a := p[strings.LastIndexByte(p, '/')+1:]
	if len(a) > 32 {
		a = a[:32]
	}
	return a
}

// acmeOrderPolicy returns a rejectedIdentifier problem and the refused
// identifiers if the new-order in body names one the CA will not issue
// for; nil if it names none (or cannot be parsed: smallstep then answers
// malformed, as it would without hearth).
func (c *CA) acmeOrderPolicy(body []byte) (*acme.Error, []string) {
	jws, err := jose.ParseJWS(string(body))
	if err != nil {
		return nil, nil
	}
	var nor struct {
		Identifiers []acme.Identifier `json:"identifiers"`
	}
	if json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &nor) != nil {
		return nil, nil
	}
	var subs []acme.Subproblem
	var refused []string
	for _, id := range nor.Identifiers {
		if why := c.acmeIdentifierRefused(id); why != "" {
			v := id.Value
			if len(v) > 253 {
				v = v[:253]
			}
			refused = append(refused, string(id.Type)+":"+v)
			subs = append(subs, acme.NewSubproblemWithIdentifier(acme.ErrorRejectedIdentifierType, acme.Identifier{Type: id.Type, Value: v}, "%s", why))
		}
	}
	if len(refused) == 0 {
		return nil, nil
	}
	domains := strings.Join(c.set.acmeDomains, ", ")
	prob := acme.NewError(acme.ErrorRejectedIdentifierType,
		"hearth's CA issues over ACME only for household names: %s is not under ca.acme_domains (%s) or a private address; if the name is yours, add its suffix to ca.acme_domains in hearth.yaml",
		strings.Join(refused, ", "), domains)
	prob.AddSubproblems(subs...)
	return prob, refused
}

// acmeIdentifierRefused says why the CA will not issue for id, or "".
func (c *CA) acmeIdentifierRefused(id acme.Identifier) string {
	switch id.Type {
	case acme.DNS:
		n := strings.ToLower(strings.TrimSuffix(id.Value, "."))
		for _, h := range c.hosts {
			if n == h {
				return n + " is hearth's own name: its certificate is never issued to anyone else"
			}
		}
		if !acmeNameAllowed(n, c.set.acmeDomains) {
			return fmt.Sprintf("%s is not under ca.acme_domains (%s)", n, strings.Join(c.set.acmeDomains, ", "))
		}
	case acme.IP:
		a, err := netip.ParseAddr(id.Value)
		if err != nil || !acmeIPAllowed(a) {
			return id.Value + " is not a private address"
		}
		for _, h := range c.hosts {
			if b, err := netip.ParseAddr(h); err == nil && b == a.Unmap() {
				return id.Value + " is hearth's own address: its certificate is never issued to anyone else"
			}
		}
	default:
		return "identifier type " + strconv.Quote(string(id.Type)) + " is not issued here (dns and ip only)"
	}
	return ""
}

// acmeThrottled answers an ACME request over its address's budget.
func (c *CA) acmeThrottled(w http.ResponseWriter, r *http.Request, d time.Duration, msg string) {
	secs := max(1, int((d+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	e := acme.NewError(acme.ErrorRateLimitedType, "%s", msg)
	e.Status = http.StatusTooManyRequests // as Let's Encrypt answers it, and hearth's other endpoints
	c.acmeProblem(w, r, e)
}

// acmeProblem writes an ACME problem document (RFC 8555 §6.7) with a fresh
// nonce, as smallstep does for its own errors (§6.5: error responses
// SHOULD carry Replay-Nonce, so the client can retry at once).
func (c *CA) acmeProblem(w http.ResponseWriter, r *http.Request, e *acme.Error) {
	if e.Err != nil {
		e.Detail = e.Err.Error() // hearth's sentences are public by design
	}
	if n, err := c.acmeDB.CreateNonce(r.Context()); err == nil {
		w.Header().Set("Replay-Nonce", string(n))
	}
	w.Header().Set("Cache-Control", "no-store")
	e.Render(w, r)
}

// statusWriter records the status smallstep answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
