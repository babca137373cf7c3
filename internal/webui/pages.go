package webui

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/mtls"
)

// Enrollment is what the Devices and Enroll pages need of the CA (*ca.CA).
type Enrollment interface {
	AddPhoneLink(ctx context.Context, name string, caps []string, ttl, lifetime time.Duration) (*ca.PhoneLink, error)
	PhoneLinkURL(secret string) string
	PhoneLinkInfo(ctx context.Context, secret string) (*ca.PhoneLinkInfo, error)
	ClaimPhoneLink(ctx context.Context, secret string) (*ca.PhoneClaim, error)
	IssuePhoneCredential(ctx context.Context, cl ca.PhoneClaim) (*ca.PhoneCredential, error)
	RevokeDevice(ctx context.Context, name string) (*ca.Device, error)
}

// Users is what the Users, Account, recovery and reset pages need of the
// auth service (*auth.Service).
type Users interface {
	ListUsers(ctx context.Context) ([]auth.UserInfo, error)
	AddUser(ctx context.Context, name string, caps []string, password string) error
	ResetCode(ctx context.Context, name string) (string, time.Time, error)
	Disable(ctx context.Context, name string) error
	Enable(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	SetPassword(ctx context.Context, name, oldPassword, newPassword, totpCode, keepFamily, client string) error
	EnrollTOTP(ctx context.Context, name string) (secret, url string, err error)
	ConfirmTOTP(ctx context.Context, name, code string) error
	RegenerateRecoveryCodes(ctx context.Context, name string) ([]string, error)
	Recover(ctx context.Context, req auth.RecoverRequest) error
	ResetPassword(ctx context.Context, username, code, newPassword, client string) error
	Sessions(ctx context.Context, name, current string) []auth.SessionInfo
	EndSession(ctx context.Context, name, family, client string) error
}

// AuditStatus is what the Audit page shows beside the entries.
type AuditStatus interface {
	// Verify checks the whole log now (audit.Verify).
	Verify(ctx context.Context) (*audit.VerifyResult, error)
	// Checkpoint is the latest signed checkpoint, as text.
	Checkpoint() []byte
}

// The pages' paths below Prefix.
const (
	DevicesPath = Prefix + "devices"
	UsersPath   = Prefix + "users"
	AuditPath   = Prefix + "audit"
	AccountPath = Prefix + "account"
	RecoverPath = Prefix + "recover"
	ResetPath   = Prefix + "reset"
	EnrollPath  = Prefix + "enroll/"
	// EnrollFilePath serves the one download of an enrollment.
	EnrollFilePath = Prefix + "enroll-file"
	staticPath     = Prefix + "static/"
)

// FreshLogin is how recent a sign-in must be to regenerate recovery codes
// (OWASP ASVS 5.0 V7.5.3: re-authentication before sensitive changes).
const FreshLogin = 5 * time.Minute

func (u *UI) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+RecoverPath, u.recoverPage)
	mux.HandleFunc("POST "+RecoverPath, u.recoverPost)
	mux.HandleFunc("GET "+ResetPath, u.resetPage)
	mux.HandleFunc("POST "+ResetPath, u.resetPost)
	mux.HandleFunc("GET "+DevicesPath, u.devicesPage)
	mux.HandleFunc("POST "+DevicesPath, u.devicesAdd)
	mux.HandleFunc("GET "+DevicesPath+"/{name}/revoke", u.revokeConfirm)
	mux.HandleFunc("POST "+DevicesPath+"/{name}/revoke", u.revokePost)
	mux.HandleFunc("GET "+UsersPath, u.usersPage)
	mux.HandleFunc("POST "+UsersPath, u.usersAdd)
	mux.HandleFunc("POST "+UsersPath+"/{name}/{action}", u.userAction)
	mux.HandleFunc("GET "+AuditPath, u.auditPage)
	mux.HandleFunc("GET "+AccountPath, u.accountPage)
	mux.HandleFunc("POST "+AccountPath+"/{action}", u.accountAction)
	mux.HandleFunc("GET "+EnrollPath+"{secret}", u.enrollPage)
	mux.HandleFunc("POST "+EnrollPath+"{secret}", u.enrollClaim)
	mux.HandleFunc("POST "+EnrollFilePath, u.enrollFile)
	mux.Handle("GET "+staticPath, http.StripPrefix(staticPath, http.FileServerFS(staticFS())))
}

// base is the page data every signed-in page starts from.
func (u *UI) base(w http.ResponseWriter, r *http.Request, title string, pr *authz.Principal) page {
	p := page{Title: title, Principal: pr, CSRF: u.csrfToken(w, r)}
	if c, err := r.Cookie(mtls.SessionCookie); err == nil && c.Value != "" && pr != nil && pr.Method == authz.MethodToken {
		p.Logout = true
	}
	return p
}

// decideAdmin asks the one authorizer whether pr may use hearth:admin and
// records the decision (action says what for) before anything else
// happens, as every hearth:admin decision is recorded; without the log it
// answers 503 and reports !ok.
func (u *UI) decideAdmin(w http.ResponseWriter, r *http.Request, pr *authz.Principal, action string) (authz.Decision, bool) {
	d := u.o.Policy.Decide(pr, authz.CapHearthAdmin, u.o.Now())
	outcome := audit.OutcomeDeny
	if d.Allow {
		outcome = audit.OutcomeAllow
	}
	err := u.o.Recorder.Record(r.Context(), audit.Event{
		Name: audit.EventAuthzDecision, Outcome: outcome, Principal: pr.ID,
		Resource: r.URL.Path, Reason: d.Reason(), Client: r.RemoteAddr,
		Meta: map[string]string{"capability": string(authz.CapHearthAdmin), "via": "webui", "action": action,
			"method": string(pr.Method), "zone": string(pr.Zone)},
	})
	if err != nil {
		u.o.Logger.Error().Err(err).Msg("webui: recording a decision failed")
		u.render(w, http.StatusServiceUnavailable, "message", page{Title: "Unavailable", Message: "hearth's audit log is unavailable; try again shortly."})
		return d, false
	}
	return d, true
}

// admin gates an admin page or action: a principal (else the sign-in
// page), hearth:admin by the authorizer (else 403 with the reason).
func (u *UI) admin(w http.ResponseWriter, r *http.Request, title, action string) (page, bool) {
	pr := authz.PrincipalFrom(r.Context())
	if pr == nil {
		http.Redirect(w, r, LoginPath, http.StatusSeeOther)
		return page{}, false
	}
	d, ok := u.decideAdmin(w, r, pr, action)
	if !ok {
		return page{}, false
	}
	p := u.base(w, r, title, pr)
	if !d.Allow {
		p.Title = "Not allowed"
		p.Message = "This page needs hearth:admin: " + d.Reason() + "."
		if pr.Method == authz.MethodToken && !pr.MFA {
			p.Notice = "Set up a one-time code on your Account page, then sign in again with it."
		}
		u.render(w, http.StatusForbidden, "denied", p)
		return p, false
	}
	p.Admin = true
	return p, true
}

// inWords says a wait in words for people: "2 minutes", "45 seconds".
func inWords(d time.Duration) string {
	secs := int64((d + time.Second - 1) / time.Second)
	switch {
	case secs <= 1:
		return "1 second"
	case secs < 60:
		return strconv.FormatInt(secs, 10) + " seconds"
	case secs < 3600:
		m := (secs + 59) / 60
		if m == 1 {
			return "1 minute"
		}
		return strconv.FormatInt(m, 10) + " minutes"
	}
	h := (secs + 3599) / 3600
	if h == 1 {
		return "1 hour"
	}
	return strconv.FormatInt(h, 10) + " hours"
}

// throttled sets Retry-After and returns the message of a 429.
func throttled(w http.ResponseWriter, d time.Duration) string {
	secs := int64((d + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	return "Too many attempts. Try again in " + inWords(time.Duration(secs)*time.Second) + "."
}

// authMessage maps an error of the auth service to a status and words.
func authMessage(w http.ResponseWriter, err error) (int, string) {
	var te *auth.ThrottledError
	var pe *auth.PolicyError
	var ce *auth.CapsError
	switch {
	case errors.As(err, &te):
		return http.StatusTooManyRequests, throttled(w, te.RetryAfter)
	case errors.As(err, &pe):
		return http.StatusBadRequest, "That password cannot be used: " + strings.TrimPrefix(pe.Error(), "auth: ") + "."
	case errors.As(err, &ce):
		return http.StatusBadRequest, "Unknown capability: " + ce.Error() + "."
	case errors.Is(err, auth.ErrBadName):
		return http.StatusBadRequest, strings.TrimPrefix(auth.ErrBadName.Error(), "auth: ") + "."
	case errors.Is(err, auth.ErrUserExists):
		return http.StatusConflict, "A user of that name exists."
	case errors.Is(err, auth.ErrNoUser):
		return http.StatusNotFound, "There is no such user."
	case errors.Is(err, auth.ErrBadCode):
		return http.StatusBadRequest, "The one-time code is wrong or was already used."
	case errors.Is(err, auth.ErrInvalidCredentials):
		return http.StatusUnauthorized, "The code, user name or password is wrong."
	case errors.Is(err, auth.ErrBusy):
		w.Header().Set("Retry-After", "1")
		return http.StatusServiceUnavailable, "hearth is busy. Try again in a moment."
	}
	return http.StatusServiceUnavailable, "hearth's store or audit log is unavailable; try again shortly."
}

// caMessage maps an error of the CA to a status and words.
func caMessage(err error) (int, string) {
	switch {
	case errors.Is(err, ca.ErrBadRequest):
		return http.StatusBadRequest, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "ca: "), "bad request: ")
	case errors.Is(err, ca.ErrDeviceExists):
		return http.StatusConflict, "A device of that name is enrolled; revoke it first, or choose another name."
	case errors.Is(err, ca.ErrUnknownDevice):
		return http.StatusNotFound, "There is no such device."
	case errors.Is(err, ca.ErrLinkInvalid):
		return http.StatusGone, "This enrollment link was already used, has expired or was replaced. Ask for a new one on the Devices page."
	}
	return http.StatusServiceUnavailable, "hearth's store or audit log is unavailable; try again shortly."
}

// ---- Sign-in extras: recovery code, reset code ----

type passwordForm struct {
	Action   string // the form's path
	Kind     string // "recover" or "reset"
	Username string
}

func (u *UI) recoverPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, http.StatusOK, "setpassword", page{Title: "Lost your password?", CSRF: u.csrfToken(w, r),
		Data: passwordForm{Action: RecoverPath, Kind: "recover"}})
}

func (u *UI) resetPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, http.StatusOK, "setpassword", page{Title: "Set your password", CSRF: u.csrfToken(w, r),
		Data: passwordForm{Action: ResetPath, Kind: "reset"}})
}

func (u *UI) passwordPost(w http.ResponseWriter, r *http.Request, kind string, do func(user, code, pw string) error) {
	if !u.formOK(w, r) {
		return
	}
	if u.o.Users == nil {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such page."})
		return
	}
	f := r.PostForm
	user, code, pw := strings.TrimSpace(f.Get("username")), strings.TrimSpace(f.Get("code")), f.Get("password")
	if pw != f.Get("password2") {
		u.render(w, http.StatusBadRequest, "setpassword", page{Title: "Set your password", Message: "The two passwords differ.", CSRF: u.csrfToken(w, r),
			Data: passwordForm{Action: r.URL.Path, Kind: kind, Username: user}})
		return
	}
	if err := do(user, code, pw); err != nil {
		st, msg := authMessage(w, err)
		u.render(w, st, "setpassword", page{Title: "Set your password", Message: msg, CSRF: u.csrfToken(w, r),
			Data: passwordForm{Action: r.URL.Path, Kind: kind, Username: user}})
		return
	}
	http.Redirect(w, r, LoginPath+"?done=password", http.StatusSeeOther)
}

func (u *UI) recoverPost(w http.ResponseWriter, r *http.Request) {
	u.passwordPost(w, r, "recover", func(user, code, pw string) error {
		return u.o.Users.Recover(r.Context(), auth.RecoverRequest{Username: user, RecoveryCode: code, NewPassword: pw, Client: r.RemoteAddr})
	})
}

func (u *UI) resetPost(w http.ResponseWriter, r *http.Request) {
	u.passwordPost(w, r, "reset", func(user, code, pw string) error {
		return u.o.Users.ResetPassword(r.Context(), user, code, pw, r.RemoteAddr)
	})
}

// ---- Devices ----

type devicesData struct {
	Devices  []ca.Device
	CanAdd   bool
	Bundles  []string
	Revoked  string
	Link     *linkData
	AddName  string
	AddError string
	// LastSeen is each device's latest allowed request among the latest
	// LastSeenScan device decisions in the audit log, formatted.
	LastSeen map[string]string
}

// LastSeenScan bounds how many of the latest device decisions the Devices
// page reads to tell when each device was last seen.
const LastSeenScan = 2000

type linkData struct {
	Device  string
	URL     string
	QR      template.HTML
	Expires time.Time
	Minutes int
}

// deviceBundles are the capability bundles offered on the Add form.
var deviceBundles = []string{"system:read", "system:write", "system:admin"}

func (u *UI) devicesPage(w http.ResponseWriter, r *http.Request) {
	p, ok := u.admin(w, r, "Devices", "devices.list")
	if !ok {
		return
	}
	p.Nav = "devices"
	d := devicesData{CanAdd: u.o.Enrollment != nil, Bundles: deviceBundles}
	if n := r.URL.Query().Get("revoked"); ca.ValidDeviceName(n) {
		d.Revoked = n
	}
	if !u.listDevices(w, r, &d) {
		return
	}
	p.Data = d
	u.render(w, http.StatusOK, "devices", p)
}

func (u *UI) listDevices(w http.ResponseWriter, r *http.Request, d *devicesData) bool {
	if u.o.Devices == nil {
		return true
	}
	var err error
	if d.Devices, err = u.o.Devices.ListDevices(r.Context()); err != nil {
		u.unavailable(w, err)
		return false
	}
	d.LastSeen = map[string]string{}
	if u.o.Audit == nil {
		return true
	}
	es, err := u.o.Audit.Tail(LastSeenScan, func(e audit.Entry) bool {
		return e.Name == audit.EventAuthzDecision && e.Outcome == audit.OutcomeAllow && strings.HasPrefix(e.Principal, "device:")
	})
	if err != nil {
		u.unavailable(w, err)
		return false
	}
	for _, e := range es { // oldest first: the last write wins
		d.LastSeen[strings.TrimPrefix(e.Principal, "device:")] = e.Time.UTC().Format("2006-01-02 15:04")
	}
	return true
}

func (u *UI) devicesAdd(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	p, ok := u.admin(w, r, "Devices", "devices.add")
	if !ok {
		return
	}
	p.Nav = "devices"
	if u.o.Enrollment == nil {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not available", Message: "Adding devices from the web page is not set up."})
		return
	}
	f := r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	var life time.Duration
	if v := f.Get("lifetime"); v != "" {
		var err error
		if life, err = time.ParseDuration(v); err != nil || life <= 0 {
			life = -1 // refused by the CA with its own message
		}
	}
	lk, err := u.o.Enrollment.AddPhoneLink(ca.WithClient(r.Context(), r.RemoteAddr), name, f["caps"], 0, life)
	if err != nil {
		st, msg := caMessage(err)
		d := devicesData{CanAdd: true, Bundles: deviceBundles, AddName: name, AddError: msg}
		if !u.listDevices(w, r, &d) {
			return
		}
		p.Data = d
		u.render(w, st, "devices", p)
		return
	}
	link := u.o.Enrollment.PhoneLinkURL(lk.Secret)
	qr, err := qrSVG(link)
	if err != nil {
		u.unavailable(w, err)
		return
	}
	p.Title = "Scan with the phone"
	p.Data = linkData{Device: lk.Device, URL: link, QR: qr, Expires: lk.ExpiresAt,
		Minutes: int((lk.ExpiresAt.Sub(u.o.Now()) + 30*time.Second) / time.Minute)}
	u.render(w, http.StatusOK, "devicelink", p)
}

func (u *UI) revokeConfirm(w http.ResponseWriter, r *http.Request) {
	p, ok := u.admin(w, r, "Revoke a device", "devices.revoke.confirm")
	if !ok {
		return
	}
	p.Nav = "devices"
	name := r.PathValue("name")
	if !ca.ValidDeviceName(name) {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such device."})
		return
	}
	p.Data = name
	u.render(w, http.StatusOK, "revoke", p)
}

func (u *UI) revokePost(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	if _, ok := u.admin(w, r, "Revoke a device", "devices.revoke"); !ok {
		return
	}
	if u.o.Enrollment == nil {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not available", Message: "Revoking from the web page is not set up."})
		return
	}
	name := r.PathValue("name")
	if _, err := u.o.Enrollment.RevokeDevice(ca.WithClient(r.Context(), r.RemoteAddr), name); err != nil {
		st, msg := caMessage(err)
		u.render(w, st, "message", page{Title: "Not revoked", Message: msg})
		return
	}
	http.Redirect(w, r, DevicesPath+"?revoked="+name, http.StatusSeeOther)
}

// ---- Users ----

type usersData struct {
	Users   []auth.UserInfo
	Bundles []string
	Code    string // a setup or reset code just issued
	CodeFor string
	Expires time.Time
	Done    string
}

func (u *UI) usersPage(w http.ResponseWriter, r *http.Request) {
	p, ok := u.admin(w, r, "Users", "users.list")
	if !ok {
		return
	}
	u.renderUsers(w, r, p, http.StatusOK, usersData{})
}

func (u *UI) renderUsers(w http.ResponseWriter, r *http.Request, p page, status int, d usersData) {
	p.Nav = "users"
	if u.o.Users == nil {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not available", Message: "User administration is not set up."})
		return
	}
	us, err := u.o.Users.ListUsers(r.Context())
	if err != nil {
		u.unavailable(w, err)
		return
	}
	d.Users, d.Bundles = us, deviceBundles
	p.Data = d
	u.render(w, status, "users", p)
}

func (u *UI) usersAdd(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	p, ok := u.admin(w, r, "Users", "users.add")
	if !ok || u.o.Users == nil {
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	// No password: the user chooses her own with a one-time setup code,
	// so no admin ever knows it (OWASP ASVS 5.0 V6.4.6).
	if err := u.o.Users.AddUser(r.Context(), name, r.PostForm["caps"], ""); err != nil {
		st, msg := authMessage(w, err)
		p.Message = msg
		u.renderUsers(w, r, p, st, usersData{})
		return
	}
	code, exp, err := u.o.Users.ResetCode(r.Context(), name)
	if err != nil {
		st, msg := authMessage(w, err)
		p.Message = msg
		u.renderUsers(w, r, p, st, usersData{})
		return
	}
	u.renderUsers(w, r, p, http.StatusOK, usersData{Code: code, CodeFor: name, Expires: exp, Done: "added"})
}

func (u *UI) userAction(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	action := r.PathValue("action")
	p, ok := u.admin(w, r, "Users", "users."+action)
	if !ok || u.o.Users == nil {
		return
	}
	name := r.PathValue("name")
	ctx := r.Context()
	var err error
	d := usersData{CodeFor: name, Done: action}
	switch action {
	case "disable":
		err = u.o.Users.Disable(ctx, name)
	case "enable":
		err = u.o.Users.Enable(ctx, name)
	case "unlock":
		err = u.o.Users.Unlock(ctx, name)
	case "reset":
		d.Code, d.Expires, err = u.o.Users.ResetCode(ctx, name)
	default:
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such action."})
		return
	}
	if err != nil {
		st, msg := authMessage(w, err)
		p.Message = msg
		u.renderUsers(w, r, p, st, usersData{})
		return
	}
	u.renderUsers(w, r, p, http.StatusOK, d)
}

// ---- Audit ----

type auditData struct {
	Entries    []audit.Entry
	Event      string
	Principal  string
	Since      string
	Verified   *audit.VerifyResult
	VerifyErr  string
	Checkpoint string
	Shown, Max int
}

// AuditPageRows is how many matching entries the Audit page shows.
const AuditPageRows = 100

func (u *UI) auditPage(w http.ResponseWriter, r *http.Request) {
	p, ok := u.admin(w, r, "Audit log", "audit.read")
	if !ok {
		return
	}
	p.Nav = "audit"
	q := r.URL.Query()
	d := auditData{Event: clip(q.Get("event"), 64), Principal: clip(q.Get("principal"), 200), Since: clip(q.Get("since"), 32), Max: AuditPageRows}
	var since time.Time
	if d.Since != "" {
		if dur, err := time.ParseDuration(d.Since); err == nil && dur > 0 {
			since = u.o.Now().Add(-dur)
		} else if t, err := time.Parse("2006-01-02", d.Since); err == nil {
			since = t
		} else {
			p.Message = "“Since” takes a duration such as 1h or 30m, or a date such as 2026-12-01."
		}
	}
	if u.o.Audit != nil {
		aq := audit.AdminQuery{N: AuditPageRows, Event: d.Event, Principal: d.Principal, Since: since}
		es, err := u.auditEntries(r.Context(), aq)
		if err != nil {
			u.unavailable(w, err)
			return
		}
		for i, j := 0, len(es)-1; i < j; i, j = i+1, j-1 {
			es[i], es[j] = es[j], es[i]
		}
		d.Entries, d.Shown = es, len(es)
	}
	if u.o.AuditStatus != nil {
		res, err := u.o.AuditStatus.Verify(r.Context())
		d.Verified = res
		if err != nil {
			d.VerifyErr = err.Error()
		}
		d.Checkpoint = string(u.o.AuditStatus.Checkpoint())
	}
	p.Data = d
	u.render(w, http.StatusOK, "auditlog", p)
}

// auditEntries reads the newest entries matching q: with the filters in
// the store's query when it has one (audit.AdminSource: the PostgreSQL
// history, one indexed query per page), else through Tail.
func (u *UI) auditEntries(ctx context.Context, q audit.AdminQuery) ([]audit.Entry, error) {
	src, ok := u.o.Audit.(audit.AdminSource)
	if !ok {
		return u.o.Audit.Tail(q.N, q.Match)
	}
	size, _, err := src.AdminState(ctx)
	if err != nil {
		return nil, err
	}
	q.Before = size
	return src.AdminEntries(ctx, q)
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ---- Account ----

type accountData struct {
	User        *auth.UserInfo
	TOTPSecret  string
	TOTPQR      template.HTML
	Codes       []string
	Done        string
	FreshNeeded bool
	Sessions    []auth.SessionInfo
	// Passkeys are the user's passkeys (when the pages offer them), and
	// PasskeyFresh whether this session may add one now.
	Passkeys     []auth.PasskeyInfo
	PasskeyFresh bool
}

// self returns the signed-in user's name, or answers the request.
func (u *UI) self(w http.ResponseWriter, r *http.Request) (page, string, bool) {
	pr := authz.PrincipalFrom(r.Context())
	if pr == nil {
		http.Redirect(w, r, LoginPath, http.StatusSeeOther)
		return page{}, "", false
	}
	p := u.base(w, r, "Your account", pr)
	p.Nav = "account"
	name, isUser := strings.CutPrefix(pr.ID, "user:")
	if pr.Kind != authz.KindUser || !isUser || u.o.Users == nil {
		p.Message = "This page is for people signed in with a user account; " + pr.ID + " is not one."
		u.render(w, http.StatusForbidden, "denied", p)
		return p, "", false
	}
	return p, name, true
}

func (u *UI) renderAccount(w http.ResponseWriter, r *http.Request, p page, name string, status int, d accountData) {
	us, err := u.o.Users.ListUsers(r.Context())
	if err != nil {
		u.unavailable(w, err)
		return
	}
	for i := range us {
		if us[i].Name == name {
			d.User = &us[i]
		}
	}
	d.Sessions = u.o.Users.Sessions(r.Context(), name, sessionToken(r))
	if u.o.Passkeys != nil {
		if d.Passkeys, err = u.o.Passkeys.Passkeys(r.Context(), name); err != nil {
			u.unavailable(w, err)
			return
		}
		pr := authz.PrincipalFrom(r.Context())
		d.PasskeyFresh = pr != nil && u.o.Now().Sub(pr.AuthTime) <= auth.PasskeyFreshLogin
		p.Passkeys = true
		w.Header().Set("Content-Security-Policy", scriptCSP)
	}
	if d.Done == "" {
		d.Done = doneParam(r)
	}
	p.Data = d
	u.render(w, status, "account", p)
}

func (u *UI) accountPage(w http.ResponseWriter, r *http.Request) {
	p, name, ok := u.self(w, r)
	if !ok {
		return
	}
	u.renderAccount(w, r, p, name, http.StatusOK, accountData{})
}

func (u *UI) accountAction(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	p, name, ok := u.self(w, r)
	if !ok {
		return
	}
	ctx, f := r.Context(), r.PostForm
	d := accountData{Done: r.PathValue("action")}
	var err error
	switch d.Done {
	case "password":
		if f.Get("new") != f.Get("new2") {
			p.Message = "The two new passwords differ."
			u.renderAccount(w, r, p, name, http.StatusBadRequest, accountData{})
			return
		}
		// Every other session ends; this one is kept (auth.SetPassword).
		keep := ""
		for _, si := range u.o.Users.Sessions(ctx, name, sessionToken(r)) {
			if si.Current {
				keep = si.Family
			}
		}
		err = u.o.Users.SetPassword(ctx, name, f.Get("current"), f.Get("new"), strings.TrimSpace(f.Get("totp")), keep, r.RemoteAddr)
	case "end-session":
		err = u.o.Users.EndSession(ctx, name, f.Get("family"), r.RemoteAddr)
	case "totp":
		var otpURL string
		d.TOTPSecret, otpURL, err = u.o.Users.EnrollTOTP(ctx, name)
		if err == nil {
			d.TOTPQR, err = qrSVG(otpURL)
		}
	case "totp-confirm":
		err = u.o.Users.ConfirmTOTP(ctx, name, strings.TrimSpace(f.Get("code")))
	case "passkey-remove", "passkey-rename":
		if u.o.Passkeys == nil {
			u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such action."})
			return
		}
		if d.Done == "passkey-remove" {
			err = u.o.Passkeys.RemovePasskey(ctx, name, f.Get("id"), r.RemoteAddr)
		} else {
			err = u.o.Passkeys.RenamePasskey(ctx, name, f.Get("id"), f.Get("label"), r.RemoteAddr)
		}
		if errors.Is(err, auth.ErrNoPasskey) {
			p.Message = "There is no such passkey."
			u.renderAccount(w, r, p, name, http.StatusNotFound, accountData{})
			return
		}
	case "recovery-codes":
		pr := authz.PrincipalFrom(ctx)
		if u.o.Now().Sub(pr.AuthTime) > FreshLogin {
			d.FreshNeeded = true
			p.Message = fmt.Sprintf("New recovery codes need a fresh sign-in: sign out, sign in again, and come back within %s.", inWords(FreshLogin))
			u.renderAccount(w, r, p, name, http.StatusForbidden, d)
			return
		}
		d.Codes, err = u.o.Users.RegenerateRecoveryCodes(ctx, name)
	default:
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such action."})
		return
	}
	if err != nil {
		st, msg := authMessage(w, err)
		p.Message = msg
		u.renderAccount(w, r, p, name, st, accountData{})
		return
	}
	u.renderAccount(w, r, p, name, http.StatusOK, d)
}

// doneParam is the ?done= of a page the passkey script returns to, when it
// is one the page knows.
func doneParam(r *http.Request) string {
	if v := r.URL.Query().Get("done"); v == "passkey-add" {
		return v
	}
	return ""
}

// sessionToken is the session cookie's token, or "".
func sessionToken(r *http.Request) string {
	if c, err := r.Cookie(mtls.SessionCookie); err == nil {
		return c.Value
	}
	return ""
}
