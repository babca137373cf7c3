package ca

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"strings"

	"software.sslmate.com/src/go-pkcs12"
)

// PKCS12Encoding chooses how a PKCS#12 file is protected.
type PKCS12Encoding int

const (
	// PKCS12Legacy is 3DES with a SHA-1 MAC (pkcs12.LegacyDES): Android's
	// certificate installer refuses AES/SHA-256 files on many versions with
	// a misleading "wrong password", and macOS and iOS refuse them in
	// several reports; OpenSSL 3 reads 3DES without its legacy provider.
	PKCS12Legacy PKCS12Encoding = iota
	// PKCS12Modern is AES-256-CBC with PBKDF2 and a SHA-256 MAC
	// (pkcs12.Modern, RFC 9579), for desktops that take it.
	PKCS12Modern
)

// PKCS12 encodes the credential as a PKCS#12 file (RFC 7292) protected by
// password: the key, the leaf, and the intermediate and root as CA
// certificates (so the importing system can build the chain).
func (pc *PhoneCredential) PKCS12(enc PKCS12Encoding, password string) ([]byte, error) {
	e := pkcs12.LegacyDES
	if enc == PKCS12Modern {
		e = pkcs12.Modern
	}
	cas := append(pc.Chain[1:len(pc.Chain):len(pc.Chain)], pc.Root)
	b, err := e.WithRand(rand.Reader).Encode(pc.Key, pc.Chain[0], cas, password)
	if err != nil {
		return nil, fmt.Errorf("ca: encoding PKCS#12: %w", err)
	}
	return b, nil
}

// MobileConfig is an Apple configuration profile (a property list,
// "application/x-apple-aspen-config") with one com.apple.security.pkcs12
// payload carrying the Legacy PKCS#12 file. The password is not in it:
// iOS asks for it while installing, so the file alone is useless. Payload
// keys follow Apple's "Configuration Profile Reference" (PayloadContent,
// PayloadType, PayloadIdentifier, PayloadUUID, PayloadVersion).
func (pc *PhoneCredential) MobileConfig(device, password string) ([]byte, error) {
	p12, err := pc.PKCS12(PKCS12Legacy, password)
	if err != nil {
		return nil, err
	}
	u1, err := uuid4()
	if err != nil {
		return nil, err
	}
	u2, err := uuid4()
	if err != nil {
		return nil, err
	}
	id := "home.hearth." + device
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString(`<plist version="1.0">` + "\n<dict>\n")
	str := func(k, v string) {
		b.WriteString("<key>" + k + "</key><string>")
		_ = xml.EscapeText(&b, []byte(v))
		b.WriteString("</string>\n")
	}
	b.WriteString("<key>PayloadContent</key>\n<array>\n<dict>\n")
	str("PayloadCertificateFileName", device+".p12")
	b.WriteString("<key>PayloadContent</key><data>\n")
	enc := base64.StdEncoding.EncodeToString(p12)
	for len(enc) > 0 {
		n := min(64, len(enc))
		b.WriteString(enc[:n] + "\n")
		enc = enc[n:]
	}
	b.WriteString("</data>\n")
	str("PayloadDescription", "hearth device certificate for "+device)
	str("PayloadDisplayName", device+" (hearth)")
	str("PayloadIdentifier", id+".identity")
	str("PayloadType", "com.apple.security.pkcs12")
	str("PayloadUUID", u1)
	b.WriteString("<key>PayloadVersion</key><integer>1</integer>\n")
	b.WriteString("</dict>\n</array>\n")
	str("PayloadDescription", "Lets Safari on this device reach the household's agent through hearth.")
	str("PayloadDisplayName", "hearth: "+device)
	str("PayloadIdentifier", id)
	b.WriteString("<key>PayloadRemovalDisallowed</key><false/>\n")
	str("PayloadType", "Configuration")
	str("PayloadUUID", u2)
	b.WriteString("<key>PayloadVersion</key><integer>1</integer>\n")
	b.WriteString("</dict>\n</plist>\n")
	return b.Bytes(), nil
}

// uuid4 is a random RFC 9562 version 4 UUID, upper case as Apple writes
// them.
func uuid4() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", fmt.Errorf("ca: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return strings.ToUpper(h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]), nil
}
