package oidc

// A real OpenID provider for the tests: zitadel's op package (which hearth
// does not implement) over TLS on 127.0.0.1, with the minimum in-memory
// Storage it needs, a username/password login page, the device grant, and
// a hook in front of its token endpoint that lets a test rewrite the ID
// token (re-signed with the provider's own key, or with "none"/HS256) to
// produce tokens the real provider would never issue.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// testKey is generated once: RSA key generation dominates otherwise.
var (
	testKeyOnce sync.Once
	testKey     *rsa.PrivateKey
)

func providerKey(t testing.TB) *rsa.PrivateKey {
	testKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = k
	})
	return testKey
}

type opUser struct {
	id, username, password, email string
	emailVerified                 bool
}

type opClient struct {
	id, secret   string
	redirectURIs []string
	grants       []zoidc.GrantType
	authMethod   zoidc.AuthMethod
	appType      op.ApplicationType
}

func (c *opClient) GetID() string                       { return c.id }
func (c *opClient) RedirectURIs() []string              { return c.redirectURIs }
func (c *opClient) PostLogoutRedirectURIs() []string    { return nil }
func (c *opClient) ApplicationType() op.ApplicationType { return c.appType }
func (c *opClient) AuthMethod() zoidc.AuthMethod        { return c.authMethod }
func (c *opClient) ResponseTypes() []zoidc.ResponseType {
	return []zoidc.ResponseType{zoidc.ResponseTypeCode}
}
func (c *opClient) GrantTypes() []zoidc.GrantType       { return c.grants }
func (c *opClient) LoginURL(id string) string           { return "/login?authRequestID=" + id }
func (c *opClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c *opClient) IDTokenLifetime() time.Duration      { return time.Hour }
func (c *opClient) DevMode() bool                       { return false }
func (c *opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) IsScopeAllowed(string) bool           { return false }
func (c *opClient) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *opClient) ClockSkew() time.Duration             { return 0 }

type opAuthRequest struct {
	id, clientID, redirectURI, state, nonce, subject string
	scopes                                           []string
	challenge                                        *zoidc.CodeChallenge
	done                                             bool
	authTime                                         time.Time
	amr                                              []string
}

func (a *opAuthRequest) GetID() string                          { return a.id }
func (a *opAuthRequest) GetACR() string                         { return "" }
func (a *opAuthRequest) GetAMR() []string                       { return a.amr }
func (a *opAuthRequest) GetAudience() []string                  { return []string{a.clientID} }
func (a *opAuthRequest) GetAuthTime() time.Time                 { return a.authTime }
func (a *opAuthRequest) GetClientID() string                    { return a.clientID }
func (a *opAuthRequest) GetCodeChallenge() *zoidc.CodeChallenge { return a.challenge }
func (a *opAuthRequest) GetNonce() string                       { return a.nonce }
func (a *opAuthRequest) GetRedirectURI() string                 { return a.redirectURI }
func (a *opAuthRequest) GetResponseType() zoidc.ResponseType    { return zoidc.ResponseTypeCode }
func (a *opAuthRequest) GetResponseMode() zoidc.ResponseMode    { return "" }
func (a *opAuthRequest) GetScopes() []string                    { return a.scopes }
func (a *opAuthRequest) GetState() string                       { return a.state }
func (a *opAuthRequest) GetSubject() string                     { return a.subject }
func (a *opAuthRequest) Done() bool                             { return a.done }

type opSigningKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *opSigningKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *opSigningKey) Key() any                                    { return k.key }
func (k *opSigningKey) ID() string                                  { return k.id }

type opPublicKey struct{ *opSigningKey }

func (k opPublicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k opPublicKey) Use() string                        { return "sig" }
func (k opPublicKey) Key() any                           { return &k.key.PublicKey }

type deviceEntry struct {
	userCode string
	state    *op.DeviceAuthorizationState
}

// opStorage is the provider's in-memory storage.
type opStorage struct {
	mu        sync.Mutex
	key       opSigningKey
	users     map[string]*opUser // by username
	clients   map[string]*opClient
	reqs      map[string]*opAuthRequest
	codes     map[string]string
	devices   map[string]*deviceEntry // by device code
	userCodes map[string]string       // user code → device code
	amr       []string
	n         int
}

var (
	_ op.Storage                    = (*opStorage)(nil)
	_ op.CanSetUserinfoFromRequest  = (*opStorage)(nil)
	_ op.DeviceAuthorizationStorage = (*opStorage)(nil)
)

func (s *opStorage) nextID(prefix string) string {
	s.n++
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s%d-%x", prefix, s.n, b)
}

func (s *opStorage) userByID(id string) *opUser {
	for _, u := range s.users {
		if u.id == id {
			return u
		}
	}
	return nil
}

func (s *opStorage) CreateAuthRequest(_ context.Context, r *zoidc.AuthRequest, userID string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &opAuthRequest{id: s.nextID("ar"), clientID: r.ClientID, redirectURI: r.RedirectURI, state: r.State, nonce: r.Nonce, scopes: r.Scopes, subject: userID}
	if r.CodeChallenge != "" {
		a.challenge = &zoidc.CodeChallenge{Challenge: r.CodeChallenge, Method: r.CodeChallengeMethod}
	}
	s.reqs[a.id] = a
	return a, nil
}

func (s *opStorage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.reqs[id]; ok {
		return a, nil
	}
	return nil, errors.New("auth request not found")
}

func (s *opStorage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code invalid or already used")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *opStorage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest is called once the code was exchanged: the code is
// single-use from then on.
func (s *opStorage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reqs, id)
	for c, rid := range s.codes {
		if rid == id {
			delete(s.codes, c)
		}
	}
	return nil
}

func (s *opStorage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextID("at"), time.Now().Add(5 * time.Minute), nil
}

func (s *opStorage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errors.New("refresh tokens not supported")
}

func (s *opStorage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errors.New("refresh tokens not supported")
}
func (s *opStorage) TerminateSession(context.Context, string, string) error { return nil }
func (s *opStorage) RevokeToken(context.Context, string, string, string) *zoidc.Error {
	return nil
}
func (s *opStorage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) { return &s.key, nil }
func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}
func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{opPublicKey{&s.key}}, nil
}

func (s *opStorage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[id]; ok {
		return c, nil
	}
	return nil, errors.New("client not found")
}

func (s *opStorage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok || c.secret != secret {
		return errors.New("invalid client")
	}
	return nil
}

func (s *opStorage) SetUserinfoFromScopes(context.Context, *zoidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *opStorage) SetUserinfoFromRequest(_ context.Context, ui *zoidc.UserInfo, r op.IDTokenRequest, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userByID(r.GetSubject())
	if u == nil {
		return errors.New("user not found")
	}
	ui.Subject = u.id
	for _, sc := range scopes {
		if sc == zoidc.ScopeEmail {
			ui.Email = u.email
			ui.EmailVerified = zoidc.Bool(u.emailVerified)
		}
	}
	return nil
}

func (s *opStorage) SetUserinfoFromToken(_ context.Context, ui *zoidc.UserInfo, _, subject, _ string) error {
	ui.Subject = subject
	return nil
}
func (s *opStorage) SetIntrospectionFromToken(context.Context, *zoidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection not supported")
}
func (s *opStorage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}
func (s *opStorage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("not supported")
}
func (s *opStorage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("not supported")
}
func (s *opStorage) Health(context.Context) error { return nil }

func (s *opStorage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.userCodes[userCode]; ok {
		return op.ErrDuplicateUserCode
	}
	s.devices[deviceCode] = &deviceEntry{userCode: userCode, state: &op.DeviceAuthorizationState{ClientID: clientID, Scopes: scopes, Expires: expires}}
	s.userCodes[userCode] = deviceCode
	return nil
}

func (s *opStorage) GetDeviceAuthorizatonState(_ context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.devices[deviceCode]
	if !ok || e.state.ClientID != clientID {
		return nil, errors.New("device code not found")
	}
	st := *e.state
	return &st, nil
}

// approveDevice is the person entering the user code and signing in on
// another device.
func (s *opStorage) approveDevice(userCode, username, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	if !ok || u.password != password {
		return errors.New("wrong username or password")
	}
	e, ok := s.devices[s.userCodes[userCode]]
	if !ok {
		return errors.New("unknown user code")
	}
	e.state.Subject, e.state.Done, e.state.AuthTime, e.state.AMR = u.id, true, time.Now(), []string{"pwd"}
	return nil
}

// waitUserCode returns the user code of a pending device request.
func (s *opStorage) waitUserCode(ctx context.Context) (string, error) {
	for {
		s.mu.Lock()
		for uc, dc := range s.userCodes {
			if !s.devices[dc].state.Done {
				s.mu.Unlock()
				return uc, nil
			}
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// testOP is a running provider.
type testOP struct {
	srv     *httptest.Server
	issuer  string
	storage *opStorage
	// mutate, when set, rewrites the ID token of the next token responses.
	mutate atomic.Pointer[func(t *idTokenParts) string]
	// down makes discovery answer 503.
	down atomic.Bool
	// tokenCalls counts token endpoint requests (code exchanges).
	tokenCalls atomic.Int32
}

// idTokenParts is a decoded ID token that a mutation may change.
type idTokenParts struct {
	header map[string]any
	claims map[string]any
	key    *rsa.PrivateKey
	kid    string
}

// sign re-signs with the provider's real key (RS256).
func (p *idTokenParts) sign() string {
	payload, _ := json.Marshal(p.claims)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: p.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", p.kid))
	if err != nil {
		panic(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	s, _ := jws.CompactSerialize()
	return s
}

// unsigned builds an "alg":"none" token.
func (p *idTokenParts) unsigned() string {
	h, _ := json.Marshal(map[string]any{"alg": "none", "typ": "JWT", "kid": p.kid})
	c, _ := json.Marshal(p.claims)
	return b64(h) + "." + b64(c) + "."
}

// hs256WithPublicKey signs with HMAC-SHA256 keyed by the provider's
// public key (PEM), the classic algorithm-confusion forgery.
func (p *idTokenParts) hs256WithPublicKey() string {
	der, _ := x509.MarshalPKIXPublicKey(&p.key.PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	h, _ := json.Marshal(map[string]any{"alg": "HS256", "typ": "JWT", "kid": p.kid})
	c, _ := json.Marshal(p.claims)
	input := b64(h) + "." + b64(c)
	m := hmac.New(sha256.New, pemKey)
	m.Write([]byte(input))
	return input + "." + b64(m.Sum(nil))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func decodeIDToken(raw string) (header, claims map[string]any, err error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, nil, errors.New("not a JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, nil, err
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(hb, &header); err != nil {
		return nil, nil, err
	}
	return header, claims, json.Unmarshal(cb, &claims)
}

const (
	testClientID       = "hearth"
	testClientSecret   = "s3cret-for-tests"
	testDeviceClientID = "hearth-device"
)

// startOP starts the provider with one web client (redirect to
// hearthURL's callback for provider "test") and one public device client.
func startOP(t testing.TB, redirectURIs ...string) *testOP {
	t.Helper()
	return startOPNet(t, nil, redirectURIs...)
}

// startOPNet is startOP, answering as names.idpHost when names is set.
func startOPNet(t testing.TB, names *netNames, redirectURIs ...string) *testOP {
	t.Helper()
	var handler atomic.Pointer[http.Handler]
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*handler.Load()).ServeHTTP(w, r)
	}))
	if names != nil {
		srv.TLS = names.tls.Clone()
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	issuer := srv.URL
	if names != nil {
		issuer = hostURL(srv.URL, names.idpHost)
	}
	st := &opStorage{
		key: opSigningKey{id: "k1", key: providerKey(t)},
		users: map[string]*opUser{
			"alice": {id: "sub-alice", username: "alice", password: "alice-pw", email: "alice@example.org", emailVerified: true},
			"bob":   {id: "sub-bob", username: "bob", password: "bob-pw", email: "bob@example.org", emailVerified: false},
			"carol": {id: "sub-carol", username: "carol", password: "carol-pw", email: "carol@example.org", emailVerified: true},
		},
		clients: map[string]*opClient{
			testClientID: {id: testClientID, secret: testClientSecret, redirectURIs: redirectURIs,
				grants: []zoidc.GrantType{zoidc.GrantTypeCode}, authMethod: zoidc.AuthMethodBasic, appType: op.ApplicationTypeWeb},
			testDeviceClientID: {id: testDeviceClientID, grants: []zoidc.GrantType{zoidc.GrantTypeDeviceCode},
				authMethod: zoidc.AuthMethodNone, appType: op.ApplicationTypeNative},
		},
		reqs: map[string]*opAuthRequest{}, codes: map[string]string{},
		devices: map[string]*deviceEntry{}, userCodes: map[string]string{},
		amr: []string{"pwd"},
	}
	var cryptoKey [32]byte
	_, _ = rand.Read(cryptoKey[:])
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:          cryptoKey,
		CodeMethodS256:     true,
		AuthMethodPost:     true,
		SupportedUILocales: []language.Tag{language.English},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime: 5 * time.Minute, PollInterval: time.Second, UserFormPath: "/device", UserCode: op.UserCodeBase20,
		},
	}, st, op.StaticIssuer(issuer))
	if err != nil {
		t.Fatalf("op.NewProvider: %v", err)
	}
	p := &testOP{srv: srv, issuer: issuer, storage: st}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form method="post" action="/login"><input type="hidden" name="id" value="%s">
<input name="username"><input name="password" type="password"></form>`, html.EscapeString(r.URL.Query().Get("authRequestID")))
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		id, user, pw := r.FormValue("id"), r.FormValue("username"), r.FormValue("password")
		st.mu.Lock()
		u, ok := st.users[user]
		a, aok := st.reqs[id]
		if ok && aok && u.password == pw {
			a.subject, a.done, a.authTime, a.amr = u.id, true, time.Now(), append([]string(nil), st.amr...)
		}
		st.mu.Unlock()
		if !ok || !aok || u.password != pw {
			http.Error(w, "wrong username or password", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, issuer+"/authorize/callback?id="+id, http.StatusFound)
	})
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		p.tokenCalls.Add(1)
		m := p.mutate.Load()
		if m == nil {
			provider.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		provider.ServeHTTP(rec, r)
		var body map[string]any
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		raw, _ := body["id_token"].(string)
		hdr, claims, err := decodeIDToken(raw)
		if err != nil {
			http.Error(w, "test: "+err.Error(), http.StatusInternalServerError)
			return
		}
		body["id_token"] = (*m)(&idTokenParts{header: hdr, claims: claims, key: st.key.key, kid: st.key.id})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		provider.ServeHTTP(w, r)
	})
	mux.Handle("/", provider)
	var hh http.Handler = mux
	handler.Store(&hh)
	return p
}

// setMutation installs f for the following token responses (nil removes).
func (p *testOP) setMutation(f func(t *idTokenParts) string) {
	if f == nil {
		p.mutate.Store(nil)
		return
	}
	p.mutate.Store(&f)
}
