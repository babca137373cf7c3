package pgnosql

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"testing"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/minica"

	"github.com/hearth-home/hearth/internal/pgtest"
)

// Two embedded step-ca authorities — two replicas — on one PostgreSQL
// database through this package, with one JWK provisioner. For each of 20
// one-time tokens, 8 racers spread over both replicas present it to
// Authorize and, if accepted, Sign: exactly one certificate per token, and
// exactly one certificate row in the CA database.
func TestAuthorityOneTimeTokenAcrossReplicas(t *testing.T) {
	const racers, trials = 8, 20
	ctx := context.Background()
	pdb := pgtest.New(t)
	ca, err := minica.New()
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	pub := jwk.Public()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jwk.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", jwk.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	replicas := make([]*authority.Authority, 2)
	for i := range replicas {
		db, err := Open(pdb.DSN, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		adb, err := NewAuthDB(db)
		if err != nil {
			t.Fatal(err)
		}
		a, err := authority.NewEmbedded(
			authority.WithConfig(&config.Config{
				Address:  "127.0.0.1:443",
				DNSNames: []string{"ca.test"},
				AuthorityConfig: &config.AuthConfig{
					Provisioners:         provisioner.List{&provisioner.JWK{Type: "JWK", Name: "prov", Key: &pub}},
					DisableIssuedAtCheck: true,
				},
			}),
			authority.WithX509RootCerts(ca.Root),
			authority.WithX509Signer(ca.Intermediate, ca.Signer),
			authority.WithDatabase(adb),
			authority.WithQuietInit(),
		)
		if err != nil {
			t.Fatal(err)
		}
		replicas[i] = a
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "dev.test"}, DNSNames: []string{"dev.test"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	signCtx := provisioner.NewContextWithMethod(ctx, provisioner.SignMethod)
	tokens := make([]string, trials)
	mint := func(trial int) {
		now := time.Now()
		tok, err := jose.Signed(signer).Claims(struct {
			jose.Claims
			SANs []string `json:"sans"`
		}{jose.Claims{
			ID: fmt.Sprintf("jti-%d-%d", trial, now.UnixNano()), Issuer: "prov", Subject: "dev.test",
			Audience: jose.Audience{"https://ca.test/1.0/sign"},
			IssuedAt: jose.NewNumericDate(now), NotBefore: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(now.Add(5 * time.Minute)),
		}, []string{"dev.test"}}).CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		tokens[trial] = tok
	}
	// A racer wins when its replica accepts the token and signs.
	wins := pgtest.Race(racers, trials, mint, func(trial, r int) bool {
		a := replicas[r%len(replicas)]
		opts, err := a.Authorize(signCtx, tokens[trial])
		if err != nil {
			return false
		}
		if _, err := a.SignWithContext(signCtx, csr, provisioner.SignOptions{}, opts...); err != nil {
			t.Errorf("trial %d: Sign after Authorize: %v", trial, err)
			return false
		}
		return true
	})
	checkOneWinner(t, "certificates for one one-time token", wins)
	var rows int
	if err := pdb.Pool(t).QueryRow(ctx, "SELECT count(*) FROM hearth_ca.x509_certs").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != trials {
		t.Errorf("certificate rows = %d, want %d", rows, trials)
	}
}
