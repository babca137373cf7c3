// Package sampleagent is a small stand-in for the personal AI agent that
// hearth guards: an HTTP + websocket service on loopback. `hearth demo` runs
// it behind the gateway, and tests use it as a real upstream. It trusts the
// X-Hearth-* headers because only the gateway can reach it.
package sampleagent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Agent is the sample agent. The zero value is ready to use.
type Agent struct {
	mu       sync.Mutex
	settings map[string]string
	plugins  []string
	seen     []Seen
}

// Seen is a request as the agent received it, for tests.
type Seen struct {
	Method, Path, Principal, AuthMethod, Capabilities string
}

// Seen returns the requests received so far.
func (a *Agent) Seen() []Seen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Seen(nil), a.seen...)
}

func (a *Agent) record(r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, Seen{r.Method, r.URL.Path, r.Header.Get("X-Hearth-Principal"), r.Header.Get("X-Hearth-Method"), r.Header.Get("X-Hearth-Capabilities")})
	a.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Handler serves the agent's API:
//
//	GET  /api/status             who is asking and how
//	GET  /api/conversations[/id] a canned conversation list
//	GET|PUT /api/settings        settings (PUT takes a JSON object)
//	POST /api/plugins/{name}     "installs" a plugin
//	GET  /api/events             server-sent events, one a second, five in all
//	GET  /ws                     a websocket that echoes text messages
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{
			"agent":        "sample",
			"ok":           true,
			"principal":    r.Header.Get("X-Hearth-Principal"),
			"method":       r.Header.Get("X-Hearth-Method"),
			"capabilities": r.Header.Get("X-Hearth-Capabilities"),
			"proto":        r.Proto,
		})
	})
	mux.HandleFunc("GET /api/conversations", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, []map[string]string{{"id": "1", "title": "Shopping list"}, {"id": "2", "title": "Holiday plans"}})
	})
	mux.HandleFunc("GET /api/conversations/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"id": r.PathValue("id"), "text": "…"})
	})
	mux.HandleFunc("GET /api/settings", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		writeJSON(w, a.settings)
	})
	mux.HandleFunc("PUT /api/settings", func(w http.ResponseWriter, r *http.Request) {
		var s map[string]string
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&s); err != nil {
			http.Error(w, "bad settings", http.StatusBadRequest)
			return
		}
		a.mu.Lock()
		if a.settings == nil {
			a.settings = map[string]string{}
		}
		for k, v := range s {
			a.settings[k] = v
		}
		a.mu.Unlock()
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("POST /api/plugins/{name}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.plugins = append(a.plugins, r.PathValue("name"))
		a.mu.Unlock()
		writeJSON(w, map[string]string{"installed": r.PathValue("name")})
	})
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl, _ := w.(http.Flusher)
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "data: tick %d\n\n", i)
			if fl != nil {
				fl.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.record(r)
		mux.ServeHTTP(w, r)
	})
}
