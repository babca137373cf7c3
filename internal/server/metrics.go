package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-home/hearth/internal/metrics"
)

// registerCollectors adds the scrape-time collectors: seconds left on
// every enrolled device's certificate and on the gateway's own, the
// store's figures, and each witness's lag behind the audit log.
func (s *Server) registerCollectors() error {
	devices := func() ([]metrics.DeviceCert, error) {
		ds, err := s.ca.ListDevices(context.Background())
		if err != nil {
			return nil, err
		}
		var out []metrics.DeviceCert
		for _, d := range ds {
			if d.Enrolled && !d.Revoked && d.CertExpires != nil {
				out = append(out, metrics.DeviceCert{Name: d.Name, NotAfter: *d.CertExpires})
			}
		}
		return out, nil
	}
	gateway := func() time.Time { return s.ca.ServerCertificate().Leaf.NotAfter }
	cs := []prometheus.Collector{metrics.CertCollector(devices, gateway, s.opts.Now)}
	if s.audit != nil { // witnesses cosign the file log
		cs = append(cs, metrics.WitnessCollector(s.audit.Witnesses))
	}
	if s.db != nil { // bbolt's figures; PostgreSQL's pool figures are storeCollectors'
		cs = append(cs, metrics.StoreCollector(s.db))
	}
	cs = append(cs, s.storeCollectors()...)
	return s.mets.Register(cs...)
}
