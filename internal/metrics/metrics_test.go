package metrics

import "testing"

// Handshake errors as net/http logs them sort into the fixed reasons.
func TestHandshakeReason(t *testing.T) {
	for msg, want := range map[string]string{
		"http: TLS handshake error from 127.0.0.1:5: tls: client offered only unsupported versions: [303 302 301]":                     "protocol_version",
		"http: TLS handshake error from 127.0.0.1:5: tls: first record does not look like a TLS handshake":                             "not_tls",
		"http: TLS handshake error from 127.0.0.1:5: tls: failed to verify certificate: x509: certificate signed by unknown authority": "unknown_ca",
		"http: TLS handshake error from 127.0.0.1:5: mtls: client certificate lacks the clientAuth extended key usage":                 "client_cert_usage",
		"http: TLS handshake error from 127.0.0.1:5: mtls: client certificate is outside its validity period":                          "client_cert_expired",
		"http: TLS handshake error from 127.0.0.1:5: remote error: tls: bad certificate":                                               "bad_certificate",
		"http: TLS handshake error from 127.0.0.1:5: EOF":                                                                              "client_closed",
		"http: TLS handshake error from 127.0.0.1:5: read tcp 127.0.0.1:1->127.0.0.1:5: i/o timeout":                                   "timeout",
		"http: TLS handshake error from 127.0.0.1:5: tls: no cipher suite supported by both client and server":                         "negotiation",
		"http: TLS handshake error from 127.0.0.1:5: something new":                                                                    "other",
	} {
		if got := HandshakeReason(msg); got != want {
			t.Errorf("HandshakeReason(%q) = %q, want %q", msg, got, want)
		}
	}
}

func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		":9464": "127.0.0.1:9464", "": "127.0.0.1:9464", "127.0.0.1:0": "127.0.0.1:0",
		"0.0.0.0:9100": "0.0.0.0:9100", "[::1]:9": "[::1]:9", "localhost": "localhost:9464",
	} {
		if got := ListenAddr(in); got != want {
			t.Errorf("ListenAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
