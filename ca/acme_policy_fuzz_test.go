package ca

import (
	"encoding/base64"
	"testing"

	"github.com/smallstep/certificates/acme"
)

// FuzzACMEOrderPolicy feeds arbitrary request bodies to the new-order
// check: it never panics, and a refusal is always rejectedIdentifier with
// one subproblem per refused identifier.
func FuzzACMEOrderPolicy(f *testing.F) {
	c := &CA{set: settings{acmeDomains: DefaultACMEDomains}, hosts: []string{"hearth.test", "127.0.0.1"}}
	jws := func(payload string) string {
		b := base64.RawURLEncoding
		return `{"protected":"` + b.EncodeToString([]byte(`{"alg":"ES256","nonce":"n","url":"u","kid":"k"}`)) + `","payload":"` + b.EncodeToString([]byte(payload)) + `","signature":"` + b.EncodeToString([]byte("sig")) + `"}`
	}
	f.Add(jws(`{"identifiers":[{"type":"dns","value":"bank.example.com"}]}`))
	f.Add(jws(`{"identifiers":[{"type":"dns","value":"web.home.arpa"},{"type":"ip","value":"10.0.0.2"}]}`))
	f.Add(jws(`{"identifiers":[{"type":"email","value":"a@b"}]}`))
	f.Add(`not json`)
	f.Fuzz(func(t *testing.T, body string) {
		prob, refused := c.acmeOrderPolicy([]byte(body))
		if (prob == nil) != (refused == nil) {
			t.Fatalf("problem %v but refused %v", prob, refused)
		}
		if prob != nil {
			want := acme.NewError(acme.ErrorRejectedIdentifierType, "").Type
			if prob.Type != want || len(prob.Subproblems) != len(refused) {
				t.Fatalf("problem %+v for refused %v", prob, refused)
			}
		}
	})
}
