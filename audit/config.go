package audit

import "fmt"

// DefaultSegmentSize is the size past which a segment file is rotated when
// Config.SegmentSize is zero.
const DefaultSegmentSize = 64 << 20

// Config is the audit part of hearth.yaml. Its zero value is the default.
type Config struct {
	// SegmentSize rotates a segment file past this many bytes. Default 64 MiB.
	// A batch is never split across segments, so a segment may exceed it by
	// one batch.
	SegmentSize int64 `yaml:"segment_size,omitempty"`
	// Witnesses cosign the log's checkpoints (c2sp.org/tlog-witness): the
	// server pushes its latest checkpoint to each, at most once a second,
	// and keeps the cosignatures in <data dir>/audit/witnesses.
	Witnesses []Witness `yaml:"witnesses,omitempty"`
}

// Validate checks the configuration without opening anything.
func (c Config) Validate() error {
	if c.SegmentSize < 0 {
		return fmt.Errorf("audit: segment_size %d is negative", c.SegmentSize)
	}
	for _, w := range c.Witnesses {
		if err := w.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (c Config) segmentSize() int64 {
	if c.SegmentSize <= 0 {
		return DefaultSegmentSize
	}
	return c.SegmentSize
}
