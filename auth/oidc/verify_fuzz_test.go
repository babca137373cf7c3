package oidc

import (
	"context"
	"crypto"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
)

// FuzzVerifyIDToken feeds arbitrary strings to the ID token check (go-oidc's
// parsing and signature check, then hearth's claim handling). Nothing but a
// token signed by the provider's key with the right iss and aud may pass.
func FuzzVerifyIDToken(f *testing.F) {
	key := providerKey(f)
	const iss = "https://idp.example"
	now := time.Unix(1_800_000_000, 0)
	parts := func(edit func(c map[string]any)) *idTokenParts {
		c := map[string]any{"iss": iss, "sub": "s", "aud": []string{"hearth"}, "azp": "hearth",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "email_verified": "true", "amr": []string{"pwd", "otp"}}
		if edit != nil {
			edit(c)
		}
		return &idTokenParts{key: key, kid: "k1", claims: c}
	}
	good := parts(nil).sign()
	f.Add(good)
	f.Add(parts(nil).unsigned())
	f.Add(parts(nil).hs256WithPublicKey())
	f.Add(parts(func(c map[string]any) { c["aud"] = "other" }).sign())
	f.Add(parts(func(c map[string]any) { c["email_verified"] = map[string]any{"x": 1} }).sign())
	f.Add(good[:len(good)-2])
	f.Add("..")
	f.Add("e30.e30.")

	ks := &gooidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&key.PublicKey}}
	v := gooidc.NewVerifier(iss, ks, &gooidc.Config{ClientID: "hearth", SupportedSigningAlgs: DefaultAlgorithms, Now: func() time.Time { return now }})
	d := &discovered{r: &remote{cfg: Provider{Name: "x"}}}
	f.Fuzz(func(t *testing.T, raw string) {
		idt, id, ref := d.verify(context.Background(), v, raw, "hearth")
		if ref != nil {
			return
		}
		if idt.Issuer != iss || id.subject == "" || !strings.Contains(strings.Join(idt.Audience, " "), "hearth") {
			t.Fatalf("accepted a token with iss %q sub %q aud %v", idt.Issuer, id.subject, idt.Audience)
		}
		if raw == good && (!id.emailVerified || !id.mfa) {
			t.Fatalf("good token: email_verified %v, mfa %v, want both true", id.emailVerified, id.mfa)
		}
	})
}
