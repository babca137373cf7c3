package auth

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckPassword(t *testing.T) {
	cases := []struct {
		name string
		pw   string
		mfa  bool
		rule string // "" means accepted
	}{
		{"passphrase", "correct horse battery staple", false, ""},
		{"exactly 15", "tangerine-vocal", false, ""},
		{"14 characters", "tangerine-voca", false, RuleTooShort},
		{"8 with a second factor", "gr8 kite", true, ""},
		{"7 with a second factor", "gr8 kit", true, RuleTooShort},
		{"counts characters, not bytes", "élan vital über", false, ""},
		{"14 characters in 16 bytes", "élan vital übe", false, RuleTooShort},
		{"no composition rules: all lowercase", "lowercase only words here", false, ""},
		{"1024 bytes", strings.Repeat("a quiet river ", 74)[:1024], false, ""},
		{"1025 bytes", strings.Repeat("b", 1025), false, RuleTooLong},
		{"invalid UTF-8", "abcdefghijklmnop\xff", false, RuleEncoding},
		{"common", "password1", true, RuleBlocklisted},
		{"common, any case", "PassWord1", true, RuleBlocklisted},
		{"common with digits added", "iloveyou12345678", false, RuleBlocklisted},
		{"keyboard walk", "qwertyuiopasdfgh", false, RuleBlocklisted},
		{"digit run", "123456789012345", false, RuleBlocklisted},
		{"repeated short unit", "abcabcabcabcabc", false, RuleBlocklisted},
		{"one character", "aaaaaaaaaaaaaaaaaaaa", false, RuleBlocklisted},
		{"common word repeated", "monkeymonkeymonkey", false, RuleBlocklisted},
		{"user name repeated", "alicealicealice1", false, RuleContextWords},
		{"service name", "hearthhearth2026", false, RuleContextWords},
		{"user name inside a phrase is fine", "alice likes long walks", false, ""},
	}
	for _, c := range cases {
		err := CheckPassword(c.pw, "alice", c.mfa)
		var pe *PolicyError
		switch {
		case c.rule == "" && err != nil:
			t.Errorf("%s: CheckPassword = %v, want accepted", c.name, err)
		case c.rule != "" && (!errors.As(err, &pe) || pe.Rule != c.rule):
			t.Errorf("%s: CheckPassword = %v, want rule %s", c.name, err, c.rule)
		case c.rule != "" && !errors.Is(err, ErrPasswordPolicy):
			t.Errorf("%s: %v does not match ErrPasswordPolicy", c.name, err)
		}
	}
}

func TestNormalizationMatchesEquivalentForms(t *testing.T) {
	// "é" precomposed and as e + combining acute are one password (NFKC).
	a, _ := normalizePassword("caf\u00e9 au lait please")
	b, _ := normalizePassword("cafe\u0301 au lait please")
	if a != b {
		t.Errorf("normalised forms differ: %q vs %q", a, b)
	}
}

func TestBlocklistLoaded(t *testing.T) {
	if n := len(blocklist); n < 3000 {
		t.Fatalf("blocklist has %d entries, want the shipped list (> 3000)", n)
	}
	for _, w := range []string{"password", "123456", "trustno1", "qwertyuiop"} {
		if _, ok := blocklist[w]; !ok {
			t.Errorf("%q missing from the blocklist", w)
		}
	}
}

func TestPHCRoundTrip(t *testing.T) {
	h := newHasher(tinyArgon2, 1, 1, nil)
	h.rand = fixedReader{}
	enc, err := h.hash("a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	want := "$argon2id$v=19$m=64,t=1,p=1$"
	if !strings.HasPrefix(enc, want) {
		t.Fatalf("hash %s, want prefix %s", enc, want)
	}
	p, err := parsePHC(enc)
	if err != nil || p.String() != enc {
		t.Fatalf("parsePHC(%s) = %v, %v", enc, p, err)
	}
	if ok, stale := h.verify("a long enough password", enc); !ok || stale {
		t.Errorf("verify = %v, %v; want true, false", ok, stale)
	}
	if ok, _ := h.verify("a long enough passworD", enc); ok {
		t.Error("verify accepted a wrong password")
	}
	bad := []string{
		"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$t=1,m=64,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=064,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=8,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
		"$argon2id$v=19$m=99999999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
	}
	for _, s := range bad {
		if _, err := parsePHC(s); err == nil {
			t.Errorf("parsePHC(%q) accepted a malformed hash", s)
		}
	}
}

type fixedReader struct{}

func (fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i)
	}
	return len(p), nil
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is the default", Config{}, true},
		{"weak argon2", Config{Argon2: Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}}, false},
		{"OWASP floor", Config{Argon2: Argon2Params{Time: 2, MemoryKiB: 19456, Threads: 1}}, true},
		{"bad duration", Config{TokenLifetime: "soon"}, false},
		{"negative duration", Config{TokenIdle: "-5m"}, false},
		{"negative burst", Config{ClientBurst: -1}, false},
	}
	for _, c := range cases {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestRecoveryCodeNormalisation(t *testing.T) {
	cases := map[string]string{
		"ABCD-EFGH-JKMN-PQRS":   "ABCDEFGHJKMNPQRS",
		"abcd efgh jkmn pqrs":   "ABCDEFGHJKMNPQRS",
		"oOiI-lLab-cdef-ghjk":   "0011" + "11AB" + "CDEF" + "GHJK",
		"ABCD-EFGH-JKMN-PQR":    "",
		"ABCD-EFGH-JKMN-PQRU":   "",
		strings.Repeat("A", 99): "",
	}
	for in, want := range cases {
		if got := normalizeRecoveryCode(in); got != want {
			t.Errorf("normalizeRecoveryCode(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParsePHC(f *testing.F) {
	f.Add("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
	f.Add("$argon2id$v=19$m=64,t=1,p=1$AAECAwQFBgcICQoLDA0ODw$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$$")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePHC(s)
		if err != nil {
			return
		}
		// Strict parsing: what parses is canonical and round-trips.
		if p.String() != s {
			t.Errorf("parsePHC(%q) accepted a non-canonical form (%q)", s, p.String())
		}
	})
}

func FuzzCheckPassword(f *testing.F) {
	for _, s := range []string{"correct horse battery staple", "password1", "ééééééééééééééé", "\xff\xfe", "alicealicealice"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, pw string, mfa bool) {
		err := CheckPassword(pw, "alice", mfa)
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("CheckPassword error %v is not a *PolicyError", err)
			}
			return
		}
		n, _ := normalizePassword(pw)
		if len(n) > MaxPasswordBytes || !utf8.ValidString(pw) || utf8.RuneCountInString(n) < MinPasswordLenMFA {
			t.Errorf("CheckPassword accepted %q", pw)
		}
	})
}

func FuzzRecoveryCode(f *testing.F) {
	for _, s := range []string{"ABCD-EFGH-JKMN-PQRS", "abcd efgh jkmn pqrs", "0000-0000-0000-0000", "ü-", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := normalizeRecoveryCode(s)
		if n == "" {
			return
		}
		if len(n) != 16 || normalizeRecoveryCode(n) != n {
			t.Errorf("normalizeRecoveryCode(%q) = %q: not a fixed point of 16 characters", s, n)
		}
	})
}
