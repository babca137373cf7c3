package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// stubReply is what the stub model answers every turn with, so that a test
// can tell the model's words from anything else in OpenClaw's frames.
const stubReply = "hearth-stub-says-hello"

// stubModel is a small OpenAI-compatible model server for OpenClaw
// (provider api "openai-completions"): GET /v1/models and POST
// /v1/chat/completions, plain or streamed (SSE), answering stubReply. It
// needs no key and no network.
type stubModel struct {
	URL   string // http://127.0.0.1:PORT/v1
	calls atomic.Int64
	delay atomic.Int64 // nanoseconds to wait before answering
}

func startStubModel(t testing.TB) *stubModel {
	t.Helper()
	m := &stubModel{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"stub-model","object":"model","owned_by":"hearth-test"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		m.calls.Add(1)
		var req struct {
			Stream bool `json:"stream"`
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		_ = json.Unmarshal(b, &req)
		if d := time.Duration(m.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		now := time.Now().Unix()
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"chatcmpl-stub","object":"chat.completion","created":%d,"model":"stub-model","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`, now, stubReply)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, chunk := range []string{
			fmt.Sprintf(`{"id":"chatcmpl-stub","object":"chat.completion.chunk","created":%d,"model":"stub-model","choices":[{"index":0,"delta":{"role":"assistant","content":%q},"finish_reason":null}]}`, now, stubReply),
			fmt.Sprintf(`{"id":"chatcmpl-stub","object":"chat.completion.chunk","created":%d,"model":"stub-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`, now),
		} {
			fmt.Fprintf(w, "data: %s\n\n", chunk)
			fl.Flush()
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	m.URL = "http://" + ln.Addr().String() + "/v1"
	return m
}
