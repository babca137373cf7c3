package audit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzAppendEvent checks that appendEvent writes exactly what
// encoding/json does: entries are canonical only if both agree.
func FuzzAppendEvent(f *testing.F) {
	f.Add("authz.decision", "allow", "device:kitchen-pi", "/api/status", "device:kitchen-pi has status via device from lan", "127.0.0.1:5555", "method", "GET", "zone", "lan", int64(1764072000123456789), false)
	f.Add("a.b", "deny", "<script>&", "\u2028\u2029", "\x00\x01\b\f\n\r\t\x1f\x7f\"\\", "", "", "", "k", "", int64(0), true)
	f.Add("x.y", "", "\xff\xfe", "é漢字🙂", "a\xc3", "\xed\xa0\x80", "b", "\u2028", "a", "<>&", int64(-1), false)
	f.Fuzz(func(t *testing.T, name, outcome, principal, resource, reason, client, k1, v1, k2, v2 string, nanos int64, zoned bool) {
		e := Event{
			Time: time.Unix(0, nanos).UTC(), Name: name, Outcome: outcome, Principal: principal,
			Resource: resource, Reason: reason, Client: client,
		}
		if zoned {
			e.Time = e.Time.In(time.FixedZone("x", 3600+1800))
		}
		if k1 != "" || k2 != "" {
			e.Meta = map[string]string{k1: v1, k2: v2}
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Skipf("json.Marshal refuses it: %v", err)
		}
		if got := appendEvent(nil, &e); !bytes.Equal(got, want) {
			t.Fatalf("appendEvent =\n%s\njson.Marshal =\n%s", got, want)
		}
	})
}

func TestMarshalEventAllocs(t *testing.T) {
	e := Event{
		Time: time.Date(2026, 11, 25, 12, 0, 0, 123, time.UTC), Name: EventAuthzDecision, Outcome: OutcomeAllow,
		Principal: "device:kitchen-pi", Resource: "/api/status", Reason: "device:kitchen-pi has status via device from lan",
		Client: "127.0.0.1:5555", Meta: map[string]string{"method": "GET", "capability": "status", "zone": "lan", "via": "device"},
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := marshalEvent(e); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("marshalEvent: %v allocations, want 1", n)
	}
}

func BenchmarkMarshalEvent(b *testing.B) {
	e := Event{
		Time: time.Date(2026, 11, 25, 12, 0, 0, 123, time.UTC), Name: EventAuthzDecision, Outcome: OutcomeAllow,
		Principal: "device:kitchen-pi", Resource: "/api/status", Reason: "device:kitchen-pi has status via device from lan",
		Client: "127.0.0.1:5555", Meta: map[string]string{"method": "GET", "capability": "status", "zone": "lan", "via": "device"},
	}
	b.Run("appendEvent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			marshalEvent(e)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(e)
		}
	})
}
