package audit

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateEvent(t *testing.T) {
	ok := Event{Name: EventAuthLogin, Outcome: OutcomeSuccess}
	with := func(f func(*Event)) Event { e := ok; f(&e); return e }
	id := secretID(make([]byte, 32), []byte("tok"))
	tests := []struct {
		name string
		e    Event
		ok   bool
	}{
		{"minimal", ok, true},
		{"every known outcome", with(func(e *Event) { e.Outcome = OutcomeDeny }), true},
		{"secret id under token_id", with(func(e *Event) { e.Meta = map[string]string{"token_id": id} }), true},
		{"plain meta", with(func(e *Event) { e.Meta = map[string]string{"method": "GET", "cert_serial": "1234"} }), true},
		{"no dot", with(func(e *Event) { e.Name = "login" }), false},
		{"two dots", with(func(e *Event) { e.Name = "auth.login.ok" }), false},
		{"upper case", with(func(e *Event) { e.Name = "Auth.login" }), false},
		{"empty action", with(func(e *Event) { e.Name = "auth." }), false},
		{"unknown outcome", with(func(e *Event) { e.Outcome = "maybe" }), false},
		{"empty outcome", with(func(e *Event) { e.Outcome = "" }), false},
		{"password meta", with(func(e *Event) { e.Meta = map[string]string{"password": "hunter2"} }), false},
		{"token meta", with(func(e *Event) { e.Meta = map[string]string{"token": "abc"} }), false},
		{"refresh_token meta", with(func(e *Event) { e.Meta = map[string]string{"refresh_token": "abc"} }), false},
		{"recovery_code meta", with(func(e *Event) { e.Meta = map[string]string{"recovery_code": "1234-5678"} }), false},
		{"totp_secret meta", with(func(e *Event) { e.Meta = map[string]string{"totp_secret": "JBSWY3DP"} }), false},
		{"private_key meta", with(func(e *Event) { e.Meta = map[string]string{"private_key": "x"} }), false},
		{"session_token not a secret id", with(func(e *Event) { e.Meta = map[string]string{"session_token": "abc"} }), false},
		{"reset_code", with(func(e *Event) { e.Meta = map[string]string{"reset_code": "1234"} }), false},
		{"api_key", with(func(e *Event) { e.Meta = map[string]string{"api_key": "x"} }), false},
		{"describing a token", with(func(e *Event) {
			e.Meta = map[string]string{"token_id": "jti-1", "token_expires": "2026-11-25T12:00:00Z", "codes_left": "9"}
		}), true},
		{"boolean about a password", with(func(e *Event) { e.Meta = map[string]string{"password": "true"} }), true},
		{"camel case meta key", with(func(e *Event) { e.Meta = map[string]string{"apiKey": "x"} }), false},
		{"long reason", with(func(e *Event) { e.Reason = strings.Repeat("x", maxReasonLen+1) }), false},
		{"long principal", with(func(e *Event) { e.Principal = strings.Repeat("x", maxFieldLen+1) }), false},
		{"year 1", with(func(e *Event) { e.Time = time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC) }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateEvent(tt.e)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateEvent(%+v) = %v, want ok %v", tt.e, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("error %v does not wrap ErrInvalidEvent", err)
			}
		})
	}
}

const goodEntry = `{"index":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure","principal":"user:alice","reason":"bad password","client":"10.0.0.2:4431","meta":{"method":"password","zone":"lan"}}`

func TestParseEntry(t *testing.T) {
	e, err := ParseEntry([]byte(goodEntry))
	if err != nil {
		t.Fatalf("ParseEntry(good) = %v", err)
	}
	if e.Index != 7 || e.Name != EventAuthLogin || e.Meta["zone"] != "lan" || !e.Time.Equal(time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC)) {
		t.Errorf("ParseEntry(good) = %+v", e)
	}
	bad := []struct{ name, line string }{
		{"empty", ``},
		{"not json", `index 7`},
		{"fields out of order", `{"time":"2026-11-25T12:00:01Z","index":7,"event":"auth.login","outcome":"failure"}`},
		{"unknown field", `{"index":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure","x":1}`},
		{"duplicate field", `{"index":7,"index":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure"}`},
		{"upper case key", `{"INDEX":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure"}`},
		{"space", `{"index": 7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure"}`},
		{"not utc", `{"index":7,"time":"2026-11-25T13:00:01+01:00","event":"auth.login","outcome":"failure"}`},
		{"+00:00", `{"index":7,"time":"2026-11-25T12:00:01+00:00","event":"auth.login","outcome":"failure"}`},
		{"no time", `{"index":7,"event":"auth.login","outcome":"failure"}`},
		{"negative index", `{"index":-1,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure"}`},
		{"leading zero index", `{"index":07,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure"}`},
		{"unsorted meta", `{"index":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure","meta":{"zone":"lan","method":"password"}}`},
		{"secret meta", `{"index":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure","meta":{"password":"x"}}`},
		{"bad outcome", `{"index":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"meh"}`},
		{"trailing data", goodEntry + ` `},
		{"two objects", goodEntry + goodEntry},
		{"newline", strings.Replace(goodEntry, `bad password`, "bad\npassword", 1)},
		{"unescaped html", strings.Replace(goodEntry, `bad password`, `<b>`, 1)},
		{"empty meta", `{"index":7,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"failure","meta":{}}`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if e, err := ParseEntry([]byte(tt.line)); err == nil {
				t.Errorf("ParseEntry(%q) = %+v, want an error", tt.line, e)
			}
		})
	}
}

// FuzzParseEntry: whatever ParseEntry accepts is valid and encodes back to
// exactly the same bytes.
func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(goodEntry))
	f.Add([]byte(`{"index":0,"time":"2026-11-25T12:00:01.5Z","event":"audit.start","outcome":"success"}`))
	f.Add([]byte(`{"index":1,"time":"2026-11-25T12:00:01Z","event":"token.issue","outcome":"success","meta":{"token_id":"hmac:0123456789abcdef0123456789abcdef"}}`))
	f.Add([]byte(`{"index":2,"time":"2026-11-25T12:00:01Z","event":"a.b","outcome":"deny","reason":"\u003cscript\u003e \ufffd"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := ParseEntry(line)
		if err != nil {
			return
		}
		if err := ValidateEvent(e.Event); err != nil {
			t.Fatalf("ParseEntry accepted an invalid event: %v", err)
		}
		ev, err := marshalEvent(e.Event)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEntryLine(nil, e.Index, ev); string(got) != string(line) {
			t.Fatalf("round trip: %q -> %q", line, got)
		}
		if !indexPrefix(line, e.Index) {
			t.Fatalf("accepted line %q does not start with its index", line)
		}
	})
}
