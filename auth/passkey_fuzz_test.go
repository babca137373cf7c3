package auth

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// readSeed reads the []byte of a one-value seed file (go test fuzz v1).
func readSeed(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, v, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(v, "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}

// The passkey answers hearth parses from the network: a registration's
// attestation (navigator.credentials.create) and a sign-in's assertion
// (navigator.credentials.get), both JSON wrapping CBOR and binary
// authenticator data. The seeds in testdata/fuzz are real answers from
// Chromium's virtual authenticator, captured from TestChromiumPasskeys.
// Whatever the bytes, parsing must not panic, must refuse oversized or
// empty input before the library sees it, and must never hand on a
// credential ID longer than WebAuthn's 1023 bytes (§5.8.3).

func FuzzParseAttestation(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseAttestation(b)
		if err != nil {
			if !errors.Is(err, ErrPasskeyRefused) {
				t.Fatalf("parseAttestation error %v is not ErrPasskeyRefused", err)
			}
			return
		}
		if len(b) == 0 || len(b) > MaxPasskeyBody {
			t.Fatalf("parseAttestation accepted %d bytes", len(b))
		}
		if len(p.RawID) == 0 || len(p.RawID) > 1023 {
			t.Fatalf("parseAttestation handed on a credential ID of %d bytes", len(p.RawID))
		}
	})
}

func FuzzParseAssertion(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"","signature":"","userHandle":""}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseAssertion(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCredentials) {
				t.Fatalf("parseAssertion error %v is not ErrInvalidCredentials", err)
			}
			return
		}
		if len(b) == 0 || len(b) > MaxPasskeyBody {
			t.Fatalf("parseAssertion accepted %d bytes", len(b))
		}
		if len(p.RawID) == 0 || len(p.RawID) > 1023 {
			t.Fatalf("parseAssertion handed on a credential ID of %d bytes", len(p.RawID))
		}
	})
}

// The seeds are real answers, so they parse: the corpus exercises the
// library's CBOR and authenticator-data paths, not only its JSON errors.
func TestPasskeySeedsParse(t *testing.T) {
	att := readSeed(t, "testdata/fuzz/FuzzParseAttestation/chromium-virtual-authenticator")
	if _, err := parseAttestation(att); err != nil {
		t.Errorf("the captured attestation does not parse: %v", err)
	}
	as := readSeed(t, "testdata/fuzz/FuzzParseAssertion/chromium-virtual-authenticator-0")
	p, err := parseAssertion(as)
	if err != nil {
		t.Fatalf("the captured assertion does not parse: %v", err)
	}
	if !p.Response.AuthenticatorData.Flags.HasUserVerified() {
		t.Errorf("the captured assertion has no UV flag")
	}
	if _, err := parseAssertion(append(bytes.Repeat([]byte(" "), MaxPasskeyBody), as...)); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("an assertion over MaxPasskeyBody: %v", err)
	}
}
