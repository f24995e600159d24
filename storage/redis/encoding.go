package idemredis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	idem "github.com/idemkit/idem/core"
)

// The layout of an encoded record, version 1. Integers are big-endian or
// unsigned varints; the Lua scripts read the fixed head, so its offsets
// must not change within a version.
//
//	offset  size  field
//	0       1     version (1)
//	1       1     state: 1 in flight, 2 completed
//	2       1     head flags: bit 0 set when the fingerprint is nil
//	3       16    token
//	19      4     fingerprint length n (uint32)
//	23      n     fingerprint
//
// A completed record continues with its response:
//
//	1       flags: bit 0 not replayable, bit 1 nil body, bit 2 nil header
//	2       status (uint16)
//	varint  number of header fields; per field: varint name length,
//	        name, varint value length, value
//	varint  body length, body
const (
	version1       = 1
	stateInFlight  = 1
	stateCompleted = 2
	headSize       = 23

	headNilFingerprint = 1 << 0

	respNotReplayable = 1 << 0
	respNilBody       = 1 << 1
	respNilHeader     = 1 << 2
)

// ErrUnknownVersion is returned, wrapped, when a stored record uses an
// encoding version this package cannot read, such as one written by a
// newer release of idemredis sharing the same Redis.
var ErrUnknownVersion = errors.New("idemredis: record encoded in an unknown version")

// encodeInFlight encodes an in-flight record: the fixed head alone.
func encodeInFlight(token idem.Token, fp []byte) []byte {
	b := make([]byte, 0, headSize+len(fp))
	var flags byte
	if fp == nil {
		flags |= headNilFingerprint
	}
	b = append(b, version1, stateInFlight, flags)
	b = append(b, token[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(fp)))
	return append(b, fp...)
}

// encodeResponse encodes the response part of a completed record. The
// Complete script appends it to the head of the in-flight record, so the
// completed record keeps the lease's token and fingerprint.
func encodeResponse(rec *idem.Record) []byte {
	var flags byte
	header, body := rec.Header, rec.Body
	if rec.NotReplayable {
		flags |= respNotReplayable
		header, body = nil, nil
	}
	if body == nil {
		flags |= respNilBody
	}
	if header == nil {
		flags |= respNilHeader
	}
	size := 3 + 2*binary.MaxVarintLen64 + len(body)
	for _, h := range header {
		size += 2*binary.MaxVarintLen32 + len(h.Name) + len(h.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(rec.Status))
	b = binary.AppendUvarint(b, uint64(len(header)))
	for _, h := range header {
		b = appendBytes(b, h.Name)
		b = appendBytes(b, h.Value)
	}
	return appendBytes(b, string(body))
}

func appendBytes(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decode decodes a stored record. The returned record shares no memory
// with v.
func decode(v string) (*idem.Record, error) {
	if len(v) == 0 {
		return nil, errors.New("idemredis: corrupt record: empty value")
	}
	if v[0] != version1 {
		return nil, fmt.Errorf("%w %d: this release of idemredis reads version %d", ErrUnknownVersion, v[0], version1)
	}
	if len(v) < headSize {
		return nil, fmt.Errorf("idemredis: corrupt record: %d bytes, shorter than its head", len(v))
	}
	rec := &idem.Record{}
	switch v[1] {
	case stateInFlight:
		rec.State = idem.InFlight
	case stateCompleted:
		rec.State = idem.Completed
	default:
		return nil, fmt.Errorf("idemredis: corrupt record: unknown state %d", v[1])
	}
	copy(rec.Token[:], v[3:19])
	n := binary.BigEndian.Uint32([]byte(v[19:headSize]))
	if uint64(n) > uint64(len(v)-headSize) {
		return nil, errors.New("idemredis: corrupt record: fingerprint runs past the end")
	}
	if v[2]&headNilFingerprint == 0 {
		rec.Fingerprint = []byte(v[headSize : headSize+int(n)])
	}
	r := reader{s: v[headSize+int(n):]}
	if rec.State == idem.InFlight {
		if r.s != "" {
			return nil, errors.New("idemredis: corrupt record: in-flight record with trailing bytes")
		}
		return rec, nil
	}
	flags := r.byte()
	rec.NotReplayable = flags&respNotReplayable != 0
	rec.Status = int(r.byte())<<8 | int(r.byte())
	count := r.uvarint()
	if r.err == nil && count > uint64(len(r.s)) {
		r.fail("header count exceeds the record")
	}
	if flags&respNilHeader == 0 && r.err == nil {
		rec.Header = make([]idem.HeaderField, 0, count)
	}
	for i := uint64(0); i < count && r.err == nil; i++ {
		name := strings.Clone(r.bytes())
		value := strings.Clone(r.bytes())
		rec.Header = append(rec.Header, idem.HeaderField{Name: name, Value: value})
	}
	body := r.bytes()
	if flags&respNilBody == 0 && r.err == nil {
		rec.Body = []byte(body)
	}
	if r.err == nil && r.s != "" {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return nil, r.err
	}
	return rec, nil
}

// reader reads the response part of a record; the first failure sticks.
type reader struct {
	s   string
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = errors.New("idemredis: corrupt record: " + what)
	}
	r.s = ""
}

func (r *reader) byte() byte {
	if r.s == "" {
		r.fail("truncated")
		return 0
	}
	c := r.s[0]
	r.s = r.s[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x
		}
	}
	r.fail("bad varint")
	return 0
}

// bytes reads a length-prefixed string, sliced from the value.
func (r *reader) bytes() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.s)) {
		r.fail("field runs past the end")
		return ""
	}
	s := r.s[:n]
	r.s = r.s[n:]
	return s
}
