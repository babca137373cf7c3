package audit

// Config is the audit part of hearth.yaml.
type Config struct {
	// SegmentSize rotates a segment file past this many bytes. Default 64 MiB.
	SegmentSize int64 `yaml:"segment_size,omitempty"`
}
