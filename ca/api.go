package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	acmeAPI "github.com/smallstep/certificates/acme/api"
	stepapi "github.com/smallstep/certificates/api"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
)

// APIHandler is smallstep's own CA API, for the CA listener: /health,
// /roots, /roots.pem, /root/{sha}, /sign, /renew, /rekey, /revoke, … under
// / and /1.0, and ACME under /acme and /2.0/acme, built from smallstep's
// routers on hearth's authority the way smallstep's ca.New composes them.
// So `step ca bootstrap`, `step ca certificate --token` and `step ca renew`
// work unchanged. hearth adds two things in front: a one-time token must
// be its device's current token (so a replaced token fails even if unused),
// and every sign, renew and revoke is recorded in the audit log before the
// answer leaves (a failure to record turns into 503 and the new certificate
// is revoked). hearth's own /.hearth/v1/enroll, renew and roots.pem are
// served here too.
func (c *CA) APIHandler() http.Handler {
	c.apiOnce.Do(func() {
		mux := chi.NewRouter()
		mux.Use(middleware.GetHead)
		mux.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// smallstep's handlers (ACME's among them) read whole
				// bodies; none is legitimately larger than this.
				r.Body = http.MaxBytesReader(w, r.Body, maxAPIBody)
				next.ServeHTTP(w, r.WithContext(c.baseContext(r.Context())))
			})
		})
		mux.Use(c.auditStepAPI)
		stepapi.Route(mux)
		mux.Route("/1.0", func(r chi.Router) { stepapi.Route(r) })
		mux.Route("/acme", func(r chi.Router) { r.Use(c.acmeGuard); acmeAPI.Route(r) })
		mux.Route("/2.0/acme", func(r chi.Router) { r.Use(c.acmeGuard); acmeAPI.Route(r) })
		pub := c.PublicHandler()
		mux.Handle(EnrollPath, pub)
		mux.Handle(RenewPath, pub) // `hearth enroll --renew` against this listener
		mux.Handle(RootsPath, pub)
		c.apiHandler = mux
	})
	return c.apiHandler
}

// maxAPIBody bounds every request body on the CA listener.
const maxAPIBody = 1 << 20

// stepEvent names the audit event of a smallstep API call, "" for calls
// that change nothing.
func stepEvent(r *http.Request) string {
	if r.Method != http.MethodPost {
		return ""
	}
	switch strings.TrimPrefix(r.URL.Path, "/1.0") {
	case "/sign":
		return audit.EventCertIssue
	case "/renew", "/rekey", "/re-sign":
		return audit.EventCertRenew
	case "/revoke":
		return audit.EventCertRevoke
	}
	return ""
}

// bufferedWriter holds a smallstep answer until its audit entry is
// written.
type bufferedWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.h }
func (b *bufferedWriter) WriteHeader(s int) {
	if b.status == 0 {
		b.status = s
	}
}
func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (c *CA) auditStepAPI(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := stepEvent(r)
		if name == "" {
			next.ServeHTTP(w, r)
			return
		}
		ev := audit.Event{Name: name, Client: r.RemoteAddr, Resource: r.URL.Path}
		// Failures are throttled per address before the body is read
		// (see newFailThrottle); a success gives its attempt back below.
		if !c.admit(w, r, ev, true) {
			return
		}
		if r.ContentLength > httpx.MaxJSONBody {
			c.refuse(w, r, ev, &httpError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: "request body is too large"})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, httpx.MaxJSONBody+1))
		if err != nil || len(body) > httpx.MaxJSONBody {
			c.refuse(w, r, ev, &httpError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: "request body is too large"})
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if name == audit.EventCertRenew && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			// A device renews only a certificate the gateway would accept
			// (recorded, unrevoked, current incarnation), as on hearth's
			// own /.hearth/v1/renew; the storage hook refuses the rest too,
			// but only as a 500 from smallstep.
			peer := r.TLS.PeerCertificates[0]
			if dev, err := c.deviceNameOf(peer); err != nil || dev != "" {
				if _, _, err := c.LookupDevice(r.Context(), peer); err != nil {
					if dev != "" {
						ev.Principal, ev.Resource = "device:"+dev, "device:"+dev
					}
					c.refuse(w, r, ev, &httpError{status: http.StatusUnauthorized, code: "unknown_device", msg: "the device is unknown or revoked, or this certificate is not its current one", cause: err})
					return
				}
			}
		}
		if name == audit.EventCertIssue {
			// A hearth token must be its device's current one; tokens of
			// other provisioners (none today) are left to smallstep.
			var sr struct {
				OTT string `json:"ott"`
				CSR string `json:"csr"`
			}
			// Decode as smallstep does (the first JSON value of the body,
			// api/read.JSON) and refuse anything after it: the checks
			// below must see exactly the request smallstep acts on. A body
			// they cannot read is refused rather than passed on unchecked
			// (OWASP ASVS 5.0 V1.5.3: one parser, or the same result from
			// every parser, for security decisions).
			if err := decodeFirstOnly(body, &sr); err != nil {
				c.refuse(w, r, ev, badRequest("request body is not the expected JSON: "+err.Error()))
				return
			}
			if sr.OTT != "" {
				dev, jti, err := c.checkToken(sr.OTT)
				if err != nil {
					var te *tokenError
					if errors.As(err, &te) {
						c.refuse(w, r, ev, &httpError{status: http.StatusUnauthorized, code: "bad_token", msg: strings.TrimPrefix(te.Error(), "ca: ")})
						return
					}
					httpx.Unavailable(w)
					return
				}
				ev.Principal, ev.Resource = "device:"+dev, "device:"+dev
				// Check the CSR as hearth's own enrollment does, before
				// smallstep consumes the token: a CSR asking for more than
				// the device's ID is refused and the token stays usable.
				csr, err := ParseCSR([]byte(sr.CSR))
				if err == nil {
					err = c.checkCSRNames(csr, dev)
				}
				if err != nil {
					c.refuse(w, r, ev, &httpError{status: http.StatusBadRequest, code: "bad_csr", msg: strings.TrimPrefix(err.Error(), "ca: ")})
					return
				}
				// Spend the token in hearth's store first, then let
				// smallstep spend it again (its used_ott table).
				if he := c.spendToken(r.Context(), dev, jti); he != nil {
					if he.status == http.StatusServiceUnavailable {
						httpx.Unavailable(w)
						return
					}
					c.refuse(w, r, ev, he)
					return
				}
			}
		}
		bw := &bufferedWriter{h: http.Header{}}
		next.ServeHTTP(bw, r)
		if bw.status == 0 {
			bw.status = http.StatusOK
		}
		var leaf *x509.Certificate
		if bw.status < 300 {
			ev.Outcome = audit.OutcomeSuccess
			if name != audit.EventCertRevoke {
				leaf = leafOfSignResponse(bw.body.Bytes())
				if leaf != nil {
					if dev, err := c.deviceNameOf(leaf); err == nil && dev != "" {
						ev.Principal, ev.Resource = "device:"+dev, "device:"+dev
					}
					ev.Meta = map[string]string{
						"serial":    leaf.SerialNumber.String(),
						"not_after": leaf.NotAfter.UTC().Format(time.RFC3339),
					}
				}
			}
		} else {
			ev.Outcome = audit.OutcomeFailure
			var e struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(bw.body.Bytes(), &e) == nil {
				ev.Reason = e.Message
			}
		}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && ev.Principal == "" {
			if dev, err := c.deviceNameOf(r.TLS.PeerCertificates[0]); err == nil && dev != "" {
				ev.Principal = "device:" + dev
			}
		}
		if err := c.audit.Record(r.Context(), ev); err != nil {
			c.log.Error().Err(err).Str("event", name).Msg("ca: audit entry failed; refusing")
			if leaf != nil {
				c.dropIssued(leaf)
			}
			httpx.Unavailable(w)
			return
		}
		if bw.status < 300 {
			c.thr.GiveBack(r.RemoteAddr)
		}
		for k, v := range bw.h {
			w.Header()[k] = v
		}
		w.WriteHeader(bw.status)
		w.Write(bw.body.Bytes())
	})
}

// decodeFirstOnly decodes the first JSON value of b into v the way
// smallstep's read.JSON does, and fails if anything but white space
// follows it.
func decodeFirstOnly(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

func leafOfSignResponse(b []byte) *x509.Certificate {
	var sr struct {
		Crt string `json:"crt"`
	}
	if json.Unmarshal(b, &sr) != nil {
		return nil
	}
	blk, _ := pem.Decode([]byte(sr.Crt))
	if blk == nil {
		return nil
	}
	crt, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil
	}
	return crt
}
