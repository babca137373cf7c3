// Package httpx holds the small HTTP helpers every hearth handler shares:
// JSON errors in the shape DESIGN.md fixes ({"error", "code"}) and bounded
// JSON request bodies.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// MaxJSONBody bounds the JSON body of hearth's own API requests.
const MaxJSONBody = 64 << 10

// Error writes {"error": msg, "code": code} with status.
func Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{msg, code})
}

// TooMany writes a 429 with Retry-After (rounded up to whole seconds).
func TooMany(w http.ResponseWriter, retry time.Duration, msg string) {
	secs := int((retry + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	Error(w, http.StatusTooManyRequests, "throttled", msg)
}

// Unavailable writes the 503 that fail-closed paths answer with when the
// audit log or the store cannot be written.
func Unavailable(w http.ResponseWriter) {
	Error(w, http.StatusServiceUnavailable, "unavailable", "the audit log or store cannot be written; try again shortly")
}

// JSON writes v as JSON with status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// DecodeJSON reads at most limit bytes of JSON into v, refusing unknown
// fields and trailing data. On error it has already written the answer
// (413 for too large, 400 otherwise) and returns false.
func DecodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	if limit <= 0 {
		limit = MaxJSONBody
	}
	if r.ContentLength > limit {
		Error(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", limit))
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			Error(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", limit))
			return false
		}
		Error(w, http.StatusBadRequest, "bad_request", "request body is not the expected JSON: "+err.Error())
		return false
	}
	// dec.More reports false for a stray '}' or ']', so ask for the next
	// token instead: only the end of the body may follow.
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			Error(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", limit))
			return false
		}
		Error(w, http.StatusBadRequest, "bad_request", "request body has data after the JSON object")
		return false
	}
	return true
}

// DecodeStrict decodes b, which must hold exactly one JSON value, into v:
// unknown fields are refused, and so is anything after the value (also a
// stray '}' or ']', which json.Decoder.More does not report).
func DecodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
