package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/smallstep/certificates/authority/provisioner"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
)

// The paths of [CA.PublicHandler].
const (
	EnrollPath = "/.hearth/v1/enroll"
	RenewPath  = "/.hearth/v1/renew"
	RootsPath  = "/.hearth/v1/roots.pem"
)

// EnrollRequest is the body of POST /.hearth/v1/enroll.
type EnrollRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"` // PEM
}

// RenewRequest is the optional body of POST /.hearth/v1/renew; without a
// CSR the new certificate keeps the current public key.
type RenewRequest struct {
	CSR string `json:"csr,omitempty"`
}

// CertificateResponse is the answer of enroll and renew.
type CertificateResponse struct {
	Certificate string    `json:"certificate"` // the leaf, PEM
	Chain       string    `json:"chain"`       // the intermediate(s), PEM
	ExpiresAt   time.Time `json:"expires_at"`
	Serial      string    `json:"serial"`
}

type clientKey struct{}

// withClient records the client's address for audit entries.
func withClient(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientKey{}, addr)
}

func clientOf(ctx context.Context) string {
	s, _ := ctx.Value(clientKey{}).(string)
	if s == "" {
		return "local"
	}
	return s
}

func principalOf(ctx context.Context) string {
	if p := authz.PrincipalFrom(ctx); p != nil {
		return p.ID
	}
	return ""
}

// PublicHandler serves hearth's enrollment API on the gateway (no
// authentication beyond what each endpoint checks itself):
//
//   - POST /.hearth/v1/enroll {token, csr} → 201 {certificate, chain,
//     expires_at, serial}; 400 bad CSR, 401 bad token, 413 body over 64 KiB,
//     429 with Retry-After after too many failed attempts from the client's
//     address (see newFailThrottle), 503 audit or store unavailable;
//   - POST /.hearth/v1/renew over mTLS, optional {csr} → 201 the same;
//     401 without a valid, unrevoked device certificate;
//   - GET /.hearth/v1/roots.pem → the root certificate.
func (c *CA) PublicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+EnrollPath, c.handleEnroll)
	mux.HandleFunc("POST "+RenewPath, c.handleRenew)
	mux.HandleFunc("GET "+RootsPath, c.handleRoots)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case EnrollPath, RenewPath, RootsPath:
			httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
		default:
			httpx.Error(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
		}
	})
	return mux
}

func (c *CA) handleRoots(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(c.rootPEM)
}

// httpError is a refusal with its HTTP status and stable code.
type httpError struct {
	status int
	code   string
	msg    string
	cause  error
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Unwrap() error { return e.cause }

func badRequest(msg string) *httpError {
	return &httpError{status: http.StatusBadRequest, code: "bad_request", msg: msg}
}

// decodeBody reads a JSON body of at most httpx.MaxJSONBody bytes
// strictly (unknown fields and trailing data refused). An empty body is
// allowed when emptyOK.
func decodeBody(r *http.Request, v any, emptyOK bool) *httpError {
	limit := int64(httpx.MaxJSONBody)
	tooLarge := &httpError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: fmt.Sprintf("request body is larger than %d bytes", limit)}
	if r.ContentLength > limit {
		return tooLarge
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return badRequest("cannot read the request body")
	}
	if int64(len(b)) > limit {
		return tooLarge
	}
	if emptyOK && len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := httpx.DecodeStrict(b, v); err != nil {
		return badRequest("request body is not the expected JSON: " + err.Error())
	}
	return nil
}

// ParseEnrollRequest decodes an enrollment body and its CSR, the parsing
// every enrollment runs on untrusted bytes before any token is consumed.
func ParseEnrollRequest(body []byte) (*EnrollRequest, *x509.CertificateRequest, error) {
	if len(body) > httpx.MaxJSONBody {
		return nil, nil, fmt.Errorf("ca: request body is larger than %d bytes", httpx.MaxJSONBody)
	}
	var req EnrollRequest
	if err := httpx.DecodeStrict(body, &req); err != nil {
		return nil, nil, fmt.Errorf("ca: request body is not the expected JSON: %w", err)
	}
	if req.Token == "" || len(req.Token) > maxTokenLen {
		return nil, nil, &tokenError{"the enrollment token is missing or too long"}
	}
	csr, err := ParseCSR([]byte(req.CSR))
	if err != nil {
		return nil, nil, err
	}
	return &req, csr, nil
}

// refuse records a refusal and answers it; if the refusal cannot be
// recorded the answer is 503 (fail closed).
func (c *CA) refuse(w http.ResponseWriter, r *http.Request, ev audit.Event, he *httpError) {
	ev.Outcome = audit.OutcomeFailure
	ev.Reason = he.msg
	ev.Client = r.RemoteAddr
	if err := c.audit.Record(r.Context(), ev); err != nil {
		c.log.Error().Err(err).Str("event", ev.Name).Msg("ca: audit entry failed; refusing")
		httpx.Unavailable(w)
		return
	}
	if he.cause != nil {
		c.log.Info().Err(he.cause).Str("event", ev.Name).Msg("ca: refused")
	}
	httpx.Error(w, he.status, he.code, he.msg)
}

func (c *CA) handleEnroll(w http.ResponseWriter, r *http.Request) {
	ev := audit.Event{Name: audit.EventDeviceEnroll}
	// Throttle failures per address before the body is read, any token
	// looked at or any CSR parsed.
	if !c.admit(w, r, ev, false) {
		return
	}
	var req EnrollRequest
	if he := decodeBody(r, &req, false); he != nil {
		c.refuse(w, r, ev, he)
		return
	}
	resp, he := c.enroll(r.Context(), &req, r.RemoteAddr, &ev)
	if he != nil {
		if he.status == http.StatusServiceUnavailable {
			httpx.Unavailable(w)
			return
		}
		c.refuse(w, r, ev, he)
		return
	}
	c.thr.GiveBack(r.RemoteAddr)
	httpx.JSON(w, http.StatusCreated, resp)
}

// enroll checks the token (without consuming it), the CSR, then consumes
// the token in hearth's store (consumeEnrollToken), lets the authority
// consume it a second time (one compare-and-swap in its database) and
// sign; the device record is written
// as the authority stores the certificate; the audit entry is written
// before the answer, and if it fails the certificate is revoked and
// dropped.
func (c *CA) enroll(ctx context.Context, req *EnrollRequest, client string, ev *audit.Event) (*CertificateResponse, *httpError) {
	name, jti, err := c.checkToken(req.Token)
	if err != nil {
		var te *tokenError
		if errors.As(err, &te) {
			return nil, &httpError{status: http.StatusUnauthorized, code: "bad_token", msg: strings.TrimPrefix(te.Error(), "ca: ")}
		}
		return nil, &httpError{status: http.StatusServiceUnavailable, cause: err}
	}
	ev.Principal, ev.Resource = "device:"+name, "device:"+name
	ev.Meta = map[string]string{"token_id": jti}
	csr, err := ParseCSR([]byte(req.CSR))
	if err == nil {
		err = c.checkCSRNames(csr, name)
	}
	if err != nil {
		return nil, &httpError{status: http.StatusBadRequest, code: "bad_csr", msg: strings.TrimPrefix(err.Error(), "ca: ")}
	}
	rec, err := c.devices.get(ctx, name)
	if err != nil || rec == nil {
		return nil, &httpError{status: http.StatusServiceUnavailable, cause: err}
	}
	if he := c.spendToken(ctx, name, jti); he != nil {
		return nil, he
	}
	sctx := provisioner.NewContextWithMethod(ctx, provisioner.SignMethod)
	signOpts, err := c.auth.Authorize(sctx, req.Token)
	if err != nil {
		msg := "the enrollment token was refused"
		if strings.Contains(err.Error(), "already used") {
			msg = "the enrollment token was already used or replaced"
		}
		return nil, &httpError{status: http.StatusUnauthorized, code: "bad_token", msg: msg, cause: err}
	}
	now := c.now()
	opts := provisioner.SignOptions{NotAfter: provisioner.NewTimeDuration(now.Add(rec.Lifetime))}
	chain, err := c.auth.SignWithContext(sctx, csr, opts, signOpts...)
	if err != nil {
		return nil, c.signError(err)
	}
	leaf := chain[0]
	ev.Meta["serial"] = leaf.SerialNumber.String()
	ev.Meta["not_after"] = leaf.NotAfter.UTC().Format(time.RFC3339)
	ev.Outcome, ev.Client, ev.Reason = audit.OutcomeSuccess, client, "device enrolled; certificate issued"
	if err := c.audit.Record(ctx, *ev); err != nil {
		c.log.Error().Err(err).Str("device", name).Msg("ca: audit entry failed; revoking the unissued certificate")
		c.dropIssued(leaf)
		return nil, &httpError{status: http.StatusServiceUnavailable, cause: err}
	}
	c.log.Info().Str("device", name).Str("serial", leaf.SerialNumber.String()).Msg("ca: device enrolled")
	return certResponse(chain), nil
}

// spendToken consumes the device's enrollment token (consumeEnrollToken)
// and maps a refusal to 401, a store failure to 503.
func (c *CA) spendToken(ctx context.Context, name, jti string) *httpError {
	err := c.consumeEnrollToken(ctx, name, jti)
	var te *tokenError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return &httpError{status: http.StatusUnauthorized, code: "bad_token", msg: strings.TrimPrefix(te.Error(), "ca: ")}
	default:
		return &httpError{status: http.StatusServiceUnavailable, cause: err}
	}
}

// signError maps an error of the authority's Sign or Renew.
func (c *CA) signError(err error) *httpError {
	switch {
	case errors.Is(err, ErrUnknownDevice):
		return &httpError{status: http.StatusUnauthorized, code: "unknown_device", msg: "the device is unknown or revoked", cause: err}
	}
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) {
		switch s := sc.StatusCode(); {
		case s == http.StatusInternalServerError && strings.Contains(err.Error(), "storing certificate"):
			return &httpError{status: http.StatusServiceUnavailable, cause: err}
		case s == http.StatusUnauthorized || strings.Contains(err.Error(), "revoked"):
			return &httpError{status: http.StatusUnauthorized, code: "revoked", msg: "the certificate is revoked or not renewable", cause: err}
		case s >= 400 && s < 500:
			return &httpError{status: http.StatusBadRequest, code: "bad_csr", msg: "the certificate request was refused", cause: err}
		}
	}
	c.log.Error().Err(err).Msg("ca: signing failed")
	return &httpError{status: http.StatusInternalServerError, code: "internal", msg: "the CA could not sign", cause: err}
}

func certResponse(chain []*x509.Certificate) *CertificateResponse {
	return &CertificateResponse{
		Certificate: string(pemCerts(chain[0])),
		Chain:       string(pemCerts(chain[1:]...)),
		ExpiresAt:   chain[0].NotAfter.UTC(),
		Serial:      chain[0].SerialNumber.String(),
	}
}

// verifyPeer verifies a client's certificate chain against hearth's root
// only (never the system roots) for client authentication.
func (c *CA) verifyPeer(certs []*x509.Certificate) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("no client certificate")
	}
	inter := c.intermediates.Clone()
	for _, x := range certs[1:] {
		inter.AddCert(x)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: c.roots, Intermediates: inter, CurrentTime: c.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	return certs[0], nil
}

func (c *CA) handleRenew(w http.ResponseWriter, r *http.Request) {
	ev := audit.Event{Name: audit.EventCertRenew}
	if !c.admit(w, r, ev, false) {
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		c.refuse(w, r, ev, &httpError{status: http.StatusUnauthorized, code: "unauthenticated", msg: "renewal needs the device's current certificate as the TLS client certificate"})
		return
	}
	leaf, err := c.verifyPeer(r.TLS.PeerCertificates)
	if err != nil {
		c.refuse(w, r, ev, &httpError{status: http.StatusUnauthorized, code: "unauthenticated", msg: "the client certificate was not issued by this hearth or has expired", cause: err})
		return
	}
	name, _, err := c.LookupDevice(r.Context(), leaf)
	if err != nil {
		c.refuse(w, r, ev, &httpError{status: http.StatusUnauthorized, code: "unknown_device", msg: "the device is unknown or revoked", cause: err})
		return
	}
	ev.Principal, ev.Resource = "device:"+name, "device:"+name
	ev.Meta = map[string]string{"old_serial": leaf.SerialNumber.String()}
	var req RenewRequest
	if he := decodeBody(r, &req, true); he != nil {
		c.refuse(w, r, ev, he)
		return
	}
	var pub any
	if req.CSR != "" {
		csr, err := ParseCSR([]byte(req.CSR))
		if err == nil {
			err = c.checkCSRNames(csr, name)
		}
		if err != nil {
			c.refuse(w, r, ev, &httpError{status: http.StatusBadRequest, code: "bad_csr", msg: strings.TrimPrefix(err.Error(), "ca: ")})
			return
		}
		pub = csr.PublicKey
	}
	ctx := provisioner.NewContextWithMethod(r.Context(), provisioner.RenewMethod)
	chain, err := c.auth.RenewContext(ctx, leaf, pub)
	if err != nil {
		he := c.signError(err)
		if he.status == http.StatusServiceUnavailable {
			httpx.Unavailable(w)
			return
		}
		c.refuse(w, r, ev, he)
		return
	}
	ev.Meta["serial"] = chain[0].SerialNumber.String()
	ev.Meta["not_after"] = chain[0].NotAfter.UTC().Format(time.RFC3339)
	ev.Outcome, ev.Client, ev.Reason = audit.OutcomeSuccess, r.RemoteAddr, "certificate renewed"
	if err := c.audit.Record(r.Context(), ev); err != nil {
		c.dropIssued(chain[0])
		httpx.Unavailable(w)
		return
	}
	c.thr.GiveBack(r.RemoteAddr)
	httpx.JSON(w, http.StatusCreated, certResponse(chain))
}
