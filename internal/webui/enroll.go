package webui

import (
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/hearth-home/hearth/ca"
)

// The page a phone's QR code opens, /.hearth/ui/enroll/{secret}:
//
//   - GET shows what the link is for and a button; it never consumes the
//     link (link previewers, QR scanners and mail scanners fetch links).
//   - POST (the button; same origin and CSRF token) claims the link, which
//     the CA deletes at once, and answers a page with a one-time password
//     and one download button. The page carries a sealed ticket (AES-GCM
//     under a key in this process's memory) naming the device, the claim
//     and the password; nothing is stored on the server.
//   - POST /.hearth/ui/enroll-file with the ticket makes the key and the
//     certificate in memory and answers the PKCS#12 file or the Apple
//     profile, once: the claim's token id is consumed by the CA.

// Platforms the enrollment page knows.
const (
	PlatformIOS     = "ios"
	PlatformAndroid = "android"
	PlatformMac     = "mac"
	PlatformWindows = "windows"
	PlatformLinux   = "linux"
)

var platforms = []struct{ ID, Name string }{
	{PlatformIOS, "iPhone / iPad"}, {PlatformAndroid, "Android"}, {PlatformMac, "Mac"},
	{PlatformWindows, "Windows"}, {PlatformLinux, "Linux"},
}

// DetectPlatform guesses the platform from a User-Agent. iPadOS Safari
// says "Macintosh"; the page's script (static/platform.js) tells it by its
// touch points, and the buttons always let a person choose.
func DetectPlatform(ua string) string {
	l := strings.ToLower(ua)
	switch {
	case strings.Contains(l, "iphone") || strings.Contains(l, "ipad") || strings.Contains(l, "ipod"):
		return PlatformIOS
	case strings.Contains(l, "android"):
		return PlatformAndroid
	case strings.Contains(l, "windows"):
		return PlatformWindows
	case strings.Contains(l, "macintosh") || strings.Contains(l, "mac os x"):
		return PlatformMac
	}
	return PlatformLinux
}

func validPlatform(p string) bool {
	for _, x := range platforms {
		if x.ID == p {
			return true
		}
	}
	return false
}

type platformChoice struct {
	ID, Name string
	Current  bool
	URL      string
}

type enrollData struct {
	Device    string
	Caps      []string
	Expires   time.Time
	Platform  string
	Detected  bool // the platform came from the User-Agent, not a button
	Platforms []platformChoice
	Action    string
	// After the claim.
	// Password is grouped for typing, in two halves that wrap as a
	// whole: two even lines of two groups.
	Password [2]string
	Ticket   string
	Minutes  int
}

// enrollCSP allows one script from hearth itself, for the iPadOS check;
// everything else is as strict as on every page.
const enrollCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"

func (u *UI) platformOf(r *http.Request, p string) (string, bool) {
	if validPlatform(p) {
		return p, false
	}
	return DetectPlatform(r.UserAgent()), true
}

func choices(path, cur string) []platformChoice {
	out := make([]platformChoice, len(platforms))
	for i, x := range platforms {
		out[i] = platformChoice{ID: x.ID, Name: x.Name, Current: x.ID == cur, URL: path + "?p=" + x.ID}
	}
	return out
}

func (u *UI) enrollPage(w http.ResponseWriter, r *http.Request) {
	if u.o.Enrollment == nil {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such page."})
		return
	}
	secret := r.PathValue("secret")
	info, err := u.o.Enrollment.PhoneLinkInfo(r.Context(), secret)
	if err != nil {
		st, msg := caMessage(err)
		u.render(w, st, "message", page{Title: "Link not valid", Message: msg})
		return
	}
	plat, detected := u.platformOf(r, r.URL.Query().Get("p"))
	w.Header().Set("Content-Security-Policy", enrollCSP)
	u.render(w, http.StatusOK, "enroll", page{Title: "Set up this device", CSRF: u.csrfToken(w, r), Data: enrollData{
		Device: info.Device, Caps: info.Capabilities, Expires: info.ExpiresAt, Platform: plat, Detected: detected,
		Platforms: choices(r.URL.Path, plat), Action: r.URL.Path,
		Minutes: int((info.ExpiresAt.Sub(u.o.Now()) + 30*time.Second) / time.Minute),
	}})
}

// ticket is what the password page carries to the download, sealed.
type ticket struct {
	Device   string    `json:"d"`
	TokenID  string    `json:"j"`
	Password string    `json:"p"`
	Expires  time.Time `json:"e"`
}

const ticketAD = "hearth webui enroll ticket v1"

func (u *UI) sealTicket(t ticket) (string, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, u.keys.ticket.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(u.keys.ticket.Seal(nonce, nonce, b, []byte(ticketAD))), nil
}

var errTicket = errors.New("webui: the download ticket is not valid")

func (u *UI) openTicket(s string) (*ticket, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	ns := u.keys.ticket.NonceSize()
	if err != nil || len(raw) < ns || len(raw) > 4096 {
		return nil, errTicket
	}
	b, err := u.keys.ticket.Open(nil, raw[:ns], raw[ns:], []byte(ticketAD))
	if err != nil {
		return nil, errTicket
	}
	var t ticket
	if err := json.Unmarshal(b, &t); err != nil || !u.o.Now().Before(t.Expires) {
		return nil, errTicket
	}
	return &t, nil
}

// passwordAlphabet has lower-case letters only, without l and o (read as
// 1 and 0): a phone keyboard types them without switching layouts.
const passwordAlphabet = "abcdefghijkmnpqrstuvwxyz"

// PasswordLen gives 20·log2(24) ≈ 91.7 bits, over the 80 the file needs
// against offline guessing of a file that may be copied.
const PasswordLen = 20

// onePassword returns a random password and its grouped form, four
// groups of five ("abcde fghij …").
func onePassword() (string, string, error) {
	var b, g strings.Builder
	max := big.NewInt(int64(len(passwordAlphabet)))
	for i := 0; i < PasswordLen; i++ {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", "", err
		}
		c := passwordAlphabet[n.Int64()]
		b.WriteByte(c)
		if i > 0 && i%5 == 0 {
			g.WriteByte(' ')
		}
		g.WriteByte(c)
	}
	return b.String(), g.String(), nil
}

// halves splits "a b c d" into "a b" and "c d".
func halves(grouped string) [2]string {
	g := strings.Fields(grouped)
	n := (len(g) + 1) / 2
	return [2]string{strings.Join(g[:n], " "), strings.Join(g[n:], " ")}
}

func (u *UI) enrollClaim(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	if u.o.Enrollment == nil {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such page."})
		return
	}
	plat, _ := u.platformOf(r, r.PostForm.Get("p"))
	cl, err := u.o.Enrollment.ClaimPhoneLink(ca.WithClient(r.Context(), r.RemoteAddr), r.PathValue("secret"))
	if err != nil {
		st, msg := caMessage(err)
		u.render(w, st, "message", page{Title: "Link not valid", Message: msg})
		return
	}
	pw, grouped, err := onePassword()
	if err != nil {
		u.unavailable(w, err)
		return
	}
	tk, err := u.sealTicket(ticket{Device: cl.Device, TokenID: cl.TokenID, Password: pw, Expires: cl.ExpiresAt})
	if err != nil {
		u.unavailable(w, err)
		return
	}
	w.Header().Set("Content-Security-Policy", enrollCSP)
	u.render(w, http.StatusOK, "enrollpw", page{Title: "Install the certificate", CSRF: u.csrfToken(w, r), Data: enrollData{
		Device: cl.Device, Expires: cl.ExpiresAt, Platform: plat, Password: halves(grouped), Ticket: tk,
		Minutes: int((cl.ExpiresAt.Sub(u.o.Now()) + 30*time.Second) / time.Minute),
	}})
}

// Download formats.
const (
	FormatP12       = "p12"        // LegacyDES, every platform
	FormatP12Modern = "p12-modern" // AES-256, desktops
	FormatApple     = "mobileconfig"
)

func (u *UI) enrollFile(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	if u.o.Enrollment == nil {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such page."})
		return
	}
	t, err := u.openTicket(r.PostForm.Get("ticket"))
	if err != nil {
		u.render(w, http.StatusGone, "message", page{Title: "Download not valid", Message: "This download has expired or is not valid. Ask for a new link on the Devices page."})
		return
	}
	format := r.PostForm.Get("format")
	if format != FormatP12 && format != FormatP12Modern && format != FormatApple {
		u.render(w, http.StatusBadRequest, "message", page{Title: "Bad request", Message: "Choose one of the download buttons."})
		return
	}
	pc, err := u.o.Enrollment.IssuePhoneCredential(ca.WithClient(r.Context(), r.RemoteAddr), ca.PhoneClaim{Device: t.Device, TokenID: t.TokenID, ExpiresAt: t.Expires})
	if err != nil {
		st, msg := caMessage(err)
		if st == http.StatusGone {
			msg = "This certificate was already downloaded (each link gives one file). Ask for a new link on the Devices page."
		}
		u.render(w, st, "message", page{Title: "Not issued", Message: msg})
		return
	}
	var (
		b        []byte
		ctype    = "application/x-pkcs12"
		filename = t.Device + ".p12"
	)
	switch format {
	case FormatP12:
		b, err = pc.PKCS12(ca.PKCS12Legacy, t.Password)
	case FormatP12Modern:
		b, err = pc.PKCS12(ca.PKCS12Modern, t.Password)
	case FormatApple:
		b, err = pc.MobileConfig(t.Device, t.Password)
		ctype, filename = "application/x-apple-aspen-config", t.Device+".mobileconfig"
	}
	pc.Key = nil // handed over once; nothing keeps it
	if err != nil {
		u.unavailable(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

//go:embed static
var staticFiles embed.FS

func staticFS() fs.FS {
	f, _ := fs.Sub(staticFiles, "static")
	return f
}
