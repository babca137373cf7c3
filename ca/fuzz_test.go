package ca

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// FuzzParseEnrollRequest feeds arbitrary bodies to the parser every
// enrollment runs on untrusted bytes: it must not panic, and whatever it
// accepts has a CSR with a verified signature and an accepted key.
func FuzzParseEnrollRequest(f *testing.F) {
	tc := newTestCA(f, Config{})
	key := newKey(f)
	good := tc.deviceCSR(f, "pi", key)
	f.Add([]byte(`{"token":"a.b.c","csr":` + jsonString(good) + `}`))
	f.Add([]byte(`{"token":"","csr":""}`))
	f.Add([]byte(`{"token":"x","csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte(`{"token":"x","csr":"x","more":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, csr, err := ParseEnrollRequest(body)
		if err != nil {
			return
		}
		if req.Token == "" || csr == nil {
			t.Fatalf("accepted %q without a token or CSR", body)
		}
		if csr.CheckSignature() != nil || checkPublicKey(csr.PublicKey) != nil {
			t.Fatalf("accepted a CSR with a bad signature or key: %q", body)
		}
	})
}

// FuzzEnrollHandler posts arbitrary token and CSR strings to the real
// handler: it must answer with a JSON error of a documented status and
// never issue a certificate.
func FuzzEnrollHandler(f *testing.F) {
	tc := newTestCA(f, Config{})
	tok, err := tc.AddDevice(context.Background(), "pi", []string{"status"}, 0, 0)
	if err != nil {
		f.Fatal(err)
	}
	good := tc.deviceCSR(f, "pi", newKey(f))
	// Seeds: the real token with damaged CSRs, and damaged tokens.
	f.Add(tok.Token, good[:len(good)/2])
	f.Add(tok.Token, strings.Replace(good, "CERTIFICATE REQUEST", "CERTIFICATE", 2))
	f.Add(tok.Token[:len(tok.Token)-3], good)
	f.Add(strings.Replace(tok.Token, ".", "..", 1), good)
	f.Add("e30.e30.e30", good)
	f.Add("", "")
	h := tc.PublicHandler()
	var mu sync.Mutex
	f.Fuzz(func(t *testing.T, token, csr string) {
		if token == tok.Token && csr == good {
			return // the one valid pair
		}
		body := []byte(`{"token":` + jsonString(token) + `,"csr":` + jsonString(csr) + `}`)
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, EnrollPath, bytes.NewReader(body))
		mu.Lock()
		h.ServeHTTP(w, r)
		mu.Unlock()
		switch w.Code {
		case 400, 401, 413:
		default:
			t.Fatalf("enroll(%q, %q) = %d %s", token, csr, w.Code, w.Body)
		}
		if !strings.Contains(w.Body.String(), `"code"`) {
			t.Fatalf("answer is not a JSON error: %s", w.Body)
		}
	})
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[r>>4])
			b.WriteByte("0123456789abcdef"[r&15])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
