// Package admin is the local admin channel: an HTTP API on a unix socket in
// the data dir (mode 0600, and only the server's own uid may connect), which
// the admin commands use to talk to a running `hearth serve`. Requests on it
// authenticate as trust level local.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// SocketName is the socket's file name inside the data dir.
const SocketName = "admin.sock"

// SocketPath returns the socket path for a data dir.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

// ErrNotRunning means no server answers on the data dir's socket.
var ErrNotRunning = errors.New("admin: hearth is not running")

// Listen creates the socket (0600), replacing a stale one left by a crash.
// It refuses to replace a socket a live server answers on.
func Listen(dir string) (net.Listener, error) {
	path := SocketPath(dir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin: another hearth is already serving %s", dir)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	return &peerCheckListener{UnixListener: l.(*net.UnixListener), uid: os.Getuid()}, nil
}

// peerCheckListener accepts only connections from the server's own uid
// (SO_PEERCRED), so that a socket made readable by mistake still refuses
// other users.
type peerCheckListener struct {
	*net.UnixListener
	uid int
}

func (l *peerCheckListener) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if peerUID(c) == l.uid {
			return c, nil
		}
		c.Close()
	}
}

func peerUID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	_ = raw.Control(func(fd uintptr) {
		cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

// Client talks to a running server over its socket.
type Client struct {
	dir  string
	http *http.Client
}

// NewClient returns a client for the server of data dir dir.
func NewClient(dir string) *Client {
	path := SocketPath(dir)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{dir: dir, http: &http.Client{Transport: tr}}
}

// Error is an error answer of the server: {"error": ..., "code": ...}.
type Error struct {
	Status  int
	Message string `json:"error"`
	Code    string `json:"code"`
}

func (e *Error) Error() string { return e.Message }

// Do sends a JSON request to path (e.g. "/.hearth/v1/admin/devices") and
// decodes a JSON answer into out (unless out is nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hearth"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: no server answers on %s; start it with `hearth serve --dir %s`", ErrNotRunning, SocketPath(c.dir), c.dir)
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("server answered %s", resp.Status)
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("admin: bad answer from server: %w", err)
		}
	}
	return nil
}
