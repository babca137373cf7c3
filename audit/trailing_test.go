package audit

import (
	"testing"
	"time"
)

// A line with anything after its JSON object is not an entry, not even a
// stray closing brace or bracket (which json.Decoder.More does not see).
func TestParseEntryRefusesTrailingData(t *testing.T) {
	ev, err := marshalEvent(Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Name: "audit.start", Outcome: OutcomeSuccess})
	if err != nil {
		t.Fatal(err)
	}
	line := appendEntryLine(nil, 0, ev)
	if _, err := ParseEntry(line); err != nil {
		t.Fatalf("ParseEntry(valid) = %v", err)
	}
	for _, tail := range []string{"}", "]", " {}", "x"} {
		if _, err := ParseEntry(append(append([]byte(nil), line...), tail...)); err == nil {
			t.Errorf("ParseEntry(entry + %q) = nil error, want a refusal", tail)
		}
	}
	var v struct{ A int }
	for _, b := range []string{`{"A":1}}`, `{"A":1}]`} {
		if err := decodeStrict([]byte(b), &v); err == nil {
			t.Errorf("decodeStrict(%q) = nil error", b)
		}
	}
}
