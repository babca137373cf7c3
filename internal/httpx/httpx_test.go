package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type body struct {
	Name string `json:"name"`
}

func decode(t testing.TB, s string, limit int64) (int, bool) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(s))
	w := httptest.NewRecorder()
	var v body
	ok := DecodeJSON(w, r, limit, &v)
	if !ok {
		var e struct{ Error, Code string }
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" || e.Code == "" {
			t.Errorf("DecodeJSON(%q) refusal body = %q, want {error, code}", s, w.Body.String())
		}
	}
	return w.Code, ok
}

// DecodeJSON accepts exactly one JSON object with known fields, and
// refuses anything after it, including a stray closing brace or bracket.
func TestDecodeJSON(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		limit  int64
		ok     bool
		status int
	}{
		{"object", `{"name":"a"}`, 0, true, 200},
		{"object and white space", "{\"name\":\"a\"}\n\t ", 0, true, 200},
		{"unknown field", `{"nam":"a"}`, 0, false, 400},
		{"trailing object", `{"name":"a"}{"name":"b"}`, 0, false, 400},
		{"trailing brace", `{"name":"a"}}`, 0, false, 400},
		{"trailing bracket", `{"name":"a"}]`, 0, false, 400},
		{"trailing garbage", `{"name":"a"} x`, 0, false, 400},
		{"empty", ``, 0, false, 400},
		{"too large", `{"name":"` + strings.Repeat("a", 100) + `"}`, 64, false, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, ok := decode(t, c.in, c.limit)
			if ok != c.ok || st != c.status {
				t.Errorf("DecodeJSON(%q) = %v, status %d; want %v, %d", c.in, ok, st, c.ok, c.status)
			}
		})
	}
}

// FuzzDecodeJSON: whatever the bytes, DecodeJSON either accepts one
// object that encoding/json also reads as exactly that object, or answers
// 400 or 413 with the JSON error shape.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"name":"a"}`, `{"name":"a"}}`, `{"name":"a"}]`, `{"name":1}`, `[]`, `null`, `{"name":"a"} {}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, ok := decode(t, s, 1<<10)
		if ok {
			var v body
			if err := json.Unmarshal([]byte(s), &v); err != nil {
				t.Errorf("DecodeJSON accepted %q, which json.Unmarshal refuses: %v", s, err)
			}
			return
		}
		if st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge {
			t.Errorf("DecodeJSON(%q) status %d, want 400 or 413", s, st)
		}
	})
}
