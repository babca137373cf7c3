package oidc

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// flowCookie is the cookie that binds a login in progress to the browser
// that started it. The __Host- prefix makes the browser refuse it unless it
// is Secure, has Path=/ and no Domain, so a sibling host cannot plant one
// (RFC 6265bis §4.1.3.2).
const flowCookie = "__Host-hearth_oidc"

// SessionCookie is the cookie that carries hearth's token to a browser after
// an OIDC login: HttpOnly, Secure, SameSite=Strict, Path=/. The gateway may
// accept it as it accepts "Authorization: Bearer".
const SessionCookie = "__Host-hearth_session"

// flowLifetime bounds how long a started login may take (and the cookie).
const flowLifetime = 10 * time.Minute

// maxCookieLen bounds a sealed cookie before it is decoded.
const maxCookieLen = 3000

// flow purposes.
const (
	purposeLogin = "login"
	purposeLink  = "link"
)

// flowState is what the sealed cookie holds.
type flowState struct {
	Provider string `json:"p"`
	Purpose  string `json:"k"`
	LinkUser string `json:"u,omitempty"` // purposeLink: the signed-in user
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"`
	Expiry   int64  `json:"e"` // unix seconds
}

var errBadCookie = errors.New("oidc: login state cookie is missing, forged or expired")

// sealer seals flowState with AES-256-GCM; the cookie name is the
// additional data, so a sealed value cannot be moved to another cookie.
type sealer struct {
	aead cipher.AEAD
	rand io.Reader
}

func newSealer(key []byte, rnd io.Reader) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("oidc: cookie key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	return &sealer{aead: aead, rand: rnd}, nil
}

func (s *sealer) seal(st *flowState) (string, error) {
	plain, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("oidc: %w", err)
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := io.ReadFull(s.rand, nonce); err != nil {
		return "", fmt.Errorf("oidc: reading randomness: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, plain, []byte(flowCookie))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

func (s *sealer) open(v string, now time.Time) (*flowState, error) {
	if len(v) == 0 || len(v) > maxCookieLen {
		return nil, errBadCookie
	}
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, errBadCookie
	}
	ns := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:ns], raw[ns:], []byte(flowCookie))
	if err != nil {
		return nil, errBadCookie
	}
	var st flowState
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, errBadCookie
	}
	if st.State == "" || st.Nonce == "" || st.Verifier == "" || !now.Before(time.Unix(st.Expiry, 0)) {
		return nil, errBadCookie
	}
	return &st, nil
}

// maxSpent bounds the single-use memory; when it is full of unexpired
// entries new logins are refused (503) rather than memory growing.
const maxSpent = 1 << 16

var errSpentFull = errors.New("oidc: too many logins in progress")

// spentSet remembers used states and device ID tokens until they expire, so
// each is accepted once (RFC 6749 §10.12 and §4.1.2: a code — and here the
// state bound to it — is single-use). It lives in memory: a replica that
// restarts forgets it, which the cookie's 10-minute expiry and the
// provider's own single-use codes cover.
type spentSet struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// spend marks key used until until; it reports false when key was
// already spent.
func (s *spentSet) spend(key string, until, now time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]time.Time)
	}
	if exp, ok := s.m[key]; ok && now.Before(exp) {
		return false, nil
	}
	if len(s.m) >= maxSpent {
		for k, exp := range s.m {
			if !now.Before(exp) {
				delete(s.m, k)
			}
		}
		if len(s.m) >= maxSpent {
			return false, errSpentFull
		}
	}
	s.m[key] = until
	return true, nil
}
