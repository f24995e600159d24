package idem

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"

	"github.com/zeebo/xxh3"
)

// ParseKey parses one header field value as an idempotency key (B5). It
// accepts the RFC 8941 string form ("abc") and the bare form (abc). After
// unquoting the key must be 1 to maxLen characters of visible ASCII; a bare
// key must not contain a comma (a list), a double quote or white space.
func ParseKey(value string, maxLen int) (string, error) {
	if value == "" {
		return "", errors.New("the key is empty")
	}
	if value[0] == '"' {
		return parseQuoted(value, maxLen)
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if bareKeyByte[c] {
			continue
		}
		switch {
		case c < 0x20 || c == 0x7f:
			return "", errors.New("the key contains a control character")
		case c >= 0x80:
			return "", errors.New("the key contains a non-ASCII character")
		case c == ',':
			return "", errors.New("the header holds a list of keys")
		case c == ' ' || c == '\t':
			return "", errors.New("the key contains white space; quote it as an RFC 8941 string")
		case c == '"' || c == '\\':
			return "", errors.New("the key contains a quote or backslash outside an RFC 8941 string")
		}
	}
	if len(value) > maxLen {
		return "", errors.New("the key is longer than " + strconv.Itoa(maxLen) + " characters")
	}
	return value, nil
}

// bareKeyByte reports the bytes a bare key may hold: visible ASCII but the
// comma, double quote and backslash.
var bareKeyByte = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = c != ',' && c != '"' && c != '\\'
	}
	return t
}()

func parseQuoted(value string, maxLen int) (string, error) {
	// RFC 8941 sf-string: DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE
	var buf []byte
	i := 1
	for ; i < len(value); i++ {
		c := value[i]
		switch {
		case c == '\\':
			if i+1 >= len(value) || (value[i+1] != '"' && value[i+1] != '\\') {
				return "", errors.New("the quoted key has a bad escape")
			}
			if buf == nil {
				buf = append(make([]byte, 0, len(value)), value[1:i]...)
			}
			i++
			buf = append(buf, value[i])
		case c == '"':
			if i != len(value)-1 {
				return "", errors.New("the header holds more than one quoted string")
			}
			var key string
			if buf != nil {
				key = string(buf)
			} else {
				key = value[1:i]
			}
			switch {
			case key == "":
				return "", errors.New("the key is empty")
			case len(key) > maxLen:
				return "", errors.New("the key is longer than " + strconv.Itoa(maxLen) + " characters")
			}
			return key, nil
		case c < 0x20 || c == 0x7f:
			return "", errors.New("the key contains a control character")
		case c >= 0x80:
			return "", errors.New("the key contains a non-ASCII character")
		case c == ' ':
			return "", errors.New("the key contains white space")
		default:
			if buf != nil {
				buf = append(buf, c)
			}
		}
	}
	return "", errors.New("the quoted key is not closed")
}

// appendField appends a length-prefixed field, so that no two different
// sequences of fields encode alike ("ab"+"c" differs from "a"+"bc").
func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// DefaultEncodeKey derives a storage key: the hexadecimal SHA-256 of the
// length-prefixed scope and key, behind a version prefix (B8).
func DefaultEncodeKey(scope, key string) string {
	var text [storageKeyLen]byte
	encodeKey(&text, scope, key)
	return string(text[:])
}

// storageKeyLen is the length of a storage key DefaultEncodeKey derives.
const storageKeyLen = 2 * sha256.Size

// encodeKey writes DefaultEncodeKey's storage key into text.
func encodeKey(text *[storageKeyLen]byte, scope, key string) {
	var buf [512]byte
	b := append(buf[:0], "idem/v1\x00key"...)
	b = appendField(b, scope)
	b = appendField(b, key)
	sum := sha256.Sum256(b)
	hex.Encode(text[:], sum[:])
}

// FingerprintSize is the length of the fingerprint DefaultFingerprint
// returns: 128 bits.
const FingerprintSize = 16

// DefaultFingerprint is the default fingerprint (B9): the 128-bit XXH3
// hash (github.com/zeebo/xxh3) of the length-prefixed method, path, raw
// query and body, behind a version prefix.
//
// B9 asks the fingerprint to make an accidental match negligible, not to
// resist an adversary: every input is the requester's own, and a
// fingerprint is compared only with the one stored under the same storage
// key, which the cryptographic storage key (B8) already confines to one
// scope. A requester who makes two of its own requests collide gains
// nothing it could not get by sending the same request twice. For two
// different requests under one key, 128 bits of a hash that passes the
// SMHasher quality tests leave a chance of 2^-128 of a false match; the
// fingerprint of a 1 KiB body costs a tenth of its SHA-256 (BENCHMARKS.md).
//
// Before it, the default was SHA256Fingerprint. An engine with the default
// fingerprint still recognises such a record's 32-byte fingerprint: when
// a stored fingerprint of sha256.Size bytes differs from the request's,
// the engine compares it with the request's SHA256Fingerprint before it
// answers 422, so that a retry of a request recorded before an upgrade is
// replayed, not refused (see Config.Fingerprint).
func DefaultFingerprint(r *Request, body []byte) []byte {
	sum := make([]byte, FingerprintSize)
	fingerprint((*[FingerprintSize]byte)(sum), r, body)
	return sum
}

// fingerprint writes DefaultFingerprint's hash of r and body into sum:
// the XXH3-128 of the length-prefixed fields and the XXH3-128 of the body,
// so that the body is hashed in place.
func fingerprint(sum *[FingerprintSize]byte, r *Request, body []byte) {
	var buf [256]byte
	b := fingerprintFields(buf[:0], "idem/v2\x00fp", r, len(body))
	bh := xxh3.Hash128(body).Bytes()
	*sum = xxh3.Hash128(append(b, bh[:]...)).Bytes()
}

// fingerprintFields appends the version prefix and the length-prefixed
// method, path, raw query and body length.
func fingerprintFields(b []byte, prefix string, r *Request, bodyLen int) []byte {
	b = append(b, prefix...)
	b = appendField(b, r.Method)
	b = appendField(b, r.Path)
	b = appendField(b, r.RawQuery)
	return binary.BigEndian.AppendUint64(b, uint64(bodyLen))
}

// SHA256Fingerprint is the SHA-256 of the length-prefixed method, path,
// raw query and body (B9): the default fingerprint of the versions before
// DefaultFingerprint moved to XXH3-128. Set Config.Fingerprint to it to
// keep fingerprints byte for byte as those versions computed them, for
// instance during a rolling upgrade in two steps (first every instance
// on this version with SHA256Fingerprint, then the default): no instance
// then ever meets a fingerprint it cannot compare.
func SHA256Fingerprint(r *Request, body []byte) []byte {
	sum := make([]byte, sha256.Size)
	sha256Fingerprint((*[sha256.Size]byte)(sum), r, body)
	return sum
}

// sha256Fingerprint writes SHA256Fingerprint's hash of r and body into sum.
func sha256Fingerprint(sum *[sha256.Size]byte, r *Request, body []byte) {
	var buf [256]byte
	b := fingerprintFields(buf[:0], "idem/v1\x00fp", r, len(body))
	h := sha256.New()
	h.Write(b)
	h.Write(body)
	h.Sum(sum[:0])
}

// NoFingerprint turns the mismatch check off (B9): any request with a known
// key counts as the same operation.
func NoFingerprint(*Request, []byte) []byte { return nil }
