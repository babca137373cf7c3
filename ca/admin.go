package ca

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
)

// AdminDevicesPath is where [CA.AdminHandler] is mounted.
const AdminDevicesPath = "/.hearth/v1/admin/devices"

// AddDeviceRequest is the body of POST /.hearth/v1/admin/devices.
type AddDeviceRequest struct {
	Name string   `json:"name"`
	Caps []string `json:"caps"`
	// TTL is the token's validity, e.g. "15m"; empty means the default.
	TTL string `json:"ttl,omitempty"`
	// Lifetime is the certificates' lifetime, e.g. "720h"; empty means the
	// default.
	Lifetime string `json:"lifetime,omitempty"`
}

// AdminHandler serves the device administration API; the server mounts it
// behind the hearth:admin check:
//
//   - POST /.hearth/v1/admin/devices {name, caps, ttl, lifetime} → 201
//     {device, token, url, ca_url, expires_at, fingerprint}; 400 bad input,
//     409 an enrolled device of that name exists;
//   - GET /.hearth/v1/admin/devices → {"devices": [...]};
//   - POST /.hearth/v1/admin/devices/{name}/revoke → {"device": {...}}; 404
//     unknown device.
//
// Every change is recorded in the audit log first; 503 when it cannot be.
func (c *CA) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+AdminDevicesPath, c.handleAdd)
	mux.HandleFunc("GET "+AdminDevicesPath, c.handleList)
	mux.HandleFunc("POST "+AdminDevicesPath+"/{name}/revoke", c.handleRevoke)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such device endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func (c *CA) handleAdd(w http.ResponseWriter, r *http.Request) {
	var req AddDeviceRequest
	if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &req) {
		return
	}
	dur := func(field, s string) (time.Duration, bool) {
		if s == "" {
			return 0, true
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			httpx.Error(w, http.StatusBadRequest, "bad_request", field+" "+s+" is not a positive duration such as 15m")
			return 0, false
		}
		return d, true
	}
	ttl, ok := dur("ttl", req.TTL)
	if !ok {
		return
	}
	life, ok := dur("lifetime", req.Lifetime)
	if !ok {
		return
	}
	tok, err := c.AddDevice(withClient(r.Context(), r.RemoteAddr), req.Name, req.Caps, ttl, life)
	if err != nil {
		writeAdminError(w, err)
		return
	}
	httpx.JSON(w, http.StatusCreated, tok)
}

func (c *CA) handleList(w http.ResponseWriter, r *http.Request) {
	ds, err := c.ListDevices(r.Context())
	if err != nil {
		writeAdminError(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"devices": ds})
}

func (c *CA) handleRevoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	d, err := c.RevokeDevice(withClient(r.Context(), r.RemoteAddr), name)
	if err != nil {
		writeAdminError(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"device": d})
}

func writeAdminError(w http.ResponseWriter, err error) {
	msg := strings.TrimPrefix(err.Error(), "ca: ")
	switch {
	case errors.Is(err, ErrAuditUnavailable):
		httpx.Unavailable(w)
	case errors.Is(err, ErrBadRequest):
		httpx.Error(w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(msg, "bad request: "))
	case errors.Is(err, ErrDeviceExists):
		httpx.Error(w, http.StatusConflict, "exists", msg)
	case errors.Is(err, ErrUnknownDevice):
		httpx.Error(w, http.StatusNotFound, "not_found", "no such device; `hearth device list` shows the devices")
	default:
		httpx.Unavailable(w)
	}
}

// RevokeDevice revokes a device: its record is marked revoked (the
// gateway refuses its next request, also on an open connection), and every
// certificate it holds is revoked in smallstep's database too, so that
// `step ca renew` and /.hearth/v1/renew refuse it. The audit entry is
// written first. Revoking a revoked device is a no-op that succeeds.
func (c *CA) RevokeDevice(ctx context.Context, name string) (*Device, error) {
	if !ValidDeviceName(name) {
		return nil, ErrUnknownDevice
	}
	rec, idx, err := c.devices.load(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, ErrUnknownDevice
	}
	if rec.Revoked {
		d := publicDevice(rec, idx)
		return &d, nil
	}
	serials := make([]string, 0, len(idx.Certs))
	for _, cr := range idx.Certs {
		serials = append(serials, cr.Serial)
	}
	if err := c.audit.Record(ctx, audit.Event{
		Name: audit.EventCertRevoke, Outcome: audit.OutcomeSuccess,
		Principal: principalOf(ctx), Resource: "device:" + name, Client: clientOf(ctx),
		Reason: "device revoked",
		Meta:   map[string]string{"serials": strings.Join(serials, ",")},
	}); err != nil {
		return nil, ErrAuditUnavailable
	}
	// The record and every certificate of the device's index in one store
	// transaction: from its commit on, LookupDevice (on every replica,
	// within the feed's bound) and the store hook refuse the device. The
	// certificates to revoke in smallstep's table are the ones read in
	// that transaction, not the ones read before the audit entry: a
	// certificate stored in between is in the index by now.
	now := c.now().UTC()
	var out *deviceRecord
	var outIdx *certIndex
	err = c.devices.change(ctx, name, func(r *deviceRecord, idx *certIndex) (*deviceRecord, *certIndex, error) {
		if r == nil {
			return nil, nil, ErrUnknownDevice
		}
		r.Revoked, r.RevokedAt = true, now
		r.TokenID, r.TokenExpires = "", time.Time{}
		for i := range idx.Certs {
			idx.Certs[i].Revoked = true
		}
		out, outIdx = r, idx
		return r, idx, nil
	})
	if err != nil {
		c.undone(ctx, audit.EventCertRevoke, "device:"+name, "device revoked", err)
		return nil, err
	}
	// Then smallstep's revocation table (renewals check it). A failure
	// here still leaves the device refused by hearth, so it is logged, not
	// returned.
	for _, cr := range outIdx.Certs {
		if err := c.revokeInStep(cr.Serial, cr.NotAfter, "device revoked"); err != nil {
			c.log.Error().Err(err).Str("device", name).Str("serial", cr.Serial).Msg("ca: revoking in the CA database failed")
		}
	}
	d := publicDevice(out, outIdx)
	return &d, nil
}
