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
	if _, err := ParseConsistencyProof([]byte(`{"old":1,"size":2,"proof":[]}`)); err != nil {
		t.Fatalf("ParseConsistencyProof(valid) = %v", err)
	}
	for _, b := range []string{`{"old":1,"size":2,"proof":[]}}`, `{"old":1,"size":2,"proof":[]}]`} {
		if _, err := ParseConsistencyProof([]byte(b)); err == nil {
			t.Errorf("ParseConsistencyProof(%q) = nil error", b)
		}
	}
}
