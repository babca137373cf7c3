package audit

import (
	"slices"
	"time"
	"unicode/utf8"
)

// appendEvent appends e's JSON object exactly as encoding/json.Marshal
// writes it (fields in order, empty ones omitted, meta keys sorted, HTML
// characters, U+2028/U+2029 and invalid UTF-8 escaped as it does), without
// reflection and with one allocation at most: every gateway request
// records an entry. e.Time must be valid for time.Time.MarshalJSON (years
// 0 to 9999; ValidateEvent asks for more). FuzzAppendEvent checks the
// equality with encoding/json, which ParseEntry's canonical form relies on.
func appendEvent(dst []byte, e *Event) []byte {
	dst = append(dst, `{"time":"`...)
	dst = e.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","event":`...)
	dst = appendJSONString(dst, e.Name)
	dst = append(dst, `,"outcome":`...)
	dst = appendJSONString(dst, e.Outcome)
	for _, f := range [...]struct{ key, v string }{
		{`,"principal":`, e.Principal},
		{`,"resource":`, e.Resource},
		{`,"reason":`, e.Reason},
		{`,"client":`, e.Client},
	} {
		if f.v != "" {
			dst = append(dst, f.key...)
			dst = appendJSONString(dst, f.v)
		}
	}
	if len(e.Meta) > 0 {
		var arr [maxMetaKeys]string
		keys := arr[:0]
		for k := range e.Meta {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, `,"meta":{`...)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, e.Meta[k])
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString is encoding/json's string encoding with HTML escaping
// (the json.Marshal default).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
