package ca

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
)

// TestStepSignBodyParsedAsSmallstepParsesIt: hearth's checks in front of
// smallstep's /1.0/sign must see exactly the request smallstep will act
// on. smallstep decodes the first JSON value of the body and ignores what
// follows; a body that hearth could not decode (trailing bytes, a second
// object) must therefore be refused, not waved through unchecked. Each
// case carries a token that was replaced by a newer one (the owner
// re-issued it because the first leaked), which hearth alone refuses.
func TestStepSignBodyParsedAsSmallstepParsesIt(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	hc := tc.client(nil)
	old, _ := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if _, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	obj, _ := json.Marshal(map[string]string{"ott": old.Token, "csr": tc.deviceCSR(t, "pi", newKey(t))})
	cases := []struct {
		name string
		body []byte
		want int
	}{
		{"plain", obj, http.StatusUnauthorized},
		{"trailing garbage", append(append([]byte{}, obj...), " garbage"...), http.StatusBadRequest},
		{"second object", append(append([]byte{}, obj...), `{"ott":""}`...), http.StatusBadRequest},
		{"trailing bracket", append(append([]byte{}, obj...), ']'), http.StatusBadRequest},
		{"not an object", []byte(`["x"]`), http.StatusBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, out := post(t, hc, tc.api.URL+"/1.0/sign", c.body)
			if st != c.want {
				t.Errorf("POST /1.0/sign %q = %d %v, want %d", c.name, st, out, c.want)
			}
		})
	}
	if certs := tc.certsOf(t, "pi"); len(certs) != 0 {
		t.Errorf("pi holds %d certificates after replaced-token requests, want 0", len(certs))
	}
}
