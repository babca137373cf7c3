package webui

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
)

// Every form carries a CSRF token: the "signed double-submit cookie" of
// the OWASP CSRF Prevention Cheat Sheet. A random value lives in the
// __Host-hearth_csrf cookie (HttpOnly, Secure, SameSite=Strict, pinned to
// this host by its prefix, RFC 6265bis §4.1.3.2); the form's hidden field
// is an HMAC-SHA256 of it under a key this process made at start. A post
// is accepted only with both, matching (compared in constant time), and
// from this origin (sameOrigin): a site that cannot read hearth's pages
// cannot produce the field, and one that plants a cookie (a sibling host)
// cannot plant a __Host- cookie. The key lives in memory only: after a
// restart a form is simply reloaded.
const (
	csrfCookie = "__Host-hearth_csrf"
	csrfField  = "csrf"
)

// pageKeys are the process's secrets for the pages: the CSRF key and the
// AEAD that seals enrollment tickets (enroll.go).
type pageKeys struct {
	csrf   []byte
	ticket cipher.AEAD
}

func newPageKeys() pageKeys {
	k := make([]byte, 64)
	if _, err := rand.Read(k); err != nil {
		panic("webui: crypto/rand failed: " + err.Error()) // crypto/rand never fails on Linux
	}
	blk, _ := aes.NewCipher(k[32:])
	aead, _ := cipher.NewGCM(blk)
	return pageKeys{csrf: k[:32], ticket: aead}
}

func (u *UI) csrfMAC(v string) string {
	m := hmac.New(sha256.New, u.keys.csrf)
	m.Write([]byte("hearth webui csrf v1\x00"))
	m.Write([]byte(v))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfToken returns the token for the forms of the page being rendered,
// setting the cookie first when the browser has none (or a malformed one).
func (u *UI) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && validCSRFCookie(c.Value) {
		return u.csrfMAC(c.Value)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("webui: crypto/rand failed: " + err.Error())
	}
	v := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name: csrfCookie, Value: v, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	// A page rendered in the same response must see it too.
	r.AddCookie(&http.Cookie{Name: csrfCookie, Value: v})
	return u.csrfMAC(v)
}

func validCSRFCookie(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == 32
}

var errCSRF = errors.New("webui: the form's CSRF token is missing or wrong")

// checkCSRF checks a parsed form's token against the cookie.
func (u *UI) checkCSRF(r *http.Request) error {
	c, err := r.Cookie(csrfCookie)
	if err != nil || !validCSRFCookie(c.Value) {
		return errCSRF
	}
	got := r.PostForm.Get(csrfField)
	if got == "" || !hmac.Equal([]byte(got), []byte(u.csrfMAC(c.Value))) {
		return errCSRF
	}
	return nil
}

// formOK is the gate of every form post: same origin, a url-encoded body
// within MaxFormBytes, and the CSRF token. It answers the request itself
// when it refuses.
func (u *UI) formOK(w http.ResponseWriter, r *http.Request) bool {
	if !sameOrigin(r) {
		u.forbidden(w)
		return false
	}
	if !u.readForm(w, r) {
		return false
	}
	if u.checkCSRF(r) != nil {
		u.forbidden(w)
		return false
	}
	return true
}
