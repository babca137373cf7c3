package ca

import "time"

// ExpiresSoon is how close to its end a device's newest certificate is
// flagged as expiring soon (or a sixth of its lifetime, if shorter).
const ExpiresSoon = 7 * 24 * time.Hour

// Device warnings, as `hearth device list` shows them.
const (
	WarnExpired     = "expired"      // the newest certificate has expired: the device is locked out
	WarnExpiresSoon = "expires soon" // less than ExpiresSoon (or a sixth of its lifetime) left
	WarnNotRenewing = "not renewing" // past its renewal point and no client renewed it
)

// warnings says what about a device's newest certificate needs the
// owner's attention at now. Renewing clients (hearth enroll --renew, step
// ca renew --daemon) renew at two thirds of the lifetime and retry with a
// backoff; a certificate still the newest a twelfth of its lifetime after
// that point has no client refreshing it.
func warnings(d Device, lifetime time.Duration, now time.Time) []string {
	if !d.Enrolled || d.Revoked || d.CertExpires == nil || lifetime <= 0 {
		return nil
	}
	end := *d.CertExpires
	if !now.Before(end) {
		return []string{WarnExpired}
	}
	var out []string
	renewAt := NextRenewal(end.Add(-lifetime), end)
	if now.After(renewAt.Add(lifetime / 12)) {
		out = append(out, WarnNotRenewing)
	}
	soon := min(ExpiresSoon, lifetime/6)
	if end.Sub(now) < soon {
		out = append(out, WarnExpiresSoon)
	}
	return out
}
